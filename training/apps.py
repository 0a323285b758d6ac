from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from annotation.signals import images_removed, project_deleting
        from training.receivers import project_rows_delete, validation_split_drop

        images_removed.connect(validation_split_drop, dispatch_uid="training-validation-split")
        project_deleting.connect(project_rows_delete, dispatch_uid="training-project-rows")
