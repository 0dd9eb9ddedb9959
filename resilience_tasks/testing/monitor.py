"""What a Redis server really executed for one database, read with ``MONITOR``.

Client-side counters miss what other processes send; ``MONITOR`` sees every command of every
worker, stamped with the server's clock. It slows the server down: use it on small samples.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

import redis

#: Commands a measuring driver sends while it reads statistics; never counted.
DRIVER_COMMANDS = frozenset({"info", "config|resetstat", "client|list", "monitor", "echo"})


@dataclass(frozen=True)
class Command:
    """One command as ``MONITOR`` printed it: server time, who sent it, and the command line."""

    time: float
    client_type: str  # "lua" for commands run inside a script
    client: str
    line: str

    @property
    def name(self) -> str:
        return self.line.split(" ", 1)[0].lower()


@dataclass
class MonitorSummary:
    """Top-level round trips (a ``MULTI ... EXEC`` block once, as ``exec``) and commands run
    inside scripts or transactions. A non-transactional pipeline counts once per command, so
    round trips are an upper bound."""

    round_trips: Counter[str] = field(default_factory=Counter)
    in_scripts: Counter[str] = field(default_factory=Counter)
    in_transactions: Counter[str] = field(default_factory=Counter)

    @property
    def total_round_trips(self) -> int:
        return sum(self.round_trips.values())

    def per_task(self, tasks: int) -> dict[str, float]:
        """Round trips per task, by command, with ``total``."""
        shares = {name: count / tasks for name, count in sorted(self.round_trips.items())}
        shares["total"] = self.total_round_trips / tasks
        return shares


class CommandMonitor:
    """Records every command of database ``db`` while the ``with`` block runs."""

    STOP = "rt-monitor-stop"

    def __init__(self, url: str, db: int) -> None:
        self._url = url
        self._client = redis.Redis.from_url(url)
        self._db = db
        self.commands: list[Command] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *_: object) -> None:
        # Sent on database 0, so the new connection needs no SELECT inside the recording.
        with redis.Redis.from_url(urlsplit(self._url)._replace(path="/0").geturl()) as stopper:
            stopper.echo(self.STOP)
        self._thread.join(30)
        self._client.close()

    def _record(self) -> None:
        with self._client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            for event in monitor.listen():
                self._take(event)
                if self.STOP in str(event["command"]) and str(event["command"]).startswith("ECHO"):
                    return

    def _take(self, event: dict[str, Any]) -> None:
        if int(event["db"]) != self._db:
            return
        who = f"{event['client_address']}:{event['client_port']}"
        command = Command(float(event["time"]), str(event["client_type"]), who, event["command"])
        if command.name not in DRIVER_COMMANDS:
            self.commands.append(command)

    def summary(self) -> MonitorSummary:
        summary = MonitorSummary()
        in_multi: set[str] = set()
        for command in self.commands:
            name = command.name
            if command.client_type == "lua":
                summary.in_scripts[name] += 1
            elif name == "multi":
                in_multi.add(command.client)
            elif name in ("exec", "discard"):
                in_multi.discard(command.client)
                summary.round_trips[name] += 1
            elif command.client in in_multi:
                summary.in_transactions[name] += 1
            else:
                summary.round_trips[name] += 1
        return summary

    def per_second(self, match: Callable[[Command], bool]) -> Counter[int]:
        """Matching commands in each whole second of the server's clock (e.g. admissions)."""
        return Counter(int(c.time) for c in self.commands if match(c))
