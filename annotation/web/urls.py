"""Routes of the web UI (mounted at the site root)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from annotation.web import jobs, projects

urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", projects.project_list, name="project-list"),
    path("projects/new/", projects.project_create_view, name="project-create"),
    path("projects/<int:project_id>/", projects.project_detail, name="project-detail"),
    path("projects/<int:project_id>/upload/", projects.project_upload, name="project-upload"),
    path("projects/<int:project_id>/export/", projects.project_export, name="project-export"),
    path("projects/<int:project_id>/jobs/", jobs.project_jobs_table, name="project-jobs"),
    path("jobs/<int:job_id>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel/", jobs.job_cancel_view, name="job-cancel"),
]
