"""Fleet rate limits: ours vs Celery's ``rate_limit`` vs Dramatiq's ``WindowRateLimiter``.

Method: bench/README.md. python bench/rate_limit.py [--quick] [--workers 1,2,4,8] [--systems ...]
"""

from __future__ import annotations

import argparse
import bisect
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from _harness import load, supervisor

from resilience_tasks.manager import CONTROL_QUEUE
from resilience_tasks.testing.bench import BenchDatabase, database, parser, print_table, ratio

OWNER = "bench/rate_limit.py"
LIMIT = 20  # per second, as _rate_apps.LIMIT
GRACE, POLL, STALL = 2.0, 0.25, 10.0  # late duplicates; progress polls; no progress = lost


@dataclass(frozen=True)
class System:
    name: str
    label: str
    app: str  # attribute of _rate_apps: the Celery app or the Dramatiq broker
    task: str
    queue: str
    ours: bool = False  # a beat, the control queue and a deferred store

    @property
    def dramatiq(self) -> bool:
        return self.name == "dramatiq"


SYSTEMS = (
    System("ours", "ours (waits <= 1 s)", "ours_app", "call", "limited-api", True),
    System(
        "ours-nowait",
        "ours, max_wait_in_worker=0",
        "ours_app",
        "call_nowait",
        "limited-api-nowait",
        True,
    ),
    System("celery", "Celery rate_limit", "celery_app", "celery_call", "celery-rate-limited"),
    System(
        "dramatiq",
        "Dramatiq WindowRateLimiter",
        "dramatiq_broker",
        "dramatiq_call",
        "dramatiq-rate-limited",
    ),
)


@dataclass
class Run:
    system: System
    workers: int
    backlog: int
    ended: str  # "" when every task ran, else "timed out" or "stalled"
    records: list[dict[str, Any]]
    starts: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = sorted(float(r["start"]) for r in self.records)

    @property
    def done(self) -> int:
        return len({r["n"] for r in self.records})

    @property
    def drain(self) -> float:
        return self.starts[-1] - self.starts[0] if self.starts else 0.0

    def steady_rate(self) -> float | None:
        """Starts in [t_0 + 1, t_0 + 1 + K) / K, K = whole seconds in [t_0 + 1, t_last]."""
        begin = self.starts[0] + 1.0 if self.starts else 0.0
        whole = int(self.starts[-1] - begin) if self.starts else 0
        if whole < 1:
            return None
        inside = bisect.bisect_left(self.starts, begin + whole)
        return (inside - bisect.bisect_left(self.starts, begin)) / whole


def busiest_second(times: Sequence[float]) -> int:
    """The most of the sorted ``times`` in any interval [t, t + 1)."""
    return max(
        (bisect.bisect_left(times, t + 1.0, lo=i) - i for i, t in enumerate(times)), default=0
    )


def shortest_span(times: Sequence[float], count: int) -> float | None:
    """Shortest time from first to last of ``count`` consecutive ``times`` (>= 1 s under a
    limit of ``count - 1`` per second)."""
    return min(
        (times[i + count - 1] - times[i] for i in range(len(times) - count + 1)), default=None
    )


def grants_within_one_second(records: list[dict[str, Any]]) -> int:
    """Most granting ``acquire`` calls that began and returned inside one sliding second: a
    lower bound of what the limiter itself let through."""
    grants = sorted(
        (float(r["admitted"]), float(r["granted"])) for r in records if r.get("granted")
    )
    best = 0
    for i, (begin, _) in enumerate(grants):
        end = bisect.bisect_left(grants, (begin + 1.0,), lo=i)
        best = max(best, sum(1 for _, done in grants[i:end] if done < begin + 1.0))
    return best


def worker_argv(system: System, index: int) -> list[str]:
    if system.dramatiq:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            f"_rate_apps:{system.app}",
            "--processes",
            "1",
            "--threads",
            "1",
            "--queues",
            system.queue,
        ]
    queues = f"{system.queue},{CONTROL_QUEUE}.bench" if system.ours else system.queue
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        f"_rate_apps:{system.app}",
        "worker",
        "-P",
        "solo",
        "-Q",
        queues,
        "-n",
        f"rl{index}@{socket.gethostname()}",
        "-l",
        "WARNING",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]


def enqueue(apps: ModuleType, system: System, backlog: int) -> None:
    task = getattr(apps, system.task)
    if system.dramatiq:
        for n in range(backlog):
            task.send(n)
        return
    # FLUSHDB removed kombu's bindings; a fresh connection declares them again.
    app = getattr(apps, system.app)
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        for n in range(backlog):
            task.apply_async((n,), producer=producer)


