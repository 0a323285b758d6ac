"""Liveness and readiness probes for load balancers, orchestrators and uptime checks.

* ``GET /healthz`` (liveness): 200 as long as the process answers; touches nothing else, so a
  database outage never gets web processes restarted.
* ``GET /readyz`` (readiness): each dependency checked at once, in parallel, each within
  ``MASKLOOP_PROBE_TIMEOUT_S``:

  - required (503 when one fails: this process cannot serve pages): ``database`` (a query),
    ``migrations`` (none left to apply) and ``blob_store`` (one request, no retries);
  - reported (200 with ``"status": "degraded"``): ``cache`` (mask refs of the decode endpoint)
    and ``broker`` (queuing embeddings, exports, rounds). Taking web processes out of service
    for them would turn a queue outage into a whole-site outage.

Both are answered by a middleware placed first, before Django checks the ``Host`` header
against ``ALLOWED_HOSTS`` and before the HTTPS redirect: probes come from inside the network,
addressed by IP. Neither needs authentication, so the answers name the checks and their times
but never a host, path or exception text; the details go to the log.
"""

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu import Connection

logger = logging.getLogger(__name__)

LIVE_PATH = "/healthz"
READY_PATH = "/readyz"
REQUIRED = ("database", "migrations", "blob_store")
OPTIONAL = ("cache", "broker")

# Checks run on their own threads so that a hung dependency costs the probe its timeout, not
# a web thread for as long as a TCP connect takes. A check still running from an earlier probe
# is not started again (hung checks would pile up on the pool): it fails until it returns.
_pool = ThreadPoolExecutor(max_workers=len(REQUIRED) + len(OPTIONAL), thread_name_prefix="probe")
_inflight: dict[str, "Future[tuple[str | None, float]]"] = {}
_inflight_lock = threading.Lock()
_migrated = False  # once none are left to apply, this process does not load the graph again


class ProbeFailed(Exception):
    """A dependency's state in words safe to show anyone (no hosts, paths or secrets)."""


def _with_own_connection(check: Callable[[], None]) -> Callable[[], None]:
    """Run a database check on a pool thread and close that thread's connection after it."""

    def run() -> None:
        try:
            check()
        finally:
            connections[DEFAULT_DB_ALIAS].close()

    return run


def _database() -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def _migrations() -> None:
    global _migrated
    if _migrated:
        return
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        raise ProbeFailed(f"{len(pending)} migration(s) not applied: run manage.py migrate")
    _migrated = True


def _blob_store() -> None:
    from storage.blobs import get_blob_store

    get_blob_store().probe(timeout=settings.MASKLOOP_PROBE_TIMEOUT_S)


def _cache() -> None:
    key, token = "maskloop:readyz", secrets.token_hex(8)
    cache.set(key, token, timeout=30)
    if cache.get(key) != token:
        raise ProbeFailed("the cache did not return what was stored")


def _broker() -> None:
    url = str(settings.CELERY_BROKER_URL)
    if url.startswith("filesystem://"):  # make run's folder broker: the folder must take files
        folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_out", "")))
        if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise ProbeFailed("the broker folder is missing or not writable")
        return
    timeout = settings.MASKLOOP_PROBE_TIMEOUT_S
    with Connection(url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=0)  # one attempt: no retry, no back-off


CHECKS: dict[str, Callable[[], None]] = {
    "database": _with_own_connection(_database),
    "migrations": _with_own_connection(_migrations),
    "blob_store": _blob_store,
    "cache": _cache,
    "broker": _broker,
}


def readiness() -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a readiness probe: every check, run in parallel."""
    timeout = float(settings.MASKLOOP_PROBE_TIMEOUT_S)
    started = time.perf_counter()
    futures = {name: _submit(name) for name in (*REQUIRED, *OPTIONAL)}
    deadline = started + timeout
    checks: dict[str, dict[str, Any]] = {}
    for name, (future, fresh) in futures.items():
        try:
            error, seconds = future.result(timeout=max(0.0, deadline - time.perf_counter()))
            if not fresh:  # the answer of an earlier probe's check: this one started none
                error = error or "an earlier check was still running"
        except FutureTimeout:
            error, seconds = f"no answer within {timeout:g} s", timeout
        checks[name] = {"ok": error is None, "ms": round(seconds * 1000, 1)}
        if error is not None:
            checks[name]["error"] = error
    failed_required = [name for name in REQUIRED if not checks[name]["ok"]]
    failed_optional = [name for name in OPTIONAL if not checks[name]["ok"]]
    if failed_required:
        status, code = "unavailable", 503
    elif failed_optional:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return code, {"status": status, "checks": checks}


def _submit(name: str) -> "tuple[Future[tuple[str | None, float]], bool]":
    """The future of check ``name``: a new one, or (False) the one still running."""
    with _inflight_lock:
        running = _inflight.get(name)
        if running is not None and not running.done():
            return running, False
        future = _pool.submit(_timed, name)
        _inflight[name] = future
        return future, True


def _timed(name: str) -> tuple[str | None, float]:
    """(None or a safe error text, seconds) of one check; the exception goes to the log."""
    started = time.perf_counter()
    try:
        CHECKS[name]()
    except ProbeFailed as exc:
        return str(exc), time.perf_counter() - started
    except Exception:  # any driver's error: logged with its details, answered in general words
        logger.warning("readiness check %s failed", name, exc_info=True)
        return "unreachable or failing (see the server log)", time.perf_counter() - started
    return None, time.perf_counter() - started


class HealthCheckMiddleware:
    """Answers ``/healthz`` and ``/readyz`` before any other middleware (see the module)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in (LIVE_PATH, READY_PATH):
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse(
                {"detail": "use GET or HEAD"}, status=405, headers={"Allow": "GET, HEAD"}
            )
            return response
        if request.path_info == LIVE_PATH:
            code, body = 200, {"status": "ok"}
        else:
            code, body = readiness()
        response = JsonResponse(body, status=code)
        response["Cache-Control"] = "no-store"
        if request.method == "HEAD":
            response.content = b""
        return response
