"""Retry storm: calls per second reaching a dependency that fails every call, 8 processes.

Method: bench/README.md. python bench/retry_budget.py [--quick] [--rate N] [--attempts N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import tenacity
from celery import Celery

from resilience_tasks import ResilienceManager, RetryBudget, retry
from resilience_tasks.testing import HTTPDependency, Mode
from resilience_tasks.testing.bench import database, parser, print_table

OWNER = "bench/retry_budget.py"
PREFIX = "rtbench-rb"
RESOURCE = "rb-dep"
BUDGET = RetryBudget(ratio=0.2, window=10, min_per_second=1.0)
FIRST_WAIT = 0.05  # tenacity's and ours: waits of 0.05, 0.1, 0.2 s... (no jitter)
KINDS = {
    "none": "no retries (the first calls)",
    "tenacity": "tenacity alone",
    "ours": "ours: @retry(resource=...), fleet RetryBudget",
}


def caller(kind: str, url: str, attempts: int, redis_url: str) -> Callable[[], None]:
    """One process's way to call the dependency."""

    def call() -> None:
        try:
            urllib.request.urlopen(url, timeout=5.0).close()
        except urllib.error.HTTPError as error:
            raise ConnectionError(f"HTTP {error.code}") from None

    if kind == "none":
        return call
    if kind == "tenacity":
        return tenacity.retry(  # type: ignore[no-any-return]
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=FIRST_WAIT, max=1.0),
            reraise=True,
        )(call)
    app = Celery("bench_rb", broker=redis_url)
    manager = ResilienceManager("bench", app=app, redis_url=redis_url, key_prefix=PREFIX)
    manager.resource(RESOURCE, retry_budget=BUDGET)
    decorate = retry(
        attempts,
        resource=RESOURCE,
        manager=manager,
        initial=FIRST_WAIT,
        maximum=1.0,
        jitter=0.0,
    )
    return decorate(call)  # type: ignore[no-any-return]


_start_line: Any = None


def _join(start_line: Any) -> None:
    """Pool initializer: the barrier every caller waits at before its first call."""
    global _start_line
    _start_line = start_line


def offer(
    kind: str, url: str, attempts: int, redis_url: str, rate: float, seconds: float
) -> dict[str, float]:
    """One process: start a first call every 1/rate seconds (later if the last one is still
    retrying) for ``seconds``; count them and their outcomes.

    Every caller waits at the barrier once its caller is built, so each runs in a process of
    its own and they all start together (CLOCK_MONOTONIC is system-wide)."""
    call = caller(kind, url, attempts, redis_url)
    counts: Counter[str] = Counter()
    _start_line.wait(120)
    start_at = time.monotonic()
    index = 0
    while True:
        due = start_at + index / rate
        if due >= start_at + seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        index += 1
        counts["first calls"] += 1
        try:
            call()
        except Exception:
            counts["failed"] += 1
    return {"start": start_at, **counts}


def phase(
    pool: Any, kind: str, dep: HTTPDependency, redis_url: str, args: argparse.Namespace
) -> list[Any]:
    work = [(kind, dep.url, args.attempts, redis_url, args.rate, args.seconds)]
    work *= args.processes
    totals: Counter[str] = Counter()
    starts = []
    for counts in pool.starmap(offer, work, chunksize=1):
        starts.append(counts.pop("start"))
        totals.update({key: int(value) for key, value in counts.items()})
    begin, seconds = min(starts), args.seconds
    hits = dep.hits(begin, begin + seconds)
    per_second = [dep.hits(begin + i, begin + i + 1) for i in range(seconds)]
    return [kind, totals["first calls"], hits, per_second]


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=7)
    cli.add_argument("--processes", type=int, default=8, help="callers (default 8)")
    cli.add_argument("--rate", type=float, default=2.0, help="first calls/s per process (2)")
    cli.add_argument("--seconds", type=int, help="per phase (default 20, quick 8)")
    cli.add_argument("--attempts", type=int, default=4, help="tenacity's and ours (default 4)")
    cli.add_argument("--kinds", default=",".join(KINDS), help="in this order")
    args = cli.parse_args()
    args.seconds = args.seconds or (8 if args.quick else 20)
    rows = []
    context = multiprocessing.get_context("spawn")
    with (
        database(args, OWNER) as db,
        HTTPDependency(Mode.FAILING) as dep,
        context.Pool(args.processes, _join, (context.Barrier(args.processes),)) as pool,
    ):
        for kind in args.kinds.split(","):
            db.reset()
            rows.append(phase(pool, kind, dep, db.url, args))
    first = next((r for r in rows if r[0] == "none"), None)
    per_s = args.seconds
    print_table(
        f"## retry_budget: {args.processes} processes, {args.rate:g} first calls/s each for "
        f"{args.seconds} s, dependency answering 503 to every call; {args.attempts} attempts, "
        f"waits from {FIRST_WAIT:g} s doubling; budget ratio={BUDGET.ratio:g}, "
        f"window={BUDGET.window}s, min_per_second={BUDGET.min_per_second:g}",
        [
            "retries",
            "first calls/s",
            "calls/s reaching the dependency",
            "per first call",
            "vs no retries",
            "budget's ceiling",
            "per second",
        ],
        [
            [
                KINDS[kind],
                f"{made / per_s:.1f}",
                f"{hits / per_s:.1f}",
                f"{hits / made:.2f}" if made else "n/a",
                f"{hits / first[2]:.2f}x" if first and first[2] else "n/a",
                f"{made / per_s * (1 + BUDGET.ratio) + BUDGET.min_per_second:.1f}/s"
                if kind == "ours"
                else "",
                " ".join(map(str, series)),
            ]
            for kind, made, hits, series in rows
        ],
    )


if __name__ == "__main__":
    main()
