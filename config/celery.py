"""The Celery application. Configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("maskloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Housekeeping tasks (default queue) live in <app>/housekeeping.py, e.g. the embedding GC.
app.autodiscover_tasks(related_name="housekeeping")