def waiting(apps: ModuleType, db: BenchDatabase, system: System) -> int:
    """Messages of ``system`` still anywhere in Redis (queue, unacked, delay queue, store)."""
    client = db.client
    if system.dramatiq:
        keys = (f"dramatiq:{system.queue}", f"dramatiq:{system.queue}.DQ")
        acks = sum(int(client.scard(k)) for k in client.scan_iter("dramatiq:__acks__.*"))
        return sum(int(client.llen(k)) for k in keys) + acks
    total = int(client.llen(system.queue)) + int(client.hlen("unacked"))
    return total + (apps.manager.deferred_count() if system.ours else 0)


def records(db: BenchDatabase, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in db.client.lrange(key, 0, -1)]


def run_one(apps: ModuleType, db: BenchDatabase, system: System, workers: int, args: Any) -> Run:
    db.reset()
    with supervisor(f"_rate_apps:{system.app}") as sup:
        enqueued = time.time()
        enqueue(apps, system, args.backlog)
        if system.ours:
            sup.beat()
        started = [sup.spawn(f"w{i}", worker_argv(system, i)) for i in range(workers)]
        ended, done, progressed = "", 0, time.monotonic()
        while (seen := len({r["n"] for r in records(db, apps.RECORDS_KEY)})) < args.backlog:
            if seen > done:
                done, progressed = seen, time.monotonic()
            if time.time() - enqueued > args.timeout:
                ended = "timed out"
                break
            if time.monotonic() - progressed > STALL and not waiting(apps, db, system):
                ended = "stalled"
                break
            dead = [p for p in started + sup.started if not p.alive]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].tail()}")
            time.sleep(POLL)
        time.sleep(0 if ended else GRACE)
    run = Run(system, workers, args.backlog, ended, records(db, apps.RECORDS_KEY))
    print(f"  {system.name} x{workers}: {ended or 'done'}, drain {run.drain:.1f}s", file=sys.stderr)
    return run


def main() -> None:
    cli = parser(__doc__.splitlines()[0], default_db=12)
    cli.add_argument("--workers", help="worker counts (default 1,2,4,8; quick 1,2,4)")
    cli.add_argument("--backlog", type=int, help="tasks per run (default 300, quick 100)")
    cli.add_argument("--timeout", type=float, help="seconds per run (default 180, quick 60)")
    cli.add_argument("--systems", default=",".join(s.name for s in SYSTEMS))
    cli.add_argument("--work-ms", default="10", help="task body duration (ms)")
    args = cli.parse_args()
    counts = [int(n) for n in (args.workers or ("1,2,4" if args.quick else "1,2,4,8")).split(",")]
    args.backlog = args.backlog or (100 if args.quick else 300)
    args.timeout = args.timeout or (60.0 if args.quick else 180.0)
    systems = [s for s in SYSTEMS if s.name in args.systems.split(",")]
    with database(args, OWNER) as db:
        apps = load(db, "rtbench-rl", "_rate_apps", BENCH_RL_WORK_MS=args.work_ms)
        runs = [run_one(apps, db, s, n, args) for s in systems for n in counts]
    report(runs, args)


def report(runs: list[Run], args: argparse.Namespace) -> None:
    ideal = args.backlog / LIMIT
    rows = []
    for run in runs:
        rate = run.steady_rate()
        span = shortest_span(run.starts, LIMIT + 1)
        dupes = sum(n - 1 for n in Counter(r["n"] for r in run.records).values())
        rows.append(
            [
                run.system.label,
                run.workers,
                f"{run.done}/{run.backlog} {run.ended}".strip(),
                f"{run.drain:.1f} ({ratio(run.drain, ideal)})",
                f"{rate:.1f}" if rate is not None else "n/a",
                busiest_second(run.starts),
                f"{span * 1000:.0f}" if span is not None else "n/a",
                grants_within_one_second(run.records) if run.system.ours else "n/a",
                sum(int(r.get("resent", 0)) for r in run.records),
                dupes,
            ]
        )
    print_table(
        f"## rate_limit: {args.backlog} tasks, N workers (-c 1 each), limit {LIMIT}/s for the "
        f"fleet, ideal drain {ideal:g} s, body {args.work_ms} ms",
        [
            "system",
            "workers",
            "done",
            "drain s (/ideal)",
            "steady /s",
            "busiest second",
            f"{LIMIT + 1} closest starts (ms)",
            "grants in 1 s",
            "sent back",
            "duplicates",
        ],
        rows,
    )
    for run in runs:
        buckets = Counter(int(t - run.starts[0]) for t in run.starts) if run.starts else {}
        line = " ".join(str(buckets.get(i, 0)) for i in range(int(run.drain) + 1))
        print(f"- {run.system.label}, {run.workers} workers, starts per second: {line}")


if __name__ == "__main__":
    main()
