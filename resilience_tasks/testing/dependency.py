"""An HTTP dependency on loopback whose health a test switches while it runs.

Written by hand on ``http.server`` because the double must be a real server that separate
worker processes reach over TCP (``httpx.MockTransport`` and ``responses`` patch one process).
"""

from __future__ import annotations

import http.server
import math
import threading
import time
from enum import StrEnum
from typing import Any, Self


class Mode(StrEnum):
    """How the dependency answers: 200, 503 at once, nothing for a while (then 503), or 429."""

    HEALTHY = "healthy"
    FAILING = "failing"
    HANGING = "hanging"
    THROTTLED = "throttled"


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # a herd connects at once; the default backlog of 5 drops SYNs
    daemon_threads = True


class HTTPDependency:
    """A threaded HTTP server on 127.0.0.1 (free port) that counts every request it receives.

    ``mode`` may be changed at any time. ``HANGING`` holds each request up to ``hang_seconds``
    (or until the mode changes), then answers 503; ``THROTTLED`` answers 429 with
    ``Retry-After: retry_after``.
    """

    def __init__(
        self, mode: Mode = Mode.HEALTHY, hang_seconds: float = 30.0, retry_after: int = 1
    ) -> None:
        self.mode = mode
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._arrivals: list[float] = []
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        dependency = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers = dependency._answer()
                self.send_response(status)
                for name, value in (*headers, ("Content-Length", "0"), ("Connection", "close")):
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def _answer(self) -> tuple[int, list[tuple[str, str]]]:
        with self._lock:
            self._arrivals.append(time.monotonic())
        mode = self.mode
        if mode is Mode.HANGING:
            deadline = time.monotonic() + self.hang_seconds
            while self.mode is Mode.HANGING and time.monotonic() < deadline:
                time.sleep(0.01)
            return 503, []
        if mode is Mode.THROTTLED:
            return 429, [("Retry-After", str(self.retry_after))]
        return (200 if mode is Mode.HEALTHY else 503), []

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.mode = Mode.FAILING  # frees hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()

    def hits(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Requests received in [since, until) (``time.monotonic`` values)."""
        with self._lock:
            return sum(1 for at in self._arrivals if since <= at < until)

    def per_second(self, since: float, seconds: int) -> list[int]:
        """Requests received in each whole second after ``since``."""
        buckets = [0] * seconds
        with self._lock:
            for at in self._arrivals:
                index = math.floor(at - since)
                if 0 <= index < seconds:
                    buckets[index] += 1
        return buckets
