"""Thundering herd on a dead dependency: how many calls reach it while the breaker is open?

The dependency is a threaded HTTP server on 127.0.0.1 (random free port) that counts every
request it receives and answers ``503`` at once (``--hold S`` delays each answer by S seconds
to simulate a hanging one instead). Both breakers use ``fail_max=5`` and ``reset_timeout=1s``.

(a) Library level: 8 OS processes (multiprocessing, spawn) each loop for 10 s calling the
    dependency through a breaker shared on Redis; when the breaker refuses, the loop sleeps
    10 ms and tries again; when the call fails it tries again at once.
    * ours: ``FleetBreaker`` + ``RedisFleetStorage`` (atomic Lua transitions, one trial lease
      fleet-wide per half-open period);
    * baseline: ``pybreaker.CircuitBreaker`` with ``pybreaker.CircuitRedisStorage``.
    Expected for ours: ``fail_max`` failures to trip it, plus the calls the other processes had
    already been admitted to while it was still closed (at most 7), then exactly one trial per
    ``reset_timeout`` fleet-wide: at most 5 + 7 + 10 in 10 s.

(b) Celery level: one ``celery worker -P prefork -c 8`` runs the resilient task
    ``_apps.call_dependency`` (``RetryPolicy.none()``), while the driver submits tasks at a
    steady rate (default 40/s) for 10 s. The deferred pump runs the production way: ``celery
    beat`` sends the manager's pump task every second to a separate one-process worker on the
    ``resilience.control`` queue. Then the dependency comes back (answers 200) and we wait
    until every ``AsyncResult`` returned by ``apply_async`` during the outage is ready. With
    ``RetryPolicy.none()`` the few calls made before the breaker opened fail for good (that is
    the policy); every other task must end SUCCESS under its original id.

Nothing is asserted; the script prints the counts and the ratios. Redis database 13 (``--db``)
holds the broker, results and breaker state; it is flushed before and after.

    python bench/breaker_herd.py [--quick]
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from types import ModuleType
from typing import Any

import _common as common
import pybreaker
import redis

from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.policies import BreakerPolicy
from resilience_tasks.state.keys import KeySpace

OWNER = "bench/breaker_herd.py"
PREFIX = "rtbench-herd"
LIB_RESOURCE = "herd-lib"
FAIL_MAX = 5
RESET_TIMEOUT = 1.0
REFUSED_SLEEP = 0.010


# -- (a) library level ---------------------------------------------------------------------------


def make_breaker(kind: str, client: redis.Redis) -> pybreaker.CircuitBreaker:
    if kind == "ours":
        return FleetBreaker(
            LIB_RESOURCE,
            BreakerPolicy(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT),
            RedisFleetStorage(client, LIB_RESOURCE, KeySpace(PREFIX)),
        )
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"{PREFIX}:pybreaker"
    )
    return pybreaker.CircuitBreaker(
        fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, state_storage=storage
    )


def hammer(
    kind: str,
    url: str,
    redis_url: str,
    seconds: float,
    go: Event,
    start_at: Any,
    ready: Any,
    results: Any,
) -> None:
    """One OS process of the herd: call the dependency through the breaker for ``seconds``."""
    client = redis.Redis.from_url(redis_url)
    breaker = make_breaker(kind, client)

    def request() -> int:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return int(response.status)

    counts: Counter[str] = Counter()
    ready.put(True)
    go.wait()
    begin = float(start_at.value)
    time.sleep(max(0.0, begin - time.monotonic()))  # CLOCK_MONOTONIC is system-wide
    while time.monotonic() < begin + seconds:
        try:
            breaker.call(request)
            counts["succeeded"] += 1
        except pybreaker.CircuitBreakerError:  # our BreakerOpenError is a subclass
            counts["refused"] += 1
            time.sleep(REFUSED_SLEEP)
        except (urllib.error.URLError, OSError):
            counts["failed"] += 1
    results.put(dict(counts))


def collect(source: Any, herd: list[Any], timeout: float) -> list[Any]:
    """One item from each herd process; fail fast if one of them dies."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(items) < len(herd):
        try:
            items.append(source.get(timeout=0.5))
        except queue.Empty:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in herd):
                raise RuntimeError("a herd process died or hung") from None
    return items


