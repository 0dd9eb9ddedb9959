"""``celery worker`` and ``celery beat`` subprocesses that never outlive their test or benchmark.

Each process runs in a session of its own, so one signal to its process group reaches the
prefork pool children too; its stdout and stderr go to one log file, shown when it dies or is
not ready in time. ``Supervisor`` stops whatever it started when its ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import psutil  # type: ignore[import-untyped]

from resilience_tasks.testing.polling import wait_until

#: Worker options that keep a test worker quiet on the broker and quick to start.
QUIET_WORKER = ("--without-heartbeat", "--without-gossip", "--without-mingle")


def kill_group(process: subprocess.Popen[Any], grace: float = 0.0) -> None:
    """Stop ``process`` and everything in its process group: SIGTERM, ``grace`` s, SIGKILL."""
    if grace > 0 and process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers too (pool children)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class CeleryProcess:
    """One subprocess (usually ``celery -A <app> ...``) in its own process group."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, nodename: str = "") -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        #: ``name@host`` of a worker (what ``app.control.ping`` answers to), else "".
        self.nodename = nodename
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str], cwd: Path | str) -> CeleryProcess:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its return code."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.wait(timeout)

    def wait_ready(self, app: Any, timeout: float = 90.0) -> None:
        """Poll ``app.control.ping`` until this worker answers; raise with the log if it dies."""

        def answered() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            return bool(app.control.ping(destination=[self.nodename], timeout=0.5))

        if not wait_until(answered, timeout, interval=0.0):
            raise RuntimeError(f"{self.name} not ready after {timeout:g}s:\n{self.tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """Warm shutdown (SIGTERM to the group) for up to ``grace`` seconds, then SIGKILL."""
        if self.popen is not None:
            kill_group(self.popen, grace)

    def kill(self) -> None:
        """SIGKILL the whole group at once: no warm shutdown, nothing acknowledged."""
        self.stop(grace=0.0)

    def _tree(self) -> list[psutil.Process]:
        main = psutil.Process(self.pid)
        return [main, *main.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its children, living and reaped."""
        total = 0.0
        for index, process in enumerate(self._tree()):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
                if index == 0:  # children already exited and waited for (pool restarts)
                    total += times.children_user + times.children_system
        return total

    def main_cpu_seconds(self) -> float:
        """User + system CPU of the main process alone (a worker's consumer, its threads)."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def rss(self) -> tuple[int, int]:
        """(RSS of the main process, RSS of the main process plus its children)."""
        own = total = 0
        for index, process in enumerate(self._tree()):
            with contextlib.suppress(psutil.Error):
                size = int(process.memory_info().rss)
                total += size
                own = size if index == 0 else own
        return own, total


class Supervisor:
    """Starts ``celery -A <app>`` workers and beats; all of them are gone when it exits.

    ``env`` is added to the environment each process inherits when it starts; ``cwd`` is where
    they run (put the app module's directory on ``PYTHONPATH`` through ``env``).
    ``python_args`` go to the interpreter, e.g. ``("-m", "cProfile", "-o", path)`` to profile.
    """

    def __init__(
        self,
        app: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        python_args: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.python_args = list(python_args)
        #: Added to ``os.environ`` as it is when each process starts; may be changed between.
        self.env = dict(env or {})
        self.cwd = Path(cwd or os.getcwd())
        self.logdir = Path(tempfile.mkdtemp(prefix="rt-processes-"))
        self.started: list[CeleryProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()
        shutil.rmtree(self.logdir, ignore_errors=True)

    def start(self, name: str, *args: str, nodename: str = "") -> CeleryProcess:
        """Start ``celery -A <app> <args>`` without waiting for anything."""
        argv = [sys.executable, *self.python_args, "-m", "celery", "-A", self.app, *args]
        return self.spawn(name, argv, nodename)

    def spawn(self, name: str, argv: Sequence[str], nodename: str = "") -> CeleryProcess:
        """Start any command (another task queue's worker, say) under the same care."""
        process = CeleryProcess(name, argv, self.logdir / f"{name}.log", nodename)
        self.started.append(process)
        return process.start({**os.environ, **self.env}, self.cwd)

    def worker(
        self,
        name: str,
        *,
        queues: Sequence[str] = (),
        pool: str = "prefork",
        concurrency: int = 2,
        ready: Any = None,
        args: Sequence[str] = (),
    ) -> CeleryProcess:
        """Start a worker named ``name@host``; with ``ready`` (the app), wait for its ping."""
        nodename = f"{name}@{socket.gethostname()}"
        argv = ["worker", "-P", pool, "-c", str(concurrency), "-n", nodename, "-l", "WARNING"]
        if queues:
            argv += ["-Q", ",".join(queues)]
        process = self.start(name, *argv, *QUIET_WORKER, *args, nodename=nodename)
        if ready is not None:
            process.wait_ready(ready)
        return process

    def beat(self, name: str = "beat", *args: str) -> CeleryProcess:
        """Start ``celery beat`` with its schedule file in the supervisor's temp dir."""
        schedule = str(self.logdir / f"{name}-schedule")
        return self.start(name, "beat", "-l", "WARNING", "-s", schedule, *args)

    def stop_all(self, grace: float = 2.0) -> None:
        """SIGTERM every group at once, wait up to ``grace`` seconds, then SIGKILL them."""
        for process in self.started:
            if process.alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            process.stop(grace)
        self.started.clear()
