"""maskloop settings — every value comes from an environment variable with an embedded default.

The defaults make a single machine a whole platform: SQLite, a local blob directory, a Celery
broker that lives in a folder (no broker server), CPU inference. Production sets
``DATABASE_URL`` (PostgreSQL via psycopg 3), ``CELERY_BROKER_URL`` (Redis) and
``STORAGE_BACKEND=s3``. ``docs/configuration.md`` lists every variable.
"""

import os
from pathlib import Path
from typing import TypeVar

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.csp import policy_settings

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


_Number = TypeVar("_Number", int, float)


def _env_number(name: str, default: _Number, kind: type[_Number], what: str) -> _Number:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {what}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


# --- Paths -------------------------------------------------------------------------------
VAR_DIR = Path(env_str("MASKLOOP_VAR_DIR", str(BASE_DIR / "var"))).resolve()
# The embedded defaults keep the SQLite file, blobs and the folder broker here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core --------------------------------------------------------------------------------
_DEV_SECRET = "maskloop-dev-only-secret-key-change-me-in-production-0123456789"
DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _DEV_SECRET)
if not DEBUG and SECRET_KEY == _DEV_SECRET:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Behind a TLS-terminating reverse proxy that sets X-Forwarded-Proto.
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "django_celery_beat",
    "storage",
    "engine",
    "annotation",
    "training",
]

MIDDLEWARE = [
    # /healthz and /readyz, answered before the Host check and the HTTPS redirect (probes
    # address the process by IP, over plain HTTP).
    "config.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Content-Security-Policy of every answer but static files (config/csp.py).
    "config.csp.BlobOriginCSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # DEBUG on: JSON, not the HTML debug page, for an /api/ view's uncaught exception.
    "config.errors.ApiDebugErrorsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ----------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'maskloop.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker share one SQLite file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
    # Connections are kept (CONN_MAX_AGE) on SQLite too: opening one registers Django's SQL
    # functions and pragmas, ~0.6 ms of every request (on the tool's click path: a decode).
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Uploads larger than this go to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("MASKLOOP_MAX_UPLOAD_FILES", 1000)

# --- Blob storage ------------------------------------------------------------------------
STORAGE_BACKEND = env_str("STORAGE_BACKEND", "local")
if STORAGE_BACKEND not in {"local", "s3"}:
    raise ImproperlyConfigured(f"STORAGE_BACKEND={STORAGE_BACKEND!r}: use 'local' or 's3'")
BLOB_ROOT = Path(env_str("BLOB_ROOT", str(VAR_DIR / "blobs"))).resolve()
S3_BUCKET = env_str("S3_BUCKET", "")
S3_PREFIX = env_str("S3_PREFIX", "")
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL", "") or None
S3_REGION = env_str("S3_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
S3_MAX_ATTEMPTS = env_int("S3_MAX_ATTEMPTS", 5)
S3_PRESIGN_SECONDS = env_int("S3_PRESIGN_SECONDS", 3600)
# The endpoint that presigned download URLs name, when browsers reach the S3 server under
# another host name than the containers do; empty: the same as S3_ENDPOINT_URL.
S3_PUBLIC_ENDPOINT_URL = env_str("S3_PUBLIC_ENDPOINT_URL", "") or None
if STORAGE_BACKEND == "s3" and not S3_BUCKET:
    raise ImproperlyConfigured("STORAGE_BACKEND=s3 needs S3_BUCKET")

# --- Images ------------------------------------------------------------------------------
MASKLOOP_MAX_IMAGE_PIXELS = env_int("MASKLOOP_MAX_IMAGE_PIXELS", 100_000_000)
MASKLOOP_MAX_IMAGE_BYTES = env_int("MASKLOOP_MAX_IMAGE_BYTES", 200 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MASKLOOP_MAX_REQUEST_BYTES", 10 * 1024 * 1024)

# --- COCO annotation import (annotation.services.coco_import) -----------------------------
# Uploads through the API are imported while the request waits, parsed in the web process's
# memory (several times the file's size): larger files take the command.
MASKLOOP_MAX_COCO_UPLOAD_BYTES = env_int("MASKLOOP_MAX_COCO_UPLOAD_BYTES", 20 * 1024 * 1024)

# --- Export ------------------------------------------------------------------------------
MASKLOOP_SA1B_SHARD_SIZE = env_int("MASKLOOP_SA1B_SHARD_SIZE", 1000)

# --- Celery ------------------------------------------------------------------------------
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
# The folder transport ignores the host; naming one keeps kombu from warning at every connect.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(CELERY_BROKER_DIR),
        "data_folder_out": str(CELERY_BROKER_DIR),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
    (CELERY_BROKER_DIR / "control").mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600)
    }
# Job rows carry status and results; Celery's own result store is not used.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "engine.tasks.gpu_*": {"queue": "gpu"},
    "training.tasks.*": {"queue": "gpu"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Schedules live in the database (django-celery-beat): per-project cron rounds are rows that
# the round settings write; "every N newly accepted masks" is checked by one task each minute.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "training-rounds-due": {
        "task": "training.schedule.rounds_due",
        "schedule": 60.0,
        "options": {"queue": "default"},
    },
    # Queue again the jobs whose worker died; folder broker only (engine/services/job_recovery.py).
    "jobs-recover": {
        "task": "engine.tasks.jobs_recover",
        "schedule": 60.0,
        "options": {"queue": "default"},
    },
    # Retire unused model versions and delete their embeddings (training/housekeeping.py).
    "embeddings-gc": {
        "task": "training.housekeeping.embeddings_gc",
        "schedule": 24 * 3600.0,
        "options": {"queue": "default"},
    },
}

