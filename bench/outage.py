"""Outage: dependency A hangs; how much of B's throughput is left, ours vs plain Celery.

Method: bench/README.md. python bench/outage.py [--quick] [--systems ours,pybreaker,...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from types import ModuleType

from _harness import load, supervisor
from celery.result import denied_join_result

from resilience_tasks.testing import wait_until
from resilience_tasks.testing.bench import BenchDatabase, database, parser, print_table
from resilience_tasks.testing.fault_server import FaultServer

OWNER = "bench/outage.py"
SYSTEMS = "tenacity,autoretry,pybreaker,ours-breaker,ours"
CONCURRENCY = 4


@dataclass
class Batch:
    """One batch of tasks alternating A, B, A, B...: B's (and A's) bodies done, and when."""

    b_done: int
    b_rate: float  # B tasks/s: done / (last B end - first publish), or done / window if cut
    b_seconds: float
    a_rate: float  # A tasks/s, the same way (0 if no A body returned)


@dataclass
class Run:
    system: str
    normal: list[Batch]
    outage: Batch
    a_hits: int  # requests that reached the hanging A during the outage batch


def batch(
    apps: ModuleType,
    db: BenchDatabase,
    system: str,
    urls: tuple[str, str],
    count: int,
    window: float,
    wait_a: bool,
) -> Batch:
    """Publish ``count`` tasks alternating A and B; wait for every B body (at most ``window``
    seconds) and, with ``wait_a`` (A is healthy), for every A body too."""
    task_a, task_b, _ = apps.SYSTEMS[system]
    keys = apps.done_key(system, "a"), apps.done_key(system, "b")
    a0, b0 = (int(db.client.llen(key)) for key in keys)
    began = time.time()
    with denied_join_result():
        for index in range(count):
            if index % 2 == 0:
                task_a.apply_async((urls[0],))
            else:
                task_b.apply_async((urls[1],))
    wanted_b = count // 2
    whole = wait_until(lambda: db.client.llen(keys[1]) - b0 >= wanted_b, window, 0.02)
    ends_b = sorted(float(x) for x in db.client.lrange(keys[1], b0, -1))
    if whole:
        seconds = ends_b[-1] - began
        b_rate = len(ends_b) / seconds
    else:
        ends_b = [end for end in ends_b if end < began + window]
        seconds, b_rate = window, len(ends_b) / window
    if wait_a:
        wait_until(lambda: db.client.llen(keys[0]) - a0 >= count - wanted_b, 120.0, 0.02)
    ends_a = sorted(float(x) for x in db.client.lrange(keys[0], a0, -1))
    a_rate = len(ends_a) / (ends_a[-1] - began) if ends_a else 0.0
    return Batch(len(ends_b), b_rate, seconds, a_rate)


def run_system(
    apps: ModuleType,
    db: BenchDatabase,
    system: str,
    deps: tuple[FaultServer, FaultServer],
    args: argparse.Namespace,
) -> Run:
    dep_a, dep_b = deps
    urls = (f"{dep_a.openai_base_url}/models", f"{dep_b.openai_base_url}/models")
    queues = apps.SYSTEMS[system][2]
    with supervisor("_outage_apps") as sup:
        sup.worker(system, queues=queues, concurrency=CONCURRENCY, ready=apps.app)
        normal = []
        for index in range(args.rounds + 1):  # the first is a warm-up
            size = max(20, args.tasks // 10) if index == 0 else args.tasks
            got = batch(apps, db, system, urls, size, 120.0, wait_a=True)
            if index:
                normal.append(got)
        dep_a.set("hang")
        dep_a.reset()
        outage = batch(apps, db, system, urls, args.tasks, args.window, wait_a=False)
        hits = dep_a.stats().requests
        healthy(dep_a, args.latency)  # frees the held requests; the worker is stopped next
    return Run(system, normal, outage, hits)


def healthy(dep: FaultServer, latency: float) -> None:
    if latency:
        dep.set("latency", delay=latency)
    else:
        dep.set("healthy")


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=10)
    cli.add_argument("--systems", default=SYSTEMS, help="in this order (default: all)")
    cli.add_argument("--tasks", type=int, default=400, help="per batch, alternating A/B")
    cli.add_argument("--rounds", type=int, help="normal batches before the outage (2, quick 1)")
    cli.add_argument("--window", type=float, help="longest outage batch, s (20, quick 10)")
    cli.add_argument("--timeout", default="2", help="the client's timeout on A and B (2 s)")
    cli.add_argument("--latency", type=float, default=0.02, help="a healthy call's, s (0.02)")
    cli.add_argument("--reset-timeout", default="10", help="every breaker's (default 10 s)")
    cli.add_argument("--a-limit", default="2", help="ours: A's Concurrency(limit=...) (2)")
    cli.add_argument("--b-limit", default=str(CONCURRENCY), help="ours: B's (default 4)")
    args = cli.parse_args()
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    args.window = args.window or (10.0 if args.quick else 20.0)
    runs = []
    with (
        database(args, OWNER) as db,
        FaultServer("dep-a") as dep_a,
        FaultServer("dep-b") as dep_b,
    ):
        healthy(dep_a, args.latency)
        healthy(dep_b, args.latency)
        apps = load(
            db,
            "rtbench-hang",
            "_outage_apps",
            BENCH_TIMEOUT=args.timeout,
            BENCH_RESET_TIMEOUT=args.reset_timeout,
            BENCH_A_LIMIT=args.a_limit,
            BENCH_B_LIMIT=args.b_limit,
        )
        for system in args.systems.split(","):
            db.reset()
            runs.append(run_system(apps, db, system, (dep_a, dep_b), args))
    report(runs, args)


def report(runs: list[Run], args: argparse.Namespace) -> None:
    bare = next((r for r in runs if r.system == "tenacity"), None)  # no retry when healthy
    bare_b = statistics.mean(b.b_rate for b in bare.normal) if bare else 0.0
    bare_a = statistics.mean(b.a_rate for b in bare.normal) if bare else 0.0
    print_table(
        f"## outage: 1 worker -c {CONCURRENCY}, {args.tasks} tasks alternating A/B, healthy "
        f"calls take {args.latency:g} s, A hangs (client timeout {args.timeout} s), "
        f"reset_timeout {args.reset_timeout} s; ours: "
        f"A Concurrency(limit={args.a_limit}), B Concurrency(limit={args.b_limit}), "
        "slow_call_duration=1.0, slow_call_max=2",
        [
            "system",
            "B tasks/s, normal (rounds)",
            "B during A's outage",
            "ratio",
            "vs plain Celery's normal",
            "B done",
            "calls reaching the hung A",
            "A tasks/s, normal (vs plain)",
        ],
        [
            [
                r.system,
                f"{statistics.mean(b.b_rate for b in r.normal):.1f} "
                f"({', '.join(f'{b.b_rate:.0f}' for b in r.normal)})",
                f"{r.outage.b_rate:.2f}",
                f"{r.outage.b_rate / statistics.mean(b.b_rate for b in r.normal):.3g}x",
                f"{r.outage.b_rate / bare_b:.3g}x" if bare_b else "n/a",
                f"{r.outage.b_done}/{args.tasks // 2} in {r.outage.b_seconds:.1f} s",
                r.a_hits,
                f"{statistics.mean(b.a_rate for b in r.normal):.1f}"
                + (
                    f" ({statistics.mean(b.a_rate for b in r.normal) / bare_a:.2f}x)"
                    if bare_a
                    else ""
                ),
            ]
            for r in runs
        ],
    )


if __name__ == "__main__":
    main()
