"""The skeleton every benchmark shares: command line, a Redis database of its own, tables.

A benchmark is a plain script: ``parser()`` gives it ``--quick``, ``--redis-url``, ``--db`` and
``--private-redis``; ``database(args, owner)`` yields a claimed, flushed ``BenchDatabase`` (on a
private ``redis-server`` if asked) and flushes it afterwards; ``print_table`` prints Markdown.
Nothing here asserts a timing: benchmarks print what they measured.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from resilience_tasks.testing.monitor import DRIVER_COMMANDS
from resilience_tasks.testing.redis_server import RedisServer

#: Key that marks a database as used by one benchmark, so its leftover can be recognised.
MARKER_KEY = "bench:owner"


def parser(description: str, default_db: int) -> argparse.ArgumentParser:
    """The options every benchmark has; scripts add their own."""
    cli = argparse.ArgumentParser(description=description)
    cli.add_argument("--quick", action="store_true", help="a much shorter run")
    cli.add_argument("--redis-url", default="redis://127.0.0.1:6379", help="server, no db")
    cli.add_argument("--db", type=int, default=default_db, help="database (default %(default)s)")
    cli.add_argument("--private-redis", action="store_true", help="start a redis-server of its own")
    return cli


class BenchDatabase:
    """One Redis database owned by one benchmark for the duration of the run."""

    def __init__(self, base_url: str, db: int, owner: str) -> None:
        self.url = f"{base_url.rstrip('/')}/{db}"
        self.db = db
        self.owner = owner
        self.client = redis.Redis.from_url(self.url)
        #: The private server (``--private-redis``), else None.
        self.server: RedisServer | None = None

    def claim(self) -> None:
        """Refuse a database holding someone else's keys (kombu's binding records aside: a
        connected client writes them again after a flush); flush a leftover of our own."""
        marker = self.client.get(MARKER_KEY)
        others = (k for k in self.client.scan_iter(count=100) if not k.startswith(b"_kombu."))
        if marker != self.owner.encode() and next(others, None) is not None:
            raise SystemExit(f"{self.url} holds keys not left by {self.owner}; choose --db")
        self.reset()

    def reset(self) -> None:
        self.client.flushdb()
        self.client.set(MARKER_KEY, self.owner)

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.flushdb()
        self.client.close()

    def reset_stats(self) -> None:
        self.client.config_resetstat()

    def command_counts(self) -> Counter[str]:
        """Calls per command since ``reset_stats`` (server-wide, scripts' commands included)."""
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
        """Sum of ``MEMORY USAGE`` over this database's keys: exact, this database only."""
        keys = list(self.client.scan_iter(pattern, count=1000))
        total = 0
        for start in range(0, len(keys), 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(size or 0) for size in pipe.execute())
        return total

    def foreign_clients(self, seconds: float) -> list[str]:
        """Databases of other clients active in the last ``seconds`` (server-wide figures
        include their traffic)."""
        return sorted(
            {
                f"db{c['db']}"
                for c in self.client.client_list()
                if int(c["db"]) != self.db and int(c["idle"]) <= seconds + 1
            }
        )


@contextlib.contextmanager
def database(args: argparse.Namespace, owner: str) -> Iterator[BenchDatabase]:
    """The benchmark's database, claimed and flushed, on ``--redis-url`` or a private server."""
    _signals_exit()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer()) if args.private_redis else None
        base = server.url().rsplit("/", 1)[0] if server else args.redis_url
        db = BenchDatabase(base, args.db, owner)
        db.server = server
        db.claim()
        stack.callback(db.release)
        yield db


def _signals_exit() -> None:
    """SIGTERM/SIGHUP become SystemExit, so every ``finally`` (process cleanup) runs."""

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print ``title`` and a Markdown table."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print(f"\n{title}\n\n{line(headers)}")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print(line(row))
    print()
