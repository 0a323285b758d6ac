"""The sign-in form, with the failed sign-in limit of ``annotation.services.login_limits``."""

from typing import Any

from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from annotation.services.login_limits import TooManyFailedLogins, login_allowed_check


class LimitedAuthenticationForm(AuthenticationForm):
    """Django's form, refusing before the password is checked while the limit holds."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username and self.request is not None:
            try:
                login_allowed_check(username=username, request=self.request)
            except TooManyFailedLogins as exc:
                raise ValidationError(exc.message, code=TooManyFailedLogins.code) from exc
        return super().clean()
