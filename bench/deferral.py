"""Parking 100,000 tasks for an hour: the deferred store vs Celery countdown (ETA) messages.

Method: bench/README.md. python bench/deferral.py [--quick] [--tasks N] [--sample M]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

from _harness import load, supervisor
from celery.result import denied_join_result

from resilience_tasks.testing import Supervisor, wait_until
from resilience_tasks.testing.bench import BenchDatabase, database, mib, parser, print_table, ratio

OWNER = "bench/deferral.py"
DELAY = 3600.0


def memory(db: BenchDatabase) -> tuple[int, int]:
    """(server ``used_memory``, ``MEMORY USAGE`` of this database's keys)."""
    return db.used_memory(), db.key_memory()


def per_task(after: tuple[int, int], before: tuple[int, int], count: int) -> list[float]:
    return [(a - b) / max(count, 1) for a, b in zip(after, before, strict=True)]


def settle() -> None:
    time.sleep(2.0)  # let RSS and Redis memory settle after a burst


def ours(
    apps: ModuleType, db: BenchDatabase, sup: Supervisor, args: argparse.Namespace
) -> dict[str, Any]:
    store = apps.manager._deferred  # the bulk writes straight into the store: no public API
    out: dict[str, Any] = {}
    worker = sup.worker("deferral", queues=[apps.DEFERRAL_RESOURCE], ready=apps.app)
    apps.manager.breaker(apps.DEFERRAL_RESOURCE).open()
    settle()
    out["rss_idle"] = worker.rss()[1]
    before, started = memory(db), time.perf_counter()  # real path: worker, open breaker, store
    with denied_join_result():
        ids = [apps.deferred_work.apply_async((i,)).id for i in range(args.sample)]
    if not wait_until(lambda: apps.manager.deferred_count() >= args.sample, 300):
        raise RuntimeError(f"only {apps.manager.deferred_count()}/{args.sample} were deferred")
    out["sample_rate"] = args.sample / (time.perf_counter() - started)
    out["sample_memory"] = per_task(memory(db), before, args.sample)
    settle()
    out["rss_before"] = worker.rss()[1]
    template = store.get(ids[0])  # bulk: the same message shape, written straight in
    messages = [
        dataclasses.replace(template, task_id=str(uuid.uuid4()), args=[i])
        for i in range(args.tasks)
    ]
    before, started = memory(db), time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: store.add(m, DELAY), messages, chunksize=500))
    out["add_rate"] = args.tasks / (time.perf_counter() - started)
    out["memory"] = per_task(memory(db), before, args.tasks)
    settle()
    out["rss_after"] = worker.rss()[1]
    worker.stop()  # pump: everything due at once, moved back to the broker by the driver
    apps.manager.release_deferred()
    depth, pumped, started = apps.manager.deferred_count(), 0, time.perf_counter()
    with denied_join_result():
        while time.perf_counter() - started < args.pump_seconds:
            drained = apps.manager.pump(max_seconds=1.0)
            pumped += drained.published
            if drained.failed or not drained.published:
                break
    seconds = time.perf_counter() - started
    out["pump"] = f"{pumped / seconds:.0f} ({pumped}/{depth} in {seconds:.1f} s)"
    return out


def countdown(
    apps: ModuleType, db: BenchDatabase, sup: Supervisor, args: argparse.Namespace
) -> dict[str, Any]:
    queue = apps.DEFERRAL_COUNTDOWN_QUEUE
    out: dict[str, Any] = {}
    worker = sup.worker("countdown", queues=[queue], ready=apps.app)
    settle()
    out["rss_before"] = worker.rss()[1]
    before, started = memory(db), time.perf_counter()
    with denied_join_result():
        for i in range(args.tasks):
            apps.countdown_work.apply_async((i,), countdown=DELAY)
    out["add_rate"] = args.tasks / (time.perf_counter() - started)
    client = db.client
    wait_until(lambda: client.hlen("unacked") >= args.tasks and not client.llen(queue), 120, 0.2)
    out["received"] = int(client.hlen("unacked"))  # held by the worker, as ETA messages
    settle()
    out["memory"] = per_task(memory(db), before, out["received"])
    out["rss_after"] = worker.rss()[1]
    worker.kill()  # a warm shutdown would restore every message first
    return out


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=15)
    cli.add_argument("--tasks", type=int, help="tasks parked (default 100000, quick 10000)")
    cli.add_argument("--sample", type=int, help="deferred through the worker (2000, quick 500)")
    cli.add_argument("--pump-seconds", type=float, default=30.0, help="pump time budget")
    args = cli.parse_args()
    args.tasks = args.tasks or (10_000 if args.quick else 100_000)
    args.sample = args.sample or (500 if args.quick else 2000)
    with database(args, OWNER) as db, supervisor() as sup:
        apps = load(db, "rtbench-deferral")
        mine = ours(apps, db, sup, args)
        db.reset()
        base = countdown(apps, db, sup, args)
        foreign = db.foreign_clients(600)
    grown = mine["rss_after"] - mine["rss_before"]
    held = base["rss_after"] - base["rss_before"]
    print_table(
        f"## deferral: {args.tasks} tasks parked for {DELAY:g} s, worker -c 2",
        ["measure", "ours: deferred store", "countdown=3600", "ratio"],
        [
            [
                "Redis used_memory per task (B)",
                f"{mine['memory'][0]:.0f}",
                f"{base['memory'][0]:.0f}",
                ratio(mine["memory"][0], base["memory"][0]),
            ],
            [
                "MEMORY USAGE per task (B, this db)",
                f"{mine['memory'][1]:.0f}",
                f"{base['memory'][1]:.0f}",
                ratio(mine["memory"][1], base["memory"][1]),
            ],
            ["worker RSS growth while parked", mib(grown), mib(held), ratio(grown, held)],
            ["parked (received by the worker)", args.tasks, f"{base['received']}/{args.tasks}", ""],
            [
                "parking rate (tasks/s)",
                f"{mine['add_rate']:.0f} (direct add, 4 threads)",
                f"{base['add_rate']:.0f} published",
                "",
            ],
        ],
    )
    print_table(
        f"### ours in detail ({args.sample} deferred through the worker first)",
        ["measure", "value"],
        [
            ["real path, open breaker -> store (tasks/s)", f"{mine['sample_rate']:.0f}"],
            [
                "real path, used_memory / MEMORY USAGE per task (B)",
                " / ".join(f"{m:.0f}" for m in mine["sample_memory"]),
            ],
            [
                "worker RSS: idle, after the real path, after the bulk",
                ", ".join(mib(mine[k]) for k in ("rss_idle", "rss_before", "rss_after")),
            ],
            ["pump rate, store -> broker (tasks/s)", mine["pump"]],
        ],
    )
    if foreign:
        print(f"note: clients of {', '.join(foreign)} were active: used_memory is server-wide")


if __name__ == "__main__":
    main()