# --- API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "annotation.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "annotation.api.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "maskloop API",
    "DESCRIPTION": "Self-hosted data engine for Segment Anything: projects, images, masks, "
    "model versions, jobs and dataset exports.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets are served locally: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Probes (config/health.py) ---------------------------------------------------------------
# Seconds each dependency of /readyz may take (its network steps each, for S3 and the broker).
MASKLOOP_PROBE_TIMEOUT_S = env_float("MASKLOOP_PROBE_TIMEOUT_S", 3.0)
if not 0 < MASKLOOP_PROBE_TIMEOUT_S <= 60:
    raise ImproperlyConfigured(
        f"MASKLOOP_PROBE_TIMEOUT_S={MASKLOOP_PROBE_TIMEOUT_S}: use seconds between 0 and 60"
    )

# --- Content-Security-Policy (config/csp.py) ----------------------------------------------
# enforce | report-only (violations only reported in the browser's console) | off
MASKLOOP_CSP = env_str("MASKLOOP_CSP", "enforce").strip().lower()
try:
    CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_REPORT_ONLY = policy_settings(MASKLOOP_CSP)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from exc

# --- Logging -----------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}

# --- Inference (engine: model cache, embedding store, checkpoint import) ------------------
# Where workers run SAM: "cpu", "cuda", "cuda:N" or "auto" (cuda when available). CUDA is only
# queried when a worker first loads a model, never at import.
MASKLOOP_DEVICE = env_str("MASKLOOP_DEVICE", "cpu")
# Image encoder precision: "fp32" or "bf16" (autocast; see engine/sam/device.py).
MASKLOOP_EMBEDDING_PRECISION = env_str("MASKLOOP_EMBEDDING_PRECISION", "fp32")
# dtype of stored embeddings: "float16" (half the bytes) or "float32". Measured (bench/
# embedding_storage.py): float16 storage changes ~3e-5 of decoded mask pixels, worst mask IoU
# 0.9997 (figures in engine/services/embeddings.py).
MASKLOOP_EMBEDDING_DTYPE = env_str("MASKLOOP_EMBEDDING_DTYPE", "float16")
if MASKLOOP_EMBEDDING_DTYPE not in {"float16", "float32"}:
    raise ImproperlyConfigured(
        f"MASKLOOP_EMBEDDING_DTYPE={MASKLOOP_EMBEDDING_DTYPE!r}: use float16 or float32"
    )
MASKLOOP_EMBEDDING_BATCH_SIZE = env_int("MASKLOOP_EMBEDDING_BATCH_SIZE", 4)
# Images per bulk-precompute task; between two chunks the gpu worker serves annotators' requests.
MASKLOOP_EMBEDDING_CHUNK = env_int("MASKLOOP_EMBEDDING_CHUNK", 16)
# Automatic and prefill runs (engine/services/automatic): images per gpu-queue task, and how
# many of a run's chunks are queued at once (so several gpu workers share one run).
MASKLOOP_AUTOMATIC_CHUNK = env_int("MASKLOOP_AUTOMATIC_CHUNK", 8)
MASKLOOP_AUTOMATIC_IN_FLIGHT = env_int("MASKLOOP_AUTOMATIC_IN_FLIGHT", 4)
# Models kept loaded per worker process (LRU, keyed by ModelVersion id).
MASKLOOP_MODEL_CACHE_SIZE = env_int("MASKLOOP_MODEL_CACHE_SIZE", 2)
# Embedding GC: the newest N versions of a project stay ready (besides the deployed one and
# its rollback target); older ones are retired and their embeddings deleted.
MASKLOOP_KEEP_VERSIONS = env_int("MASKLOOP_KEEP_VERSIONS", 3)
# Largest checkpoint file accepted by import (sam_vit_h is 2.56 GB).
MASKLOOP_MAX_CHECKPOINT_BYTES = env_int("MASKLOOP_MAX_CHECKPOINT_BYTES", 4 * 1024**3)
# --- end Inference -----------------------------------------------------------------------

