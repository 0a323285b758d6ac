"""WSGI entry point (gunicorn config.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

from engine.sam.malloc import tune_malloc

tune_malloc()  # torch on the CPU: keep freed tensor blocks for reuse (engine/sam/malloc.py)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
