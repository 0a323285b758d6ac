from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Our own header check (annotation.imaging) enforces MASKLOOP_MAX_IMAGE_PIXELS before any
        # decode; Pillow's built-in guard (error at 2x its limit) must not undercut a higher one.
        Image.MAX_IMAGE_PIXELS = max(
            Image.MAX_IMAGE_PIXELS or 0, settings.MASKLOOP_MAX_IMAGE_PIXELS
        )
