"""The engine's REST API: jobs, model versions, embeddings and decoding (``urlpatterns``).

Modules by subdomain: ``jobs``, ``model_versions``, ``embeddings`` (bulk precompute, requests,
an image's embedding for the browser decoder), ``decode`` (prompt -> masks on the server).
"""

from engine.api.jobs import JobOutput, job_files_for_display
from engine.api.urls import urlpatterns

__all__ = ["JobOutput", "job_files_for_display", "urlpatterns"]
