"""Thundering herd on a dead dependency: how many calls reach it while the breaker is open?

Method: bench/README.md. python bench/breaker_herd.py [--quick] [--hold S]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import urllib.request
from collections import Counter
from types import ModuleType
from typing import Any

import pybreaker
import redis
from _harness import load, supervisor
from celery.result import AsyncResult

from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.manager import CONTROL_QUEUE
from resilience_tasks.policies import BreakerPolicy
from resilience_tasks.state.keys import KeySpace
from resilience_tasks.testing import HTTPDependency, Mode, wait_until
from resilience_tasks.testing.bench import database, parser, print_table, ratio

OWNER = "bench/breaker_herd.py"
PREFIX = "rtbench-herd"
FAIL_MAX, RESET_TIMEOUT, REFUSED_SLEEP = 5, 1.0, 0.010


def make_breaker(kind: str, client: redis.Redis) -> pybreaker.CircuitBreaker:
    if kind == "ours":
        policy = BreakerPolicy(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)
        return FleetBreaker(
            "herd-lib", policy, RedisFleetStorage(client, "herd-lib", KeySpace(PREFIX))
        )
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=PREFIX)
    return pybreaker.CircuitBreaker(FAIL_MAX, RESET_TIMEOUT, state_storage=storage)


def hammer(kind: str, url: str, redis_url: str, start_at: float, seconds: float) -> dict[str, int]:
    """One OS process of the herd: call the dependency through the breaker for ``seconds``."""
    breaker = make_breaker(kind, redis.Redis.from_url(redis_url))
    counts: Counter[str] = Counter()
    time.sleep(max(0.0, start_at - time.monotonic()))  # CLOCK_MONOTONIC is system-wide
    while time.monotonic() < start_at + seconds:
        try:
            breaker.call(lambda: urllib.request.urlopen(url, timeout=5.0).close())
            counts["succeeded"] += 1
        except pybreaker.CircuitBreakerError:  # our BreakerOpenError is a subclass
            counts["refused"] += 1
            time.sleep(REFUSED_SLEEP)
        except OSError:
            counts["failed"] += 1
    return dict(counts)


def library_level(kind: str, dep: HTTPDependency, url: str, args: argparse.Namespace) -> list[Any]:
    """``--processes`` spawned processes start together and hammer for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(args.processes + 1)
    with context.Pool(args.processes, ready.wait, (120,)) as pool:
        ready.wait(120)  # every process is up before the clock starts
        begin = time.monotonic() + 0.2
        work = [(kind, dep.url, url, begin, args.seconds)] * args.processes
        calls: Counter[str] = Counter()
        for counts in pool.starmap(hammer, work):
            calls.update(counts)
    label = "ours: FleetBreaker" if kind == "ours" else "pybreaker + CircuitRedisStorage"
    return [label, dep.hits(begin), dep.per_second(begin, int(args.seconds)), calls]


def celery_level(apps: ModuleType, dep: HTTPDependency, args: argparse.Namespace) -> list[str]:
    """Tasks submitted at ``--rate`` for the outage, then the dependency comes back."""
    with supervisor() as sup:
        sup.worker("herd", queues=[apps.HERD_RESOURCE], concurrency=8, ready=apps.app)
        sup.worker(
            "herd-pump",
            queues=[f"{CONTROL_QUEUE}.{apps.manager.team}"],
            concurrency=1,
            ready=apps.app,
        )
        sup.beat()
        dep.mode = Mode.FAILING
        mark, total = time.monotonic(), int(args.seconds * args.rate)
        results = []
        for index in range(total):
            time.sleep(max(0.0, mark + index / args.rate - time.monotonic()))
            results.append(apps.call_dependency.apply_async((dep.url,)))
        time.sleep(max(0.0, mark + args.seconds - time.monotonic()))
        hits, per_second = dep.hits(mark), dep.per_second(mark, int(args.seconds))
        dep.mode, back = Mode.HEALTHY, time.monotonic()
        wait_until(lambda: all(r.ready() for r in results), 120, 0.05)
        recovery = time.monotonic() - back
    states = Counter(AsyncResult(r.id, app=apps.app).state for r in results)
    done = total - sum(n for s, n in states.items() if s not in ("SUCCESS", "FAILURE"))
    return [
        f"{hits} ({' '.join(map(str, per_second))})",
        f"{done}/{total} in {recovery:.1f} s",
        f"{states['SUCCESS']} SUCCESS, {states['FAILURE']} FAILURE",
    ]


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=13)
    cli.add_argument("--seconds", type=float, help="outage length (default 10, quick 4)")
    cli.add_argument("--processes", type=int, default=8, help="herd size (default 8)")
    cli.add_argument("--rate", type=float, help="tasks per second (default 40, quick 20)")
    cli.add_argument("--hold", type=float, default=0.0, help="hang S seconds before each 503")
    args = cli.parse_args()
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.rate = args.rate or (20.0 if args.quick else 40.0)
    mode = Mode.HANGING if args.hold else Mode.FAILING
    with database(args, OWNER) as db, HTTPDependency(mode, hang_seconds=args.hold) as dep:
        lib = [library_level(kind, dep, db.url, args) for kind in ("ours", "pybreaker")]
        celery = celery_level(load(db, PREFIX), dep, args)
    baseline = lib[1][1]
    print_table(
        f"## breaker_herd (a): {args.processes} processes, {args.seconds:g} s, dependency "
        f"{mode.value}, fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT:g}s",
        ["breaker", "dependency hits", "vs pybreaker", "hits per second", "calls (refused)"],
        [
            [
                label,
                hits,
                ratio(hits, baseline),
                " ".join(map(str, per_s)),
                f"{sum(calls.values())} ({calls['refused']})",
            ]
            for label, hits, per_s, calls in lib
        ],
    )
    print_table(
        f"## breaker_herd (b): 1 worker -c 8, {args.rate:g} tasks/s for {args.seconds:g} s, "
        "beat-driven pump",
        ["dependency hits (per second)", "resolved after recovery", "states"],
        [celery],
    )


if __name__ == "__main__":
    main()
