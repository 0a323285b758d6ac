from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from annotation.signals import images_removed
        from training.receivers import validation_split_drop

        images_removed.connect(validation_split_drop, dispatch_uid="training-validation-split")
