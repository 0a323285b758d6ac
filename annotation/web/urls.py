"""Routes of the web UI (mounted at the site root)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from annotation.web import (
    automatic,
    categories,
    coco_import,
    deletion,
    image_selection,
    jobs,
    members,
    projects,
    review,
    stats,
    tool,
)
from annotation.web.login import LimitedAuthenticationForm

urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            authentication_form=LimitedAuthenticationForm, redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", projects.project_list, name="project-list"),
    path("projects/new/", projects.project_create_view, name="project-create"),
    path("projects/<int:project_id>/", projects.project_detail, name="project-detail"),
    path("projects/<int:project_id>/upload/", projects.project_upload, name="project-upload"),
    path("projects/<int:project_id>/export/", projects.project_export, name="project-export"),
    path(
        "projects/<int:project_id>/import-coco/",
        coco_import.project_import_coco,
        name="project-import-coco",
    ),
    path("projects/<int:project_id>/jobs/", jobs.project_jobs_table, name="project-jobs"),
    path("projects/<int:project_id>/annotate/", tool.annotate, name="project-annotate"),
    path("projects/<int:project_id>/review/", review.review_queue_page, name="project-review"),
    path("projects/<int:project_id>/sent-back/", review.sent_back_page, name="project-sent-back"),
    path("projects/<int:project_id>/stats/", stats.project_stats_page, name="project-stats"),
    path(
        "projects/<int:project_id>/stats/annotators.csv",
        stats.project_stats_csv,
        name="project-stats-csv",
    ),
    path(
        "projects/<int:project_id>/stats/annotators/<int:user_id>/",
        stats.annotator_stats_page,
        name="annotator-stats",
    ),
    path("jobs/<int:job_id>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel/", jobs.job_cancel_view, name="job-cancel"),
    path(
        "jobs/<int:job_id>/undo-import/",
        coco_import.job_undo_import_view,
        name="job-undo-import",
    ),
    path(
        "projects/<int:project_id>/images/remove/",
        deletion.project_images_remove,
        name="project-images-remove",
    ),
    path(
        "projects/<int:project_id>/images/reopen/",
        image_selection.project_images_reopen,
        name="project-images-reopen",
    ),
    path(
        "projects/<int:project_id>/categories/add/",
        categories.project_category_add,
        name="project-category-add",
    ),
    path(
        "projects/<int:project_id>/categories/update/",
        categories.project_category_update,
        name="project-category-update",
    ),
    path(
        "projects/<int:project_id>/categories/delete/",
        categories.project_category_delete,
        name="project-category-delete",
    ),
    path(
        "projects/<int:project_id>/members/",
        members.project_member_set,
        name="project-member-set",
    ),
    path(
        "projects/<int:project_id>/members/remove/",
        members.project_member_remove,
        name="project-member-remove",
    ),
    path(
        "projects/<int:project_id>/delete/",
        deletion.project_delete_view,
        name="project-delete",
    ),
    # Stages and the semi-automatic stage (issue 6).
    path("projects/<int:project_id>/stage/", projects.project_stage_view, name="project-stage"),
    path(
        "projects/<int:project_id>/prefill/", projects.project_prefill_view, name="project-prefill"
    ),
    path(
        "projects/<int:project_id>/automatic/",
        automatic.automatic_panel,
        name="project-automatic",
    ),
    path(
        "projects/<int:project_id>/automatic/start/",
        automatic.automatic_start_view,
        name="project-automatic-start",
    ),
    path(
        "projects/<int:project_id>/automatic/<int:job_id>/cancel/",
        automatic.automatic_cancel_view,
        name="project-automatic-cancel",
    ),
    path(
        "projects/<int:project_id>/automatic/<int:job_id>/resume/",
        automatic.automatic_resume_view,
        name="project-automatic-resume",
    ),
]
