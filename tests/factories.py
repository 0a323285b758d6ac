"""Test data and clients shared by the test modules: generated images, authenticated API
clients, ``manage.py`` in a child process."""

import io
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from django.contrib.auth.models import User
from django.db import connection
from PIL import Image as PilImage
from rest_framework.test import APIClient

REPO = Path(__file__).resolve().parents[1]


def png(seed: int, width: int = 40, height: int = 30) -> bytes:
    """A PNG of seeded random RGB noise: the same seed gives the same bytes."""
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    PilImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def client_for(user: User | None) -> APIClient:
    """An API client authenticated as ``user``; anonymous for None."""
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def manage_in_child(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py *args`` in a child process on this test's (committed) database.

    The child uses ``tests.settings`` and inherits this process's environment plus ``env``;
    its stdout and stderr are captured as text.
    """
    db = connection.settings_dict
    child_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
