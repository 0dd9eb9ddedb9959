"""Overhead of the resilience layer on the hot path: a no-op resilient task vs a bare one.

Both tasks live in the same app (``bench/_apps.py``), so they share every setting the manager
installs (JSON only, ``acks_late``, prefetch 1, visibility timeout): ``_apps.noop_resilient`` is
declared with ``manager.task`` (closed breaker, ``RetryPolicy.none()``), ``_apps.noop_bare``
with ``app.task``. Both store their (``None``) result in the Redis result backend.

One worker, ``celery worker -P prefork -c 2`` (2 cores), is started once, consuming only an
idle queue. Each phase:

1. publishes its tasks to the task's own queue (the worker is not consuming it yet);
2. ``CONFIG RESETSTAT``, then ``app.control.add_consumer(queue)`` starts the clock;
3. ends when the queue and the transport's ``unacked`` hash are both empty (with
   ``acks_late`` a task is acknowledged after its result is stored), polled every 10 ms;
4. reads ``INFO commandstats`` (the driver's own polling commands are subtracted) and
   ``cancel_consumer``s the queue; every result is then checked to be SUCCESS.

Phases alternate (bare, ours / ours, bare / ...) over several rounds after a warm-up; we report
tasks/s over all rounds and the ratio ours/bare. Redis commands per task come from ``INFO
commandstats`` (server-wide; commands run inside Lua scripts are counted under their own
names). Round trips cannot be read from commandstats, so a last, smaller pass per kind records
the database's traffic with ``MONITOR``: one round trip per command sent by a client, a
``MULTI ... EXEC`` block counted once, commands run inside scripts listed apart.

    python bench/overhead.py [--quick] [--tasks 3000] [--rounds 3]
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import _common as common
from celery.result import AsyncResult, denied_join_result

OWNER = "bench/overhead.py"
PREFIX = "rtbench-overhead"
IDLE_QUEUE = "overhead-idle"
POLL = 0.01


@dataclass
class Kind:
    label: str
    task: Any
    queue: str


@dataclass
class Totals:
    tasks: int = 0
    seconds: float = 0.0
    commands: Counter[str] = field(default_factory=Counter)
    foreign: list[str] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0

    def per_task(self, name: str | None = None) -> float:
        value = self.commands[name] if name else sum(self.commands.values())
        return value / self.tasks if self.tasks else 0.0


class Phases:
    """Runs phases of one kind of task against one running worker."""

    def __init__(self, apps: ModuleType, database: common.BenchDatabase, nodename: str) -> None:
        self.app = apps.app
        self.database = database
        self.redis = database.client
        self.nodename = nodename

    def publish(self, kind: Kind, count: int) -> list[str]:
        # As a publisher inside a worker would: no result-channel subscription per task.
        with denied_join_result():
            return [kind.task.apply_async().id for _ in range(count)]

    def consume(self, kind: Kind) -> tuple[float, Counter[str]]:
        """Let the worker consume ``kind.queue`` until it is drained.

        Returns the seconds it took and the driver's own polling commands (to subtract).
        """
        started = time.perf_counter()
        self.app.control.add_consumer(
            kind.queue, destination=[self.nodename], reply=True, timeout=10
        )
        polls: Counter[str] = Counter()
        settled = 0
        while settled < 2:  # two empty readings in a row: nothing between pop and unacked
            time.sleep(POLL)
            polls["llen"] += 1
            empty = self.redis.llen(kind.queue) == 0
            if empty:
                polls["hlen"] += 1
                empty = self.redis.hlen("unacked") == 0
            settled = settled + 1 if empty else 0
        elapsed = time.perf_counter() - started - POLL  # the confirming poll is not work
        return elapsed, polls

    def stop_consuming(self, kind: Kind) -> None:
        self.app.control.cancel_consumer(
            kind.queue, destination=[self.nodename], reply=True, timeout=10
        )

    def check(self, ids: list[str]) -> None:
        bad = [i for i in ids if AsyncResult(i, app=self.app).state != "SUCCESS"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not succeed, e.g. {bad[0]}")

    def run(self, kind: Kind, count: int, totals: Totals | None = None) -> None:
        ids = self.publish(kind, count)
        self.database.reset_stats()
        seconds, polls = self.consume(kind)
        commands = self.database.command_counts() - polls
        foreign = self.database.foreign_activity(seconds)
        self.stop_consuming(kind)
        self.check(ids)
        if totals is not None:
            totals.tasks += count
            totals.seconds += seconds
            totals.rounds.append(count / seconds)
            totals.commands.update(commands)
            totals.foreign.extend(foreign)

    def monitored(self, kind: Kind, count: int) -> common.MonitorSummary:
        ids = self.publish(kind, count)
        with common.CommandMonitor(self.database.url, self.database.db) as monitor:
            _, polls = self.consume(kind)
        self.stop_consuming(kind)
        self.check(ids)
        summary = monitor.summary()
        summary.round_trips.subtract(polls)
        return summary


def main() -> None:
    cli = common.parser(__doc__.splitlines()[0], default_db=14)
    cli.add_argument("--tasks", type=int, help="tasks per kind (default 3000, quick 600)")
    cli.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 2)")
    cli.add_argument(
        "--monitor-tasks",
        type=int,
        help="tasks per kind in the MONITOR pass (default 300, quick 100)",
    )
    args = cli.parse_args()
    tasks = args.tasks or (600 if args.quick else 3000)
    rounds = args.rounds or (2 if args.quick else 3)
    monitor_tasks = args.monitor_tasks or (100 if args.quick else 300)
    per_round = tasks // rounds
    common.install_signal_handlers()

    with common.redis_server(args.redis_url, args.private_redis) as base_url:
        database = common.BenchDatabase(base_url, args.db, OWNER)
        database.claim()
        try:
            apps = common.load_apps(database.url, PREFIX)
            bare = Kind("bare @app.task", apps.noop_bare, apps.OVERHEAD_BARE_QUEUE)
            ours = Kind("ours @manager.task", apps.noop_resilient, apps.OVERHEAD_RESOURCE)
            totals = {bare.label: Totals(), ours.label: Totals()}
            with common.Supervisor() as sup:
                worker = sup.worker(apps.app, "overhead", [IDLE_QUEUE], "prefork", 2)
                phases = Phases(apps, database, worker.nodename)
                for kind in (bare, ours):  # warm-up: connections, script loading, imports
                    phases.run(kind, max(50, per_round // 5))
                for index in range(rounds):
                    order = (bare, ours) if index % 2 == 0 else (ours, bare)
                    for kind in order:
                        phases.run(kind, per_round, totals[kind.label])
                monitored = {
                    kind.label: phases.monitored(kind, monitor_tasks) for kind in (bare, ours)
                }
        finally:
            database.release()
    report(bare, ours, totals, monitored, monitor_tasks, rounds)


def report(
    bare: Kind,
    ours: Kind,
    totals: dict[str, Totals],
    monitored: dict[str, common.MonitorSummary],
    monitor_tasks: int,
    rounds: int,
) -> None:
    base, mine = totals[bare.label], totals[ours.label]
    print(
        f"\n## overhead: no-op task, 1 worker -P prefork -c 2, {base.tasks} tasks per kind in "
        f"{rounds} alternating rounds\n"
    )
    common.print_table(
        [
            "task",
            "tasks",
            "seconds",
            "tasks/s",
            "ratio vs bare",
            "tasks/s per round",
            "Redis commands/task",
        ],
        [
            [
                k.label,
                t.tasks,
                f"{t.seconds:.2f}",
                f"{t.rate:.0f}",
                common.ratio(t.rate, base.rate),
                " ".join(f"{rate:.0f}" for rate in t.rounds),
                f"{t.per_task():.2f}",
            ]
            for k, t in ((bare, base), (ours, mine))
        ],
    )
    print(
        f"ours/bare throughput: {common.ratio(mine.rate, base.rate)}; Redis commands added "
        f"per task: {mine.per_task() - base.per_task():+.2f} (INFO commandstats, includes "
        f"commands run inside Lua scripts)\n"
    )

    names = sorted(set(base.commands) | set(mine.commands))
    rows = []
    for name in names:
        before, after = base.per_task(name), mine.per_task(name)
        if abs(after - before) >= 0.005 or before >= 0.005:
            rows.append([name, f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}"])
    rows.append(
        [
            "total",
            f"{base.per_task():.2f}",
            f"{mine.per_task():.2f}",
            f"{mine.per_task() - base.per_task():+.2f}",
        ]
    )
    print("### Redis commands per task, by command (INFO commandstats)\n")
    common.print_table(["command", "bare", "ours", "added"], rows)
    note = common.foreign_note(base.foreign + mine.foreign, "INFO commandstats")
    if note:
        print(note + "; the MONITOR table below counts this database only\n")

    plain, guarded = monitored[bare.label], monitored[ours.label]
    print(
        f"### Round trips per task (MONITOR of this database only, {monitor_tasks} tasks per "
        f"kind; MULTI..EXEC = 1)\n"
    )
    rows = []
    for name in sorted(set(plain.round_trips) | set(guarded.round_trips)):
        before = plain.round_trips[name] / monitor_tasks
        after = guarded.round_trips[name] / monitor_tasks
        if before >= 0.005 or after >= 0.005:
            rows.append([name, f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}"])
    before = plain.total_round_trips / monitor_tasks
    after = guarded.total_round_trips / monitor_tasks
    rows.append(["total round trips", f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}"])
    common.print_table(["round trip", "bare", "ours", "added"], rows)
    inside = ", ".join(
        f"{name} {count / monitor_tasks:.2f}" for name, count in sorted(guarded.in_scripts.items())
    )
    print(
        f"round trips added per task (closed breaker): {after - before:+.2f}; "
        f"commands run inside ours' scripts per task: {inside or 'none'}\n"
    )


if __name__ == "__main__":
    main()
