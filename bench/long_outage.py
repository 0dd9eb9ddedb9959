"""Long outage: what parked work costs a worker and the healthy work beside it.

Method: bench/README.md. python bench/long_outage.py [--quick] [--systems ours,pybreaker]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from types import ModuleType

import psutil  # type: ignore[import-untyped]
from _harness import load, supervisor
from celery.result import AsyncResult, denied_join_result

from resilience_tasks.testing import HTTPDependency, Mode, wait_until
from resilience_tasks.testing.bench import BenchDatabase, database, parser, print_table, ratio

OWNER = "bench/long_outage.py"
TASKS = {
    "ours": ("outage_call", "healthy_call"),
    "pybreaker": ("pb_outage_call", "pb_healthy_call"),
}


@dataclass
class Run:
    system: str
    normal: tuple[float, float]  # healthy tasks/s with no outage: before it, after recovery
    during: float  # healthy tasks/s, burst during the outage
    cpu: float  # worker CPU-seconds over the outage
    parking: float  # of which until the dependency's queue was first empty
    burst_cpu: float  # of which during the burst
    redis_cpu: float | None  # the private Redis server's, over the outage
    hits: int  # requests that reached the dead dependency
    recovered: str  # parked tasks done after recovery, and how long it took


def redis_cpu(db: BenchDatabase) -> float | None:
    """CPU-seconds of the private Redis server (``--private-redis``), else None."""
    if db.server is None:
        return None
    return float(sum(psutil.Process(db.server.pid).cpu_times()[:2]))


def burst(apps: ModuleType, db: BenchDatabase, task: str, url: str, count: int) -> float:
    """Publish ``count`` healthy tasks at once; tasks/s until the last body finished."""
    start = int(db.client.get("bench:done:healthy") or 0)
    began = time.monotonic()
    with denied_join_result():
        for _ in range(count):
            getattr(apps, task).apply_async((url,))
    if not wait_until(lambda: int(db.client.get("bench:done:healthy") or 0) >= start + count, 600):
        raise RuntimeError("the healthy burst did not finish in 600 s")
    return count / (time.monotonic() - began)


def run(apps: ModuleType, db: BenchDatabase, system: str, args: argparse.Namespace) -> Run:
    quick = args.quick
    count = 300 if quick else 1000
    parked = args.parked if args.parked is not None else count
    outage, burst_at = (20.0, 8.0) if quick else (60.0, 25.0)
    dep_task, healthy_task = TASKS[system]
    with HTTPDependency() as dep, HTTPDependency() as healthy, supervisor() as sup:
        worker = sup.worker(
            system, queues=apps.OUTAGE_QUEUES[system], concurrency=4, ready=apps.app
        )
        burst(apps, db, healthy_task, healthy.url, count // 5)  # warm-up
        before = burst(apps, db, healthy_task, healthy.url, count)
        dep.mode = Mode.FAILING
        began, cpu0, redis0 = time.monotonic(), worker.cpu_seconds(), redis_cpu(db)
        with denied_join_result():
            ids = [getattr(apps, dep_task).apply_async((dep.url,)).id for _ in range(parked)]
        queue = apps.OUTAGE_QUEUES[system][0]
        wait_until(lambda: not db.client.llen(queue), burst_at, 0.1)
        parking = worker.cpu_seconds() - cpu0
        time.sleep(max(0.0, began + burst_at - time.monotonic()))
        burst_cpu = worker.cpu_seconds()
        during = burst(apps, db, healthy_task, healthy.url, count)
        burst_cpu = worker.cpu_seconds() - burst_cpu
        time.sleep(max(0.0, began + outage - time.monotonic()))
        cpu, hits = worker.cpu_seconds() - cpu0, dep.hits(began)
        redis1 = redis_cpu(db)
        redis_used = redis1 - redis0 if redis1 is not None and redis0 is not None else None
        dep.mode = Mode.HEALTHY
        back = time.monotonic()
        failed = sum(AsyncResult(i, app=apps.app).state == "FAILURE" for i in ids)
        wait_until(lambda: int(db.client.get("bench:done:dep") or 0) >= parked - failed, 300, 0.2)
        finished = int(db.client.get("bench:done:dep") or 0)
        recovered = f"{finished}/{parked} in {time.monotonic() - back:.0f} s ({failed} failed)"
        after = burst(apps, db, healthy_task, healthy.url, count)
    normal = (before, after)
    return Run(system, normal, during, cpu, parking, burst_cpu, redis_used, hits, recovered)


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=11)
    cli.add_argument("--systems", default="ours,pybreaker", help="in this order")
    cli.add_argument("--parked", type=int, help="tasks parked (1000, quick 300; 0: a control)")
    cli.add_argument("--reset-timeout", default="10", help="both breakers' (default 10 s)")
    args = cli.parse_args()
    runs = []
    with database(args, OWNER) as db:
        apps = load(db, "rtbench-outage", BENCH_OUTAGE_RESET=args.reset_timeout)
        for system in args.systems.split(","):
            db.reset()
            runs.append(run(apps, db, system, args))
    outage = 20 if args.quick else 60
    print_table(
        f"## long_outage: 1 worker -c 4, {outage} s outage, reset_timeout {args.reset_timeout} s",
        [
            "system",
            "healthy tasks/s: normal (before, after)",
            "during outage",
            "ratio",
            "worker CPU-s",
            "parking",
            "burst",
            "rest",
            "Redis CPU-s",
            "dependency hits",
            "parked work after recovery",
        ],
        [
            [
                r.system,
                f"{sum(r.normal) / 2:.0f} ({r.normal[0]:.0f}, {r.normal[1]:.0f})",
                f"{r.during:.0f}",
                ratio(r.during, sum(r.normal) / 2),
                f"{r.cpu:.1f}",
                f"{r.parking:.1f}",
                f"{r.burst_cpu:.1f}",
                f"{r.cpu - r.parking - r.burst_cpu:.1f}",
                f"{r.redis_cpu:.1f}" if r.redis_cpu is not None else "n/a",
                r.hits,
                r.recovered,
            ]
            for r in runs
        ],
    )


if __name__ == "__main__":
    main()
