"""Failed sign-ins are limited per (username, address), on the web form and the token API."""

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.test import Client, override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "right-pass-123"


@pytest.fixture
def carol() -> User:
    caches["default"].clear()  # counts of other tests' sign-ins must not leak in
    return User.objects.create_user("carol", password=PASSWORD)


def token(client: APIClient, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(
        "/api/auth/token/",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=address,
    )


@override_settings(MASKLOOP_LOGIN_MAX_FAILURES=3, MASKLOOP_LOGIN_WINDOW_SECONDS=600)
def test_the_token_api_refuses_after_the_limit_even_the_right_password(carol):
    client = APIClient()
    for _ in range(3):
        assert token(client, "carol", "guess").status_code == 400
    refused = token(client, "carol", PASSWORD)
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_failed_logins"
    assert "10 minutes" in refused.json()["detail"]
    # Another address, and the same address for another username, are not affected.
    assert token(client, "carol", PASSWORD, address="10.0.0.2").status_code == 200
    assert token(client, "CAROL", "guess").status_code == 429  # usernames as Django folds them
    User.objects.create_user("dave", password=PASSWORD)
    assert token(client, "dave", PASSWORD).status_code == 200


@override_settings(MASKLOOP_LOGIN_MAX_FAILURES=3, MASKLOOP_LOGIN_WINDOW_SECONDS=600)
def test_the_window_ending_lets_the_user_in_again(carol):
    client = APIClient()
    for _ in range(3):
        token(client, "carol", "guess")
    assert token(client, "carol", PASSWORD).status_code == 429
    caches["default"].clear()  # what the window's end does to the count
    assert token(client, "carol", PASSWORD).status_code == 200


@override_settings(MASKLOOP_LOGIN_MAX_FAILURES=3, MASKLOOP_LOGIN_WINDOW_SECONDS=600)
def test_the_login_form_says_why_and_a_sign_in_clears_the_count(carol):
    browser = Client(REMOTE_ADDR="10.0.0.3")
    for _ in range(2):
        browser.post("/accounts/login/", {"username": "carol", "password": "guess"})
    # A success before the limit starts the count over: three more failures are allowed.
    assert (
        browser.post("/accounts/login/", {"username": "carol", "password": PASSWORD}).status_code
        == 302
    )
    browser.post("/accounts/logout/")
    for _ in range(3):
        page = browser.post("/accounts/login/", {"username": "carol", "password": "guess"})
        assert b"too many failed sign-ins" not in page.content
    page = browser.post("/accounts/login/", {"username": "carol", "password": PASSWORD})
    assert page.status_code == 200  # the form again, not a redirect
    assert b"too many failed sign-ins for this username from your address" in page.content
    assert "_auth_user_id" not in browser.session
