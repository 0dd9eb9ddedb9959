"""Failover: the primary provider dies under load; how soon is every call on the backup, how
many calls still reach the primary, and how soon does traffic come back once it recovers?

Method: bench/README.md. python bench/failover.py [--quick] [--fault down|errors|hang]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from _harness import load, supervisor
from celery.result import denied_join_result

from resilience_tasks.testing import wait_until
from resilience_tasks.testing.bench import BenchDatabase, database, parser, print_table
from resilience_tasks.testing.fault_server import FaultServer

OWNER = "bench/failover.py"
CONCURRENCY = 4


@dataclass
class Cycle:
    killed: float  # time.time() when the fault was asked for
    healed: float  # time.time() once the primary was healthy again
    ended: float  # time.time() at the end of the cycle
    stats: int  # requests the primary's server saw while faulty (none while down)


@dataclass
class Figures:
    failover: float  # kill -> end of the last call that tried the primary before its breaker
    before_open: int  # attempts on the primary in that time
    trials: int  # attempts on the primary after that, until it healed
    server_saw: int
    first_back: float  # heal -> start of the first call the primary served
    all_back: float  # heal -> start of the last call the backup served


class Load(threading.Thread):
    """Publishes one task every 1/rate seconds until stopped."""

    def __init__(self, apps: ModuleType, rate: float) -> None:
        super().__init__(daemon=True)
        self.apps, self.rate = apps, rate
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        with denied_join_result():
            while not self.halt.is_set():
                self.apps.ask.apply_async((self.sent,))
                self.sent += 1
                self.halt.wait(max(0.0, began + self.sent / self.rate - time.monotonic()))


def primary_attempts(record: dict[str, Any]) -> int:
    """Calls this chain call made to the primary: all of them, but the backup's one answer."""
    return int(record["attempts"]) - (record["provider"] != "chat-primary")


def is_trial(record: dict[str, Any]) -> bool:
    """A half-open trial (its steps say so when it failed)."""
    return any("trial" in step for step in record["steps"])


def figures(cycle: Cycle, records: list[dict[str, Any]]) -> Figures:
    killed, healed = cycle.killed, cycle.healed
    during = [
        r
        for r in records
        if r["end"] >= killed
        and r["start"] < healed
        and primary_attempts(r)
        and r["provider"] != "chat-primary"
    ]
    tried = [r for r in during if not is_trial(r)]  # before the primary's breaker opened
    after = [r for r in records if healed <= r["start"] < cycle.ended]
    on_primary = [r["start"] for r in after if r["provider"] == "chat-primary"]
    on_backup = [r["start"] for r in after if r["provider"] != "chat-primary"]
    return Figures(
        failover=max((r["end"] for r in tried), default=killed) - killed,
        before_open=sum(primary_attempts(r) for r in tried),
        trials=sum(primary_attempts(r) for r in during if is_trial(r)),
        server_saw=cycle.stats,
        first_back=(min(on_primary) - healed) if on_primary else float("nan"),
        all_back=max(on_backup, default=healed) - healed,
    )


def outage_of(index: int, args: argparse.Namespace) -> float:
    """Cycle ``index``'s outage: longer by a share of ``reset_timeout`` each cycle, so the
    recovery falls at a different point of the breaker's wait each time."""
    return float(args.outage + index * args.reset_timeout / args.cycles)


def heal(server: FaultServer, latency: float) -> None:
    if latency:
        server.set("latency", delay=latency)
    else:
        server.set("healthy")