# --- Annotation workflow (H2) --------------------------------------------------------------
# How long "next image" (and a renewal) holds an image for one annotator before others may
# take it. The tool renews while the annotator works.
MASKLOOP_LEASE_SECONDS = env_int("MASKLOOP_LEASE_SECONDS", 600)
if MASKLOOP_LEASE_SECONDS < 1:
    raise ImproperlyConfigured(f"MASKLOOP_LEASE_SECONDS={MASKLOOP_LEASE_SECONDS}: use at least 1")
# Stable schema names for choice sets that several serializers share a field name with.
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(  # type: ignore[attr-defined]
    {
        "MaskSourceEnum": "annotation.models.Mask.Source",
        "ImageStatusEnum": "annotation.models.Image.Status",
        "JobStatusEnum": "engine.models.Job.Status",
    }
)
# --- end Annotation workflow (H2) ----------------------------------------------------------

# --- Decoding and embeddings for the tool (H1) ---------------------------------------------
# Image embeddings kept in memory per web process for decoding (LRU). A vit_b embedding is
# 4 MiB as float32, so 32 of them hold 128 MiB.
MASKLOOP_EMBEDDING_CACHE_SIZE = env_int("MASKLOOP_EMBEDDING_CACHE_SIZE", 32)
# Most points one decode request may carry (the tool sends a handful; 10,000 is an attack).
MASKLOOP_MAX_PROMPT_POINTS = env_int("MASKLOOP_MAX_PROMPT_POINTS", 64)
# How long a mask_ref (a candidate's low-res logits kept in the cache) stays usable.
MASKLOOP_MASK_REF_SECONDS = env_int("MASKLOOP_MASK_REF_SECONDS", 1800)
# How many of a user's latest decodes keep their mask_refs (a ring per user: the cache holds at
# most this many ~0.4 MiB entries per user, however long the expiry). The tool's undo depth.
MASKLOOP_MASK_REFS_PER_USER = env_int("MASKLOOP_MASK_REFS_PER_USER", 16)
# Django's cache: mask_refs live there, and every web process must see the same one (a ref made
# by one gunicorn worker is used by the next). Empty: a folder under MASKLOOP_VAR_DIR, shared by
# the processes of one machine (`make run`); several machines: a Redis URL.
MASKLOOP_CACHE_URL = env_str("MASKLOOP_CACHE_URL", "")
CACHES: dict[str, dict[str, object]]
if MASKLOOP_CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": MASKLOOP_CACHE_URL,
            "KEY_PREFIX": "maskloop",
        }
    }
elif MASKLOOP_CACHE_URL:
    raise ImproperlyConfigured(f"MASKLOOP_CACHE_URL={MASKLOOP_CACHE_URL!r}: use a redis:// URL")
else:
    CACHES = {
        "default": {
            "BACKEND": "engine.cache.UncompressedFileBasedCache",  # mask refs: see there
            "LOCATION": str(VAR_DIR / "cache"),
            # Each decode stores one entry (~0.4 MiB for three candidates as float16).
            "OPTIONS": {"MAX_ENTRIES": 300},
        }
    }
# --- end Decoding and embeddings (H1) --------------------------------------------------------

# Password guessing: after this many failed sign-ins for one username from one address within
# the window, that pair is refused until the window ends (annotation.services.login_limits).
MASKLOOP_LOGIN_MAX_FAILURES = env_int("MASKLOOP_LOGIN_MAX_FAILURES", 10)
MASKLOOP_LOGIN_WINDOW_SECONDS = env_int("MASKLOOP_LOGIN_WINDOW_SECONDS", 900)

# --- Annotation tool (H3) ----------------------------------------------------------------------
# Gaps between an annotator's interactions count as active time up to this many seconds each
# (a mask's seconds_spent runs from its first prompt to accept, idle time capped).
MASKLOOP_TOOL_IDLE_CAP_SECONDS = env_int("MASKLOOP_TOOL_IDLE_CAP_SECONDS", 30)
# onnxruntime-web for browser-side decoding: `make web-deps` (npm ci) copies the files the tool
# loads here; without them the tool decodes on the server.
WEB_VENDOR_STATIC = BASE_DIR / "vendor" / "static"
STATICFILES_DIRS = [WEB_VENDOR_STATIC] if WEB_VENDOR_STATIC.is_dir() else []


def _tool_static_headers(headers: dict[str, str], path: str, url: str) -> None:
    """The tool page is cross-origin isolated (COEP require-corp); the dedicated workers that
    onnxruntime-web starts for its wasm threads are only allowed to load scripts that are
    served with a matching embedder policy, so the runtime's files carry one."""
    if "onnxruntime-web/" in url or "annotation/tool/" in url:
        headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        headers["Cross-Origin-Resource-Policy"] = "same-origin"


WHITENOISE_ADD_HEADERS_FUNCTION = _tool_static_headers
# --- end Annotation tool (H3) ------------------------------------------------------------------
