"""Project configuration: settings, URLs, the Celery app, WSGI/ASGI entry points."""

from config.celery import app as celery_app
from engine.sam.malloc import tune_malloc

# Every process of the platform imports this package (the settings module, the WSGI
# application and the Celery app live here): the web server, the workers, manage.py.
tune_malloc()  # torch on the CPU: keep freed tensor blocks for reuse (engine/sam/malloc.py)

__all__ = ["celery_app"]