def run(
    apps: ModuleType, db: BenchDatabase, servers: tuple[FaultServer, FaultServer], args: Any
) -> tuple[list[Cycle], list[dict[str, Any]], int]:
    primary, _ = servers
    cycles = []

    def on_primary() -> bool:
        latest = json.loads(db.client.lindex(apps.RECORDS, -1) or "{}")
        return bool(latest.get("provider") == apps.PRIMARY)

    with supervisor("_fallback_apps") as sup:
        sup.worker("failover", queues=["chat"], concurrency=CONCURRENCY, ready=apps.app)
        load_ = Load(apps, args.rate)
        load_.start()
        try:
            for index in range(args.cycles):
                wait_until(on_primary, 60.0, 0.05)
                time.sleep(args.steady)
                primary.reset()
                killed = time.time()  # the fault may hold from the moment it is asked for
                if args.fault == "errors":
                    primary.set("errors", rate=1.0, status=500)
                else:
                    primary.set(args.fault)
                time.sleep(outage_of(index, args))
                saw = primary.stats().requests
                heal(primary, args.latency)
                healed = time.time()  # once it answers again
                time.sleep(args.reset_timeout + args.steady)
                cycles.append(Cycle(killed, healed, time.time(), saw))
        finally:
            load_.halt.set()
            load_.join()
        wait_until(lambda: db.client.llen(apps.RECORDS) >= load_.sent, 60.0, 0.1)
    records = [json.loads(raw) for raw in db.client.lrange(apps.RECORDS, 0, -1)]
    return cycles, records, load_.sent


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=9)
    cli.add_argument("--fault", default="down", choices=["down", "errors", "hang"])
    cli.add_argument("--rate", type=float, default=20.0, help="tasks per second (20)")
    cli.add_argument("--cycles", type=int, help="kill/heal cycles (3, quick 1)")
    cli.add_argument("--outage", type=float, default=8.0, help="seconds the primary is down (8)")
    cli.add_argument("--steady", type=float, default=2.0, help="seconds of calm around it (2)")
    cli.add_argument("--reset-timeout", type=float, default=5.0, help="primary's breaker (5 s)")
    cli.add_argument("--timeout", default="2", help="the client's timeout (2 s)")
    cli.add_argument("--latency", type=float, default=0.02, help="a healthy answer's, s (0.02)")
    args = cli.parse_args()
    args.cycles = args.cycles or (1 if args.quick else 3)
    with (
        database(args, OWNER) as db,
        FaultServer("primary") as primary,
        FaultServer("backup") as backup,
    ):
        heal(primary, args.latency)
        heal(backup, args.latency)
        apps = load(
            db,
            "rtbench-failover",
            "_fallback_apps",
            BENCH_PRIMARY_URL=primary.openai_base_url,
            BENCH_BACKUP_URL=backup.openai_base_url,
            BENCH_TIMEOUT=args.timeout,
            BENCH_RESET_TIMEOUT=str(args.reset_timeout),
        )
        cycles, records, sent = run(apps, db, (primary, backup), args)
    report([figures(c, records) for c in cycles], len(records), sent, args)


def report(rows: list[Figures], recorded: int, sent: int, args: argparse.Namespace) -> None:
    print_table(
        f"## failover: 1 worker -c {CONCURRENCY}, {args.rate:g} tasks/s, each one chain call "
        f"(primary fail_max=3, reset_timeout={args.reset_timeout:g}s; client timeout "
        f"{args.timeout} s); the primary is `{args.fault}` for {args.outage:g} s, plus "
        f"reset_timeout/{args.cycles} more each cycle; "
        f"{recorded}/{sent} tasks answered",
        [
            "cycle (outage)",
            "every call on the backup after",
            "attempts on the dead primary until then",
            "then (half-open trials)",
            "its server saw",
            "after recovery: first call on the primary",
            "last call on the backup",
            "goal (reset_timeout + 1 s)",
        ],
        [
            [
                f"{index + 1} ({outage_of(index, args):.1f} s)",
                f"{f.failover:.2f} s",
                f.before_open,
                f.trials,
                f.server_saw,
                f"{f.first_back:.2f} s",
                f"{f.all_back:.2f} s",
                "met" if max(f.first_back, f.all_back) <= args.reset_timeout + 1 else "missed",
            ]
            for index, f in enumerate(rows)
        ],
    )
    if len(rows) > 1:
        print(
            f"failover median {statistics.median(f.failover for f in rows):.2f} s; "
            f"back on the primary median {statistics.median(f.all_back for f in rows):.2f} s"
        )


if __name__ == "__main__":
    main()
