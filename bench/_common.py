"""Helpers shared by the benchmark scripts in ``bench/``.

* command line: ``--quick``, ``--redis-url``, ``--db`` and ``--private-redis`` for every script;
* Redis: one database per script, claimed (it must be empty or a leftover of the same script),
  flushed before and after; ``INFO commandstats``, ``INFO memory`` and per-key ``MEMORY USAGE``;
  a ``MONITOR`` recorder that counts round trips of one database only; a check for clients of
  *other* databases that were active during a measurement (server-wide figures include them);
* processes: ``celery worker`` subprocesses in their own session (process group), stopped with
  SIGTERM then SIGKILL of the whole group, readiness by ``app.control.ping``, RSS with psutil;
  an optional private ``redis-server``;
* a dead HTTP dependency on 127.0.0.1 (random free port) that counts every request it receives;
* Markdown tables.

Nothing here asserts timings: the scripts only print what they measured.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

#: Key that marks a database as used by one bench script, so a leftover can be recognised.
MARKER_KEY = "bench:owner"

#: Commands the measuring driver itself sends while reading statistics; never counted.
DRIVER_COMMANDS = frozenset({"info", "config|resetstat", "client|list", "monitor", "echo"})


# -- command line ------------------------------------------------------------------------------


def parser(description: str, default_db: int) -> argparse.ArgumentParser:
    """The options every bench script has; scripts add their own."""
    cli = argparse.ArgumentParser(description=description)
    cli.add_argument("--quick", action="store_true", help="a much shorter run")
    cli.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379",
        help="Redis server without database number (default: %(default)s)",
    )
    cli.add_argument(
        "--db",
        type=int,
        default=default_db,
        help="Redis database used for broker, results and state (default: %(default)s)",
    )
    cli.add_argument(
        "--private-redis",
        action="store_true",
        help="start a private redis-server on a free port instead of --redis-url "
        "(server-wide statistics then see nothing but this bench)",
    )
    return cli


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so every ``finally`` (process cleanup) runs."""

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


# -- Redis -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(url: str, private: bool) -> Iterator[str]:
    """Yield the base URL of the Redis server to use; start a private one if asked."""
    if not private:
        yield url.rstrip("/")
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("--private-redis needs redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit("private redis-server did not start") from None
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}"
        finally:
            kill_group(process)


class BenchDatabase:
    """One Redis database owned by one bench script for the duration of the run."""

    def __init__(self, base_url: str, db: int, owner: str) -> None:
        self.url = f"{base_url}/{db}"
        self.db = db
        self.owner = owner
        self.client = redis.Redis.from_url(self.url)

    def claim(self) -> None:
        """Refuse a database holding someone else's keys; flush a leftover of our own."""
        self.client.ping()
        marker = self.client.get(MARKER_KEY)
        if self.client.dbsize() and marker != self.owner.encode():
            raise SystemExit(
                f"Redis database {self.db} at {self.url} is not empty and was not left by "
                f"{self.owner}; choose a free one with --db"
            )
        self.reset()

    def reset(self) -> None:
        self.client.flushdb()
        self.client.set(MARKER_KEY, self.owner)

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.flushdb()
        self.client.close()

    # -- statistics (INFO is server-wide) ----------------------------------------------------

    def reset_stats(self) -> None:
        self.client.config_resetstat()

    def command_counts(self) -> Counter[str]:
        """Calls per command since the last ``CONFIG RESETSTAT``, the driver's own excluded.

        Commands run inside Lua scripts are counted too (as Redis does), under their own names.
        """
        stats = self.client.info("commandstats")
        counts: Counter[str] = Counter()
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_")
            if name not in DRIVER_COMMANDS:
                counts[name] = int(value["calls"])
        return counts

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def key_memory(self, pattern: str = "*") -> int:
        """Sum of ``MEMORY USAGE key SAMPLES 0`` over this database's keys: exact and
        unaffected by other databases (unlike ``used_memory``)."""
        total = 0
        keys = list(self.client.scan_iter(pattern, count=1000))
        for start in range(0, len(keys), 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(size or 0) for size in pipe.execute())
        return total

    def foreign_activity(self, seconds: float) -> list[str]:
        """Clients of other databases that sent a command in the last ``seconds`` seconds."""
        active = []
        for client in self.client.client_list():
            if int(client["db"]) != self.db and int(client["idle"]) <= seconds + 1:
                active.append(f"db{client['db']}:{client['cmd']}")
        return active


