from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_in, user_login_failed
        from PIL import Image

        from annotation.services.login_limits import on_logged_in, on_login_failed

        user_login_failed.connect(on_login_failed, dispatch_uid="maskloop-login-failed")
        user_logged_in.connect(on_logged_in, dispatch_uid="maskloop-logged-in")

        # Our own header check (annotation.imaging) enforces MASKLOOP_MAX_IMAGE_PIXELS before any
        # decode; Pillow's built-in guard (error at 2x its limit) must not undercut a higher one.
        Image.MAX_IMAGE_PIXELS = max(
            Image.MAX_IMAGE_PIXELS or 0, settings.MASKLOOP_MAX_IMAGE_PIXELS
        )
