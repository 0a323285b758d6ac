"""Test settings: the production stack on this machine (PostgreSQL, Redis), blobs in a temp dir.

Every value can still be overridden from the environment, e.g. to give parallel runs their own
database: ``DATABASE_URL=postgres://postgres@127.0.0.1:5432/maskloop_b pytest``.
"""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/maskloop")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("MASKLOOP_VAR_DIR", tempfile.mkdtemp(prefix="maskloop-test-"))

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
# whitenoise warns when STATIC_ROOT is missing; collectstatic is not part of the tests.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405

# The embedded default's database (`make run`), for the tests of hand-written SQL
# (annotation.selectors.raw_rows), which must hold on both vendors. Only tests that ask for it
# (django_db(databases=[..., "sqlite"])) create it.
DATABASES["sqlite"] = {  # noqa: F405
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": ":memory:",
    "TEST": {"NAME": ":memory:"},
}
