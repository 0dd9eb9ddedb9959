"""Hedging: a provider whose slowest 10% of calls take 5 s; latency and extra calls, hedged
and not.

Method: bench/README.md. python bench/hedge.py [--quick] [--hedge-after S] [--calls N]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from types import ModuleType

from _harness import load, supervisor
from celery.result import denied_join_result

from resilience_tasks.testing import wait_until
from resilience_tasks.testing.bench import BenchDatabase, database, parser, print_table
from resilience_tasks.testing.fault_server import FaultServer

OWNER = "bench/hedge.py"
CONCURRENCY = 4


@dataclass
class Phase:
    kind: str
    latencies: list[float]
    requests: int  # that reached either provider's server
    protocols: Counter[str]
    cost: float
    seconds: float


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def phase(
    apps: ModuleType,
    db: BenchDatabase,
    kind: str,
    servers: tuple[FaultServer, FaultServer],
    args: argparse.Namespace,
) -> Phase:
    """Every call at once to the worker; each task times its own chain call."""
    for server, fraction in zip(servers, (args.fraction, args.backup_fraction), strict=True):
        server.set("slow_tail", fraction=fraction, delay=args.delay)  # the same slow calls
        server.reset()
    start = db.client.llen(apps.RECORDS)
    began = time.monotonic()
    with denied_join_result():
        for number in range(args.calls):
            apps.ask.apply_async((kind, number))
    if not wait_until(lambda: db.client.llen(apps.RECORDS) >= start + args.calls, 600, 0.05):
        raise RuntimeError(f"{kind}: the calls did not finish in 600 s")
    seconds = time.monotonic() - began
    time.sleep(args.delay)  # hedged losers still running reach their server's count too
    records = [json.loads(raw) for raw in db.client.lrange(apps.RECORDS, start, -1)]
    return Phase(
        kind,
        [r["latency"] for r in records],
        sum(server.stats().requests for server in servers),
        Counter(r["protocol"] for r in records),
        sum(r["cost"] for r in records),
        seconds,
    )


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=8)
    cli.add_argument("--calls", type=int, help="chain calls per phase (400, quick 100)")
    cli.add_argument("--hedge-after", default="0.5", help="seconds (default 0.5)")
    cli.add_argument("--fraction", type=float, default=0.1, help="slow share of calls (0.1)")
    cli.add_argument("--backup-fraction", type=float, help="the other provider's (same)")
    cli.add_argument("--delay", type=float, default=5.0, help="a slow call's seconds (5)")
    args = cli.parse_args()
    args.calls = args.calls or (100 if args.quick else 400)
    if args.backup_fraction is None:
        args.backup_fraction = args.fraction
    with (
        database(args, OWNER) as db,
        FaultServer("llm-a") as first,
        FaultServer("llm-b") as second,
    ):
        apps = load(
            db,
            "rtbench-hedge",
            "_hedge_apps",
            BENCH_PRIMARY_URL=first.openai_base_url,
            BENCH_BACKUP_URL=second.openai_base_url,
            BENCH_HEDGE_AFTER=args.hedge_after,
        )
        with supervisor("_hedge_apps") as sup:
            sup.worker("hedge", queues=["plain"], concurrency=CONCURRENCY, ready=apps.app)
            for number in range(20):  # warm-up: each pool process opens its clients
                apps.ask.apply_async(("plain", number))
            wait_until(lambda: db.client.llen(apps.RECORDS) >= 20, 120, 0.05)
            phases = [phase(apps, db, kind, (first, second), args) for kind in ("plain", "hedged")]
    report(phases, args)


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    plain = phases[0]
    print_table(
        f"## hedge: {args.calls} chain calls per phase on 1 worker -c {CONCURRENCY}; two "
        f"providers, a share of whose calls take {args.delay:g} s (spread evenly): "
        f"{args.fraction:g} of the first's, {args.backup_fraction:g} of the second's; "
        f"hedge_after={args.hedge_after} s",
        [
            "chain",
            "p50",
            "p90",
            "p99",
            "max",
            "calls over 1 s",
            "p99 vs not hedged",
            "calls reaching providers per call",
            "won by a hedge",
            "cost per call",
            "phase",
        ],
        [
            [
                p.kind,
                f"{percentile(p.latencies, 0.5) * 1000:.0f} ms",
                f"{percentile(p.latencies, 0.9) * 1000:.0f} ms",
                f"{percentile(p.latencies, 0.99) * 1000:.0f} ms",
                f"{max(p.latencies) * 1000:.0f} ms",
                sum(1 for latency in p.latencies if latency > 1.0),
                f"{percentile(p.latencies, 0.99) / percentile(plain.latencies, 0.99):.2f}x",
                f"{p.requests / len(p.latencies):.3f}",
                f"{p.protocols['hedge']}/{len(p.latencies)}",
                f"${p.cost / len(p.latencies):.4f}",
                f"{p.seconds:.1f} s",
            ]
            for p in phases
        ],
    )


if __name__ == "__main__":
    main()
