"""A tiny HTTP proxy in front of the test S3 server that fails requests on purpose.

It answers ``status`` (an S3-style XML error) for the first ``failures`` requests that match
``fails_on`` (all requests when None; every matching request when ``failures`` is None), and
forwards everything else unchanged. Used to check retries and clean failure against real HTTP.
"""

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_CODES = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}


class FlakyProxy:
    """Run with ``with FlakyProxy(upstream, failures=2) as proxy: ... proxy.url``."""

    def __init__(
        self,
        upstream: str,
        *,
        failures: int | None,
        status: int = 503,
        fails_on: Callable[[str, str], bool] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.failures_left = failures
        self.status = status
        self.fails_on = fails_on
        self.failed: list[tuple[str, str]] = []  # (method, path) of every request failed
        self.forwarded: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            if self.fails_on is not None and not self.fails_on(method, path):
                return False
            if self.failures_left is not None:
                if self.failures_left <= 0:
                    return False
                self.failures_left -= 1
            self.failed.append((method, path))
            return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.should_fail(self.command, self.path):
                    self._fail()
                    return
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path))
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=30
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    declared = response.getheader("Content-Length")
                    is_head = self.command == "HEAD"
                    self.send_header(
                        "Content-Length", (declared or "0") if is_head else str(len(payload))
                    )
                    self.end_headers()
                    if not is_head:
                        self.wfile.write(payload)
                finally:
                    conn.close()

            def _fail(self) -> None:
                code = _CODES.get(proxy.status, "InternalError")
                body = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    "<Message>injected by FlakyProxy</Message></Error>"
                ).encode()
                self.send_response(proxy.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header(
                    "Content-Length", "0" if self.command == "HEAD" else str(len(body))
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._relay()

            def do_HEAD(self) -> None:
                self._relay()

            def do_PUT(self) -> None:
                self._relay()

            def do_POST(self) -> None:
                self._relay()

            def do_DELETE(self) -> None:
                self._relay()

        return Handler