def foreign_note(activity: Sequence[str], figure: str) -> str | None:
    """One line warning that a server-wide ``figure`` includes other databases' traffic."""
    if not activity:
        return None
    dbs = sorted({entry.split(":", 1)[0] for entry in activity})
    return (
        f"note: {len(activity)} client(s) of other databases ({', '.join(dbs)}) were active "
        f"during the measurement; {figure} is server-wide and includes their traffic (use "
        "--private-redis for a clean server)"
    )


@dataclass
class MonitorSummary:
    """What ``MONITOR`` saw for one database: top-level round trips and script commands."""

    round_trips: Counter[str] = field(default_factory=Counter)
    in_scripts: Counter[str] = field(default_factory=Counter)
    in_transactions: Counter[str] = field(default_factory=Counter)

    @property
    def total_round_trips(self) -> int:
        return sum(self.round_trips.values())


class CommandMonitor:
    """Records every command of one database with ``MONITOR`` (slow: use on small samples).

    A round trip is one command sent by a client, with a ``MULTI ... EXEC`` block counted once
    (as ``exec``) because redis-py sends it in one write. Commands run by Lua scripts are
    counted apart. A non-transactional pipeline would still count once per command, so the
    round-trip figure is an upper bound.
    """

    STOP = "bench-monitor-stop"

    def __init__(self, url: str, db: int) -> None:
        self._client = redis.Redis.from_url(url)
        self._db = db
        self._events: list[tuple[str, str, str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)

    def __enter__(self) -> CommandMonitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._client.echo(self.STOP)
        self._thread.join(30)
        self._client.close()

    def _record(self) -> None:
        with self._client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            for event in monitor.listen():
                command = str(event["command"])
                if command.startswith("ECHO") and self.STOP in command:
                    return
                if int(event["db"]) != self._db:
                    continue
                name = command.split(" ", 1)[0].lower()
                who = f"{event['client_address']}:{event['client_port']}"
                self._events.append((str(event["client_type"]), who, name))

    def summary(self) -> MonitorSummary:
        summary = MonitorSummary()
        in_multi: set[str] = set()
        for client_type, who, name in self._events:
            if name in DRIVER_COMMANDS:
                continue
            if client_type == "lua":
                summary.in_scripts[name] += 1
            elif name == "multi":
                in_multi.add(who)
            elif name in ("exec", "discard"):
                in_multi.discard(who)
                summary.round_trips[name] += 1
            elif who in in_multi:
                summary.in_transactions[name] += 1
            else:
                summary.round_trips[name] += 1
        return summary


# -- the bench Celery app ----------------------------------------------------------------------


def load_apps(redis_url: str, prefix: str, team: str = "bench") -> ModuleType:
    """Configure (through the environment, which workers inherit) and import ``_apps``."""
    os.environ["BENCH_REDIS_URL"] = redis_url
    os.environ["BENCH_PREFIX"] = prefix
    os.environ["BENCH_TEAM"] = team
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("_apps")


def worker_env() -> dict[str, str]:
    paths = [str(BENCH_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


# -- processes ---------------------------------------------------------------------------------


def kill_group(process: subprocess.Popen[Any], grace: float = 0.0) -> None:
    """Stop ``process`` and everything in its process group: SIGTERM, then SIGKILL."""
    if grace > 0 and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers too (pool children)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class Worker:
    """One ``celery worker`` subprocess of the bench app, in its own process group."""

    def __init__(
        self, name: str, queues: Sequence[str], pool: str, concurrency: int, logdir: Path
    ) -> None:
        self.name = name
        self.nodename = f"{name}@{socket.gethostname()}"
        self.queues = list(queues)
        self.pool = pool
        self.concurrency = concurrency
        self.log_path = logdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "_apps",
            "worker",
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-Q",
            ",".join(self.queues),
            "-n",
            self.nodename,
            "-l",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=BENCH_DIR,
                env=worker_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, app: Any, timeout: float = 90.0) -> float:
        """Poll ``app.control.ping`` until the worker answers; returns the seconds it took."""
        assert self.process is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log_tail()}")
            if app.control.ping(destination=[self.nodename], timeout=0.5):
                return time.monotonic() - started
        raise RuntimeError(f"worker {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rss(self) -> tuple[int, int]:
        """(RSS of the main process, RSS of the main process plus its pool children)."""
        assert self.process is not None
        main = psutil.Process(self.process.pid)
        own = int(main.memory_info().rss)
        children = 0
        for child in main.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                children += int(child.memory_info().rss)
        return own, own + children

    def stop(self, grace: float = 10.0) -> None:
        if self.process is not None:
            kill_group(self.process, grace)


class Supervisor:
    """Starts workers and guarantees they are all gone when the ``with`` block ends."""

    def __init__(self) -> None:
        self._logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
        self._workers: list[Worker] = []
        self._others: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *_: object) -> None:
        for process in self._others:
            kill_group(process, grace=2.0)
        for worker in self._workers:
            worker.stop(grace=2.0)
        shutil.rmtree(self._logdir, ignore_errors=True)

    def worker(
        self,
        app: Any,
        name: str,
        queues: Sequence[str],
        pool: str = "prefork",
        concurrency: int = 2,
    ) -> Worker:
        """Start a worker and wait until it answers a ping."""
        worker = Worker(name, queues, pool, concurrency, self._logdir)
        self._workers.append(worker)
        worker.start()
        worker.wait_ready(app)
        return worker

    def beat(self) -> subprocess.Popen[bytes]:
        """Start ``celery beat`` for the bench app (it drives the resilience pump task)."""
        with open(self._logdir / "beat.log", "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "_apps",
                    "beat",
                    "-l",
                    "WARNING",
                    "-s",
                    str(self._logdir / "beat-schedule"),
                ],
                cwd=BENCH_DIR,
                env=worker_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._others.append(process)
        return process


# -- the dependency ------------------------------------------------------------------------------


class _HTTPServer(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # a herd connects at once; the default backlog of 5 drops SYNs
    daemon_threads = True


class DependencyServer:
    """A threaded HTTP server on 127.0.0.1 (random free port) standing in for a dependency.

    Every request is counted (with its arrival time) before it is answered. It answers 503
    immediately (a dead dependency) until ``status`` is set to 200; ``hold`` seconds of delay
    before answering can simulate a hanging one.
    """

    def __init__(self, status: int = 503, hold: float = 0.0) -> None:
        self.status = status
        self.hold = hold
        self._lock = threading.Lock()
        self._arrivals: list[float] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server._arrivals.append(time.monotonic())
                if server.hold:
                    time.sleep(server.hold)
                self.send_response(server.status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> DependencyServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def hits(self, since: float = 0.0, until: float = float("inf")) -> int:
        with self._lock:
            return sum(1 for at in self._arrivals if since <= at < until)

    def per_second(self, since: float, seconds: int) -> list[int]:
        """Requests in each second after ``since`` (a ``time.monotonic`` value)."""
        buckets = [0] * seconds
        with self._lock:
            for at in self._arrivals:
                index = int(at - since)
                if 0 <= index < seconds:
                    buckets[index] += 1
        return buckets


# -- output ------------------------------------------------------------------------------------


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print(line([str(h) for h in headers]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print(line(row))
    print()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
