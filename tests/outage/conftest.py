"""Private Redis servers a test may stop and start, and a fleet restarted as a supervisor would.

The shared Redis on 6379 is never stopped: outage tests start their own ``redis-server``
processes (``resilience_tasks.testing.RedisServer``) with an AOF fsynced on every write, so a
SIGKILL loses nothing the server acknowledged. ``Restarter`` restarts any worker or beat of a
``Supervisor`` that exits, as systemd or Kubernetes would, and records each death with what
the process printed, so a test can report it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resilience_tasks.testing import CeleryProcess, RedisServer, Supervisor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_servers() -> Iterator[list[RedisServer]]:
    """Servers appended here by ``new_server`` are killed and removed after the test."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.close()


def new_server(servers: list[RedisServer]) -> RedisServer:
    """A private server with ``appendfsync always``: a SIGKILL loses no acknowledged write."""
    server = RedisServer(appendonly=True, args=("--appendfsync", "always"))
    servers.append(server)
    return server.start()


@dataclass(frozen=True)
class Death:
    """A process of the fleet that exited on its own, and the end of what it printed."""

    name: str
    returncode: int | None
    tail: str


class Restarter:
    """Restarts every process of ``supervisor`` that exits, and remembers why it did."""

    def __init__(self, supervisor: Supervisor, interval: float = 0.5) -> None:
        self.supervisor = supervisor
        self.interval = interval
        self.deaths: list[Death] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Restarter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            for process in list(self.supervisor.started):
                if process.popen is not None and not process.alive:
                    self._restart(process)

    def _restart(self, process: CeleryProcess) -> None:
        assert process.popen is not None
        self.deaths.append(Death(process.name, process.popen.returncode, process.tail(200)))
        # the same log file, opened for appending: what the dead process printed is kept
        process.start({**os.environ, **self.supervisor.env}, self.supervisor.cwd)

    def all_up(self, prefix: str = "") -> bool:
        return all(p.alive for p in self.supervisor.started if p.name.startswith(prefix))

    def output(self) -> str:
        """Everything every process of the fleet printed."""
        return "\n".join(f"==> {p.name}\n{p.output()}" for p in self.supervisor.started)
