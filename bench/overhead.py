"""Overhead of the resilience layer on the hot path: a no-op resilient task vs a bare one.

Method: bench/README.md. python bench/overhead.py [--quick] [--private-redis] [--pool solo]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType

import psutil  # type: ignore[import-untyped]
from _harness import load, supervisor
from celery.result import AsyncResult, denied_join_result

from resilience_tasks.testing import CeleryProcess, CommandMonitor, MonitorSummary
from resilience_tasks.testing.bench import BenchDatabase, database, parser, print_table, ratio

OWNER = "bench/overhead.py"
IDLE_QUEUE = "overhead-idle"
POLL = 0.01


@dataclass
class Totals:
    tasks: int = 0
    seconds: float = 0.0
    cpu: float = 0.0  # worker, main + pool
    redis_cpu: float = 0.0  # the private server, if any
    commands: Counter[str] = field(default_factory=Counter)
    rounds: list[float] = field(default_factory=list)

    def per_task(self, value: float) -> float:
        return value / self.tasks if self.tasks else 0.0


class Phases:
    """Phases of one kind of task against one running worker: publish, consume, drain."""

    def __init__(self, apps: ModuleType, db: BenchDatabase, worker: CeleryProcess) -> None:
        self.apps, self.db, self.worker = apps, db, worker
        self.server = psutil.Process(db.server.pid) if db.server else None
        self.unchecked: list[str] = []

    def _redis_cpu(self) -> float:
        return sum(self.server.cpu_times()[:2]) if self.server else 0.0

    def run(
        self,
        kind: str,
        count: int,
        totals: Totals | None = None,
        recorder: CommandMonitor | None = None,
    ) -> Counter[str]:
        """Publish ``count`` tasks, then let the worker drain them (``recorder`` watching)."""
        task, queue = self.apps.OVERHEAD[kind]
        with denied_join_result():  # as a publisher inside a worker: no result subscription
            ids = [getattr(self.apps, task).apply_async().id for _ in range(count)]
        with recorder or contextlib.nullcontext():
            polls = self._drain(queue, count, totals)
        self.unchecked.extend(ids)
        return polls

    def _drain(self, queue: str, count: int, totals: Totals | None) -> Counter[str]:
        self.db.reset_stats()
        cpu, redis_cpu, started = self.worker.cpu_seconds(), self._redis_cpu(), time.perf_counter()
        control = self.apps.app.control
        control.add_consumer(queue, destination=[self.worker.nodename], reply=True, timeout=10)
        polls: Counter[str] = Counter()
        settled = 0
        while settled < 2:  # two empty readings in a row: nothing between pop and unacked
            time.sleep(POLL)
            polls["llen"] += 1
            empty = self.db.client.llen(queue) == 0
            if empty:
                polls["hlen"] += 1
                empty = self.db.client.hlen("unacked") == 0
            settled = settled + 1 if empty else 0
        seconds = time.perf_counter() - started - POLL  # the confirming poll is not work
        cpu, redis_cpu = self.worker.cpu_seconds() - cpu, self._redis_cpu() - redis_cpu
        commands = self.db.command_counts() - polls
        control.cancel_consumer(queue, destination=[self.worker.nodename], reply=True, timeout=10)
        if totals is not None:
            totals.tasks += count
            totals.seconds += seconds
            totals.cpu += cpu
            totals.redis_cpu += redis_cpu
            totals.rounds.append(count / seconds)
            totals.commands.update(commands)
        return polls

    def check(self) -> None:
        """Every task so far succeeded (read outside any measurement)."""
        bad = [i for i in self.unchecked if AsyncResult(i, app=self.apps.app).state != "SUCCESS"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not succeed, e.g. {bad[0]}")
        self.unchecked.clear()

    def monitored(self, kind: str, count: int) -> MonitorSummary:
        monitor = CommandMonitor(self.db.url, self.db.db)
        polls = self.run(kind, count, recorder=monitor)
        summary = monitor.summary()
        summary.round_trips.subtract(polls)
        return summary


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=14)
    cli.add_argument("--tasks", type=int, help="tasks per kind (default 3000, quick 600)")
    cli.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 2)")
    cli.add_argument("--pool", default="prefork", help="worker pool (default prefork)")
    cli.add_argument("--concurrency", type=int, default=2, help="worker -c (default 2)")
    args = cli.parse_args()
    tasks = args.tasks or (600 if args.quick else 3000)
    rounds = args.rounds or (2 if args.quick else 3)
    sample = 100 if args.quick else 300
    totals = {"bare": Totals(), "ours": Totals()}
    with database(args, OWNER) as db, supervisor() as sup:
        apps = load(db, "rtbench-overhead")
        worker = sup.worker(
            "overhead",
            queues=[IDLE_QUEUE],
            pool=args.pool,
            concurrency=args.concurrency,
            ready=apps.app,
        )
        phases = Phases(apps, db, worker)
        for kind in totals:  # warm-up: connections, script loading, imports
            phases.run(kind, max(50, tasks // rounds // 5))
        for index in range(rounds):
            for kind in ("bare", "ours") if index % 2 == 0 else ("ours", "bare"):
                phases.run(kind, tasks // rounds, totals[kind])
                phases.check()
        monitored = {}
        for kind in totals:
            monitored[kind] = phases.monitored(kind, sample)
            phases.check()
        foreign = db.foreign_clients(sum(t.seconds for t in totals.values()))
    report(totals, monitored, sample, args, foreign)


def report(
    totals: dict[str, Totals],
    monitored: dict[str, MonitorSummary],
    sample: int,
    args: argparse.Namespace,
    foreign: list[str],
) -> None:
    base = totals["bare"]
    rate = {kind: t.tasks / t.seconds for kind, t in totals.items()}
    print_table(
        f"## overhead: no-op task, 1 worker -P {args.pool} "
        f"-c {args.concurrency}, alternating rounds",
        [
            "task",
            "tasks",
            "tasks/s",
            "ratio",
            "per round",
            "worker CPU µs/task",
            "Redis CPU µs/task",
            "Redis commands/task",
        ],
        [
            [
                kind,
                t.tasks,
                f"{rate[kind]:.0f}",
                ratio(rate[kind], rate["bare"]),
                " ".join(f"{r:.0f}" for r in t.rounds),
                f"{t.per_task(t.cpu) * 1e6:.0f}",
                f"{t.per_task(t.redis_cpu) * 1e6:.0f}" if t.redis_cpu else "n/a",
                f"{t.per_task(sum(t.commands.values())):.2f}",
            ]
            for kind, t in totals.items()
        ],
    )
    ours = totals["ours"]
    names = sorted(set(base.commands) | set(ours.commands))
    rows = [
        [
            name,
            f"{base.per_task(base.commands[name]):.2f}",
            f"{ours.per_task(ours.commands[name]):.2f}",
        ]
        for name in names
        if max(base.per_task(base.commands[name]), ours.per_task(ours.commands[name])) >= 0.005
    ]
    print_table(
        "### Redis commands per task (INFO commandstats)", ["command", "bare", "ours"], rows
    )
    bare_rt, ours_rt = (monitored[k].per_task(sample) for k in ("bare", "ours"))
    print_table(
        f"### Round trips per task (MONITOR, {sample} tasks per kind, MULTI..EXEC = 1)",
        ["round trip", "bare", "ours"],
        [
            [name, f"{bare_rt.get(name, 0):.2f}", f"{ours_rt.get(name, 0):.2f}"]
            for name in sorted(set(bare_rt) | set(ours_rt))
        ],
    )
    inside = monitored["ours"].in_scripts
    print("inside ours' scripts per task:", {k: round(v / sample, 2) for k, v in inside.items()})
    if foreign:
        print(f"note: clients of {', '.join(foreign)} were active: commandstats is server-wide")


if __name__ == "__main__":
    main()
