"""Failed sign-ins, counted per (username, client address), against password guessing.

After ``MASKLOOP_LOGIN_MAX_FAILURES`` failures within ``MASKLOOP_LOGIN_WINDOW_SECONDS``, further
attempts for that username from that address are refused, with the right password too, until
the window ends: the web login form says so, ``POST /api/auth/token/`` answers 429
``too_many_failed_logins``. Only failures count (Django's ``user_login_failed`` signal, sent by
``authenticate`` for both), so a user who signs in is never slowed; a sign-in on the web clears
the count. Other usernames and other addresses are not affected, so a guesser cannot lock a
user out from elsewhere.

The counts live in ``caches["default"]`` (Redis: shared by every process; the file cache of
``make run``: by the processes of one machine). Behind a reverse proxy the address is the
proxy's (``REMOTE_ADDR``), so the limit then applies to the username alone.
"""

import hashlib
from typing import Any

from django.conf import settings
from django.core.cache import caches

from annotation.errors import DomainError

_PREFIX = "login-failures:"


class TooManyFailedLogins(DomainError):
    status_code = 429
    code = "too_many_failed_logins"


def _key(username: str, request: Any) -> str:
    address = str(getattr(request, "META", {}).get("REMOTE_ADDR", ""))
    digest = hashlib.sha256(f"{username.casefold()}\0{address}".encode()).hexdigest()
    return f"{_PREFIX}{digest}"


def login_allowed_check(*, username: str, request: Any) -> None:
    """Raise TooManyFailedLogins while ``username`` has used up its failures from this address."""
    limit = int(settings.MASKLOOP_LOGIN_MAX_FAILURES)
    if int(caches["default"].get(_key(username, request), 0)) >= limit:
        minutes = max(1, round(int(settings.MASKLOOP_LOGIN_WINDOW_SECONDS) / 60))
        raise TooManyFailedLogins(
            f"too many failed sign-ins for this username from your address: try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}"
        )


def login_failure_record(*, username: str, request: Any) -> None:
    """Count one failed sign-in; the first failure starts the window."""
    cache = caches["default"]
    key = _key(username, request)
    window = int(settings.MASKLOOP_LOGIN_WINDOW_SECONDS)
    if cache.add(key, 1, timeout=window):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr: this failure starts a new window
        cache.set(key, 1, timeout=window)


def login_failures_clear(*, username: str, request: Any) -> None:
    caches["default"].delete(_key(username, request))


def on_login_failed(
    sender: object, credentials: dict[str, Any], request: Any = None, **_: Any
) -> None:
    """``user_login_failed`` receiver (connected in ``AnnotationConfig.ready``)."""
    username = credentials.get("username")
    if request is not None and isinstance(username, str) and username:
        login_failure_record(username=username, request=request)


def on_logged_in(sender: object, request: Any = None, user: Any = None, **_: Any) -> None:
    """``user_logged_in`` receiver: a web sign-in clears its username's count."""
    if request is not None and user is not None:
        login_failures_clear(username=user.get_username(), request=request)
