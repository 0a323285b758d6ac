"""A real S3 endpoint for tests and benchmarks: moto's standalone server in a child process.

Also the two child-process steps it is built from, which the worker test shares: waiting until
a child is ready (:func:`wait_until`) and stopping it (:func:`stop_process`).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "maskloop-test",
    "AWS_SECRET_ACCESS_KEY": "maskloop-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_PROXY_BYPASS = ("NO_PROXY", "no_proxy")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    process: "subprocess.Popen[bytes] | None" = None,
) -> bool:
    """Poll ``ready`` until it returns True (then True) or ``timeout`` seconds pass (False).

    Raises ``ChildProcessError`` as soon as ``process`` (if given) has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise ChildProcessError(f"{process.args!r} exited with code {process.returncode}")
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_process(process: "subprocess.Popen[bytes]", *, timeout: float = 10) -> None:
    """SIGTERM ``process``, then SIGKILL it if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _moto_server_command() -> str:
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    found = found or shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: install moto[server] into the venv")
    return found


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@contextmanager
def moto_server(*, timeout: float = 30) -> Iterator[str]:
    """Run moto's S3 server on a free port; yields its URL (``http://127.0.0.1:PORT``).

    While it runs, the AWS credential variables hold :data:`S3_TEST_ENV` and ``NO_PROXY``
    includes 127.0.0.1 (a proxy configured on the machine must not intercept requests to the
    local server); both are restored afterwards.
    """
    saved = {name: os.environ.get(name) for name in (*S3_TEST_ENV, *_PROXY_BYPASS)}
    os.environ.update(S3_TEST_ENV)
    for name in _PROXY_BYPASS:
        os.environ[name] = ",".join(filter(None, [saved[name], "127.0.0.1", "localhost"]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_until(lambda: _answers_http(url), timeout=timeout, process=process):
            raise RuntimeError(f"moto_server did not answer on {url} within {timeout} s")
        yield url
    finally:
        stop_process(process)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def s3_test_client(endpoint: str, **config: Any) -> Any:
    """A plain boto3 client on ``endpoint``, for work behind the blob store's back.

    ``config`` adds to (or overrides) the botocore ``Config`` options; by default requests
    are path-style and not retried.
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "retries": {"max_attempts": 1},
        **config,
    }
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(**options)
    )
