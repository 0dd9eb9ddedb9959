"""A private ``redis-server`` on a free loopback port, to stop and restart in the middle of a run.

Outage tests must never touch a shared server; this one lives in a temp dir of its own and keeps
its port across restarts, so clients configured with ``url()`` reconnect to the same place.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import redis

from resilience_tasks.testing.polling import wait_until


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1, data in a temp dir; ``appendonly`` keeps data on restart.

    ``stop()`` shuts it down cleanly (the AOF is flushed, no RDB written), ``kill()`` SIGKILLs it
    (what a crash does), ``restart()`` stops and starts it on the same port and directory.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        port: int | None = None,
        args: Sequence[str] = (),
        executable: str = "redis-server",
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise RuntimeError(f"{executable} is not on PATH")
        self.executable = found
        self.port = port or free_port()
        self.appendonly = appendonly
        self.args = list(args)
        self.directory = Path(tempfile.mkdtemp(prefix="rt-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    @property
    def pid(self) -> int:
        """The server's process id (for its CPU time), while it runs."""
        if self._process is None or not self.running:
            raise RuntimeError(f"redis-server on port {self.port} is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _ping(self) -> bool:
        if not self.running:
            raise RuntimeError(f"redis-server on port {self.port} exited:\n{self._log_tail()}")
        with contextlib.suppress(redis.RedisError), self.client() as client:
            return bool(client.ping())
        return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.directory / "redis.log").read_text().splitlines()[-10:])
        return "(no log)"

    def start(self, timeout: float = 20.0) -> Self:
        """Start the server and wait until it answers PING (with AOF: until it has loaded)."""
        if self.running:
            return self
        argv = [
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "yes" if self.appendonly else "no"),
            *("--logfile", "redis.log", "--daemonize", "no", *self.args),
        ]
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if not wait_until(self._ping, timeout):
            self.kill()
            raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """``SHUTDOWN NOSAVE`` (SIGTERM if the server does not answer), then wait for the exit."""
        if not self.running or self._process is None:
            return
        with contextlib.suppress(redis.RedisError), self.client() as client:
            client.shutdown(nosave=True)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash (an AOF keeps what ``appendfsync`` wrote)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def restart(self, down_for: float = 0.0, timeout: float = 20.0) -> None:
        """Stop, stay down ``down_for`` seconds, and start again on the same port and data."""
        self.stop(timeout)
        if down_for > 0:
            time.sleep(down_for)  # the outage itself
        self.start(timeout)

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()