@dataclass
class HerdResult:
    label: str
    hits: int
    per_second: list[int]
    calls: Counter[str]


def library_level(
    kind: str, server: common.DependencyServer, redis_url: str, processes: int, seconds: float
) -> HerdResult:
    """``processes`` spawned processes start together and hammer for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    start_at = context.Value("d", 0.0)
    ready, results = context.Queue(), context.Queue()
    herd = [
        context.Process(
            target=hammer,
            args=(kind, server.url, redis_url, seconds, go, start_at, ready, results),
            daemon=True,
        )
        for _ in range(processes)
    ]
    try:
        for process in herd:
            process.start()
        collect(ready, herd, timeout=120)
        begin = time.monotonic() + 0.2
        start_at.value = begin
        go.set()
        calls: Counter[str] = Counter()
        for counts in collect(results, herd, timeout=seconds + 60):
            calls.update(counts)
        for process in herd:
            process.join(10)
    finally:
        for process in herd:
            if process.is_alive():
                process.kill()
                process.join(5)
    label = "ours: FleetBreaker" if kind == "ours" else "pybreaker + CircuitRedisStorage"
    return HerdResult(label, server.hits(begin), server.per_second(begin, int(seconds)), calls)


# -- (b) Celery level ----------------------------------------------------------------------------


@dataclass
class CeleryResult:
    submitted: int
    outage_hits: int
    per_second: list[int]
    succeeded: int
    failed: int
    unfinished: int
    states: Counter[str]
    recovery_seconds: float
    recovery_hits: int
    breaker_state: str


def celery_level(
    apps: ModuleType,
    server: common.DependencyServer,
    sup: common.Supervisor,
    seconds: float,
    rate: float,
    recovery_timeout: float,
) -> CeleryResult:
    sup.worker(apps.app, "herd", [apps.HERD_RESOURCE], "prefork", 8)
    sup.worker(apps.app, "herd-pump", ["resilience.control"], "prefork", 1)
    sup.beat()
    breaker = apps.manager.breaker(apps.HERD_RESOURCE)
    breaker.close()
    server.status = 503

    results = []
    mark = time.monotonic()
    total = int(seconds * rate)
    for index in range(total):
        delay = mark + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        results.append(apps.call_dependency.apply_async((server.url,)))
    time.sleep(max(0.0, mark + seconds - time.monotonic()))
    outage_hits = server.hits(mark, mark + seconds)
    per_second = server.per_second(mark, int(seconds))

    server.status = 200
    back = time.monotonic()
    pending = list(results)
    while pending and time.monotonic() - back < recovery_timeout:
        pending = [result for result in pending if not result.ready()]
        if pending:
            time.sleep(0.05)
    recovery = time.monotonic() - back
    states = Counter(result.state for result in results)
    succeeded = sum(1 for r in results if r.state == "SUCCESS" and r.result == 200)
    return CeleryResult(
        submitted=total,
        outage_hits=outage_hits,
        per_second=per_second,
        succeeded=succeeded,
        failed=states.get("FAILURE", 0),
        unfinished=len(pending),
        states=states,
        recovery_seconds=recovery,
        recovery_hits=server.hits(back),
        breaker_state=breaker.current_state,
    )


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    cli = common.parser(__doc__.splitlines()[0], default_db=13)
    cli.add_argument("--seconds", type=float, help="outage length (default 10, quick 4)")
    cli.add_argument("--processes", type=int, default=8, help="herd size (default 8)")
    cli.add_argument("--rate", type=float, help="tasks submitted per second (default 40, quick 20)")
    cli.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds the dependency holds each request before its 503",
    )
    args = cli.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    rate = args.rate or (20.0 if args.quick else 40.0)
    common.install_signal_handlers()

    with common.redis_server(args.redis_url, args.private_redis) as base_url:
        database = common.BenchDatabase(base_url, args.db, OWNER)
        database.claim()
        try:
            with common.DependencyServer(status=503, hold=args.hold) as server:
                lib = [
                    library_level(kind, server, database.url, args.processes, seconds)
                    for kind in ("ours", "pybreaker")
                ]
                apps = common.load_apps(database.url, PREFIX)
                with common.Supervisor() as sup:
                    celery = celery_level(apps, server, sup, seconds, rate, recovery_timeout=120.0)
        finally:
            database.release()
    report(lib, celery, seconds, rate, args)


def report(
    lib: list[HerdResult], celery: CeleryResult, seconds: float, rate: float, args: Any
) -> None:
    ours, baseline = lib
    answer = f"held {args.hold}s then 503" if args.hold else "immediate 503"
    print(
        f"\n## breaker_herd: dead dependency ({answer}), fail_max={FAIL_MAX}, "
        f"reset_timeout={RESET_TIMEOUT:g}s, {seconds:g}s outage\n"
    )
    print(
        f"### (a) library level: {args.processes} OS processes, refused calls sleep "
        f"{REFUSED_SLEEP * 1000:g} ms\n"
    )
    common.print_table(
        [
            "breaker",
            "dependency hits",
            "hits / s",
            "vs pybreaker",
            "hits per second",
            "breaker calls (refused)",
        ],
        [
            [
                r.label,
                r.hits,
                f"{r.hits / seconds:.1f}",
                common.ratio(r.hits, baseline.hits),
                " ".join(map(str, r.per_second)),
                f"{sum(r.calls.values())} ({r.calls['refused']})",
            ]
            for r in (ours, baseline)
        ],
    )
    trials = int(seconds / RESET_TIMEOUT)
    in_flight = args.processes - 1
    print(
        f"expected for ours: {FAIL_MAX} failures to trip + at most {in_flight} calls the other "
        f"processes had already been admitted to while it was closed, then 1 trial per "
        f"{RESET_TIMEOUT:g}s (<= {trials}): <= {FAIL_MAX + in_flight + trials}; measured "
        f"{ours.hits} ({ours.per_second[0]} in the first second, "
        f"{sum(ours.per_second[1:])} in the next {len(ours.per_second) - 1}). "
        f"ours/pybreaker = {common.ratio(ours.hits, baseline.hits)}\n"
    )

    print(
        f"### (b) Celery level: 1 worker -P prefork -c 8, {celery.submitted} tasks submitted "
        f"at {rate:g}/s for {seconds:g}s, pump driven by celery beat (1 s)\n"
    )
    common.print_table(
        ["measure", "value"],
        [
            ["dependency hits during the outage", celery.outage_hits],
            ["hits per second", " ".join(map(str, celery.per_second))],
            [
                "ratio vs pybreaker's hits in (a)",
                common.ratio(celery.outage_hits, baseline.hits),
            ],
            [
                "tasks resolved after recovery",
                f"{celery.submitted - celery.unfinished}/"
                f"{celery.submitted} in "
                f"{celery.recovery_seconds:.2f}s",
            ],
            ["  SUCCESS (returned 200, same task id)", f"{celery.succeeded}/{celery.submitted}"],
            ["  FAILURE (ran before the breaker opened, RetryPolicy.none())", celery.failed],
            ["  not finished", celery.unfinished],
            ["dependency hits after recovery", celery.recovery_hits],
            ["breaker state at the end", celery.breaker_state],
        ],
    )
    odd = {k: v for k, v in celery.states.items() if k not in ("SUCCESS", "FAILURE")}
    if odd:
        print(f"unfinished task states: {dict(odd)}\n")


if __name__ == "__main__":
    main()
