"""Fleet rate limits: ours vs Celery's ``rate_limit`` vs Dramatiq's ``WindowRateLimiter``.

One limit, 20 calls per second, meant for the whole fleet. For each system and each number of
worker processes N (1, 2, 4, 8; quick: 1, 2, 4) the driver

1. flushes the Redis database and enqueues the whole backlog (300 tasks; quick: 100), each task
   with its own number ``n``;
2. starts N worker processes, each with concurrency 1 (apps in ``bench/_rate_apps.py``):
   * Celery (ours and Celery's own): N x ``celery -A _rate_apps:<app> worker -P solo`` (one
     process each), ``--without-heartbeat --without-gossip --without-mingle``;
   * Dramatiq: N x ``dramatiq _rate_apps:dramatiq_broker --processes 1 --threads 1`` (a
     supervisor process and one worker process with one thread each);
   * ours also runs ``celery -A _rate_apps:ours_app beat`` (the production way: beat sends the
     manager's pump task every ``pump_interval`` = 0.5 s to ``resilience.control``, which the
     same N workers consume besides the resource's queue);
3. waits until every task body has run once (or the timeout: 180 s from enqueueing, quick
   60 s; or 10 s without progress while tasks are missing and none waits anywhere in Redis),
   waits 2 s more to catch late duplicates, and stops the workers (SIGTERM to every process
   group, SIGKILL after 5 s).

Every task body records when it started (``time.time()``; all processes share one clock).
From the sorted start times t_0 ... t_last:

* drain: t_last - t_0, against the ideal backlog / limit (15 s; a perfect moving window that
  admits 20 at once then 20 every second would show 14 s, 0.93x); also enqueue -> last finish
  (start of enqueueing to the end of the last body: includes worker start-up);
* steady rate: the rate after the first second (which a full backlog may spend on a burst):
  starts in [t_0 + 1, t_0 + 1 + K) divided by K, K the number of whole seconds between t_0 + 1
  and t_last (the fraction of a second before t_last is left out: a limiter that admits its
  batch of 20 at the start of each second would otherwise read high or low depending on where
  the last batch falls); "n/a" when the backlog drained in less than 2 s;
* busiest second: the most starts in any sliding interval [t, t + 1) (max over t = each start);
  a fleet-wide limit of 20/s allows at most 20;
* lost: tasks that never ran (with a timeout, those still waiting somewhere are counted apart);
  duplicates: bodies that ran more than once for the same task number.

For ours the workers also note when each granting ``acquire`` call began and returned
(``_rate_apps`` wraps the limiter's ``acquire``, no extra round trip): the most grants whose
whole call lies inside one sliding second tells whether the limiter itself let more than 20
through, or only the varying delay between grant and body start did.

Ours: ``manager.task(resource=..., rate_limit="20/second")`` (refusals shorter than 1 s are
waited out in the worker, longer ones go to the deferred store) and the same with
``RateLimit("20/second", max_wait_in_worker=0.0)`` (every refusal is deferred). Celery:
``@app.task(rate_limit="20/s")``, a per-worker token bucket, on a bare app with the same
settings (JSON, acks_late, prefetch multiplier 1). Dramatiq: ``with limiter.acquire():`` in the
actor, refusals raise ``RateLimitExceeded`` and are retried by the Retries middleware with
``max_retries=1000``, ``min_backoff`` 1000 ms (one window) and ``max_backoff`` 10000 ms
(Dramatiq's defaults are 15 s and 7 days). Each body sleeps 10 ms (``--work-ms``).

Nothing is asserted; the script prints what it measured. Redis database 12 (``--db``) holds the
brokers, results, limiter state and records; it is flushed before, between runs and after.

    python bench/rate_limit.py [--quick] [--workers 1,2,4,8] [--systems ours,celery,...]
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import _common as common

OWNER = "bench/rate_limit.py"
LIMIT = 20  # per second, the same as _rate_apps.LIMIT (checked in main)
CONTROL_QUEUE = "resilience.control"
#: Seconds to keep the workers running after the last task, to catch late duplicates.
GRACE = 2.0
#: Seconds between two looks at the records while a run drains.
POLL = 0.25
#: A run with tasks missing, none waiting anywhere and no progress for this long is over.
STALL = 10.0


@dataclass(frozen=True)
class System:
    """One of the compared systems: how to enqueue its task and start its workers."""

    name: str
    label: str
    kind: str  # "celery" or "dramatiq"
    app: str  # attribute of _rate_apps: the Celery app or the Dramatiq broker
    task: str  # attribute of _rate_apps: the task or actor
    queue: str
    ours: bool = False  # resilience-tasks: a beat, the control queue and a deferred store


SYSTEMS = (
    System("ours", "ours (waits <= 1 s)", "celery", "ours_app", "call", "limited-api", True),
    System(
        "ours-nowait",
        "ours, max_wait_in_worker=0",
        "celery",
        "ours_app",
        "call_nowait",
        "limited-api-nowait",
        True,
    ),
    System(
        "celery", "Celery rate_limit", "celery", "celery_app", "celery_call", "celery-rate-limited"
    ),
    System(
        "dramatiq",
        "Dramatiq WindowRateLimiter",
        "dramatiq",
        "dramatiq_broker",
        "dramatiq_call",
        "dramatiq-rate-limited",
    ),
)


@dataclass
class Run:
    """What one (system, workers) configuration did."""

    system: System
    workers: int
    backlog: int
    enqueued_at: float
    ended: str  # "" when every task ran, else "timed out" or "stalled"
    records: list[dict[str, Any]]
    still_waiting: int = 0
    dead_lettered: int = 0
    starts: list[float] = field(init=False)
    grants: list[tuple[float, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = sorted(float(r["start"]) for r in self.records)
        self.grants = sorted(
            (float(r["admitted"]), float(r["granted"])) for r in self.records if r.get("granted")
        )

    @property
    def done(self) -> int:
        return len({r["n"] for r in self.records})

    @property
    def duplicates(self) -> int:
        counts = Counter(r["n"] for r in self.records)
        return sum(count - 1 for count in counts.values() if count > 1)

    @property
    def drain(self) -> float:
        return self.starts[-1] - self.starts[0] if self.starts else 0.0

    @property
    def enqueue_to_finish(self) -> float:
        return max(float(r["end"]) for r in self.records) - self.enqueued_at

    def steady_rate(self) -> float | None:
        """Starts in [t_0 + 1, t_0 + 1 + K) / K, K = whole seconds in [t_0 + 1, t_last].

        None when the drain took less than 2 s (no whole second after the first one).
        """
        if not self.starts:
            return None
        begin = self.starts[0] + 1.0
        whole = int(self.starts[-1] - begin)
        if whole < 1:
            return None
        inside = bisect.bisect_left(self.starts, begin + whole) - bisect.bisect_left(
            self.starts, begin
        )
        return inside / whole

    def per_second(self) -> list[int]:
        """Starts in each second after the first start."""
        if not self.starts:
            return []
        buckets = [0] * (int(self.drain) + 1)
        for start in self.starts:
            buckets[int(start - self.starts[0])] += 1
        return buckets


def busiest_second(times: Sequence[float]) -> int:
    """The most entries of the sorted ``times`` in any interval [t, t + 1)."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + 1.0, lo=i) - i)
    return best


def shortest_span(times: Sequence[float], count: int) -> float | None:
    """The shortest time between the first and the last of ``count`` consecutive sorted
    ``times``: under a limit of ``count - 1`` per second it is at least 1 s."""
    spans = [times[i + count - 1] - times[i] for i in range(len(times) - count + 1)]
    return min(spans) if spans else None


def surely_within_one_second(grants: Sequence[tuple[float, float]]) -> int:
    """Lower bound of the busiest second of the limiter's grants in real time.

    ``grants`` are (call began, call returned) of each granting ``acquire``, sorted: the Lua
    script that took the unit ran in between. The most calls lying wholly inside one interval
    [t, t + 1) (t = a call's beginning) is a number of units that certainly were taken within
    one sliding second.
    """
    best = 0
    for i, (begin, _) in enumerate(grants):
        end = bisect.bisect_left(grants, (begin + 1.0,), lo=i)
        best = max(best, sum(1 for _, returned in grants[i:end] if returned < begin + 1.0))
    return best


# -- processes -------------------------------------------------------------------------------------


class Processes:
    """The subprocesses of one run, each in its own process group; all gone on ``stop``."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.logdir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=common.BENCH_DIR,
                env=common.worker_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((name, process))

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to every group at once, up to ``grace`` seconds, then SIGKILL."""
        for _, process in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        for _, process in self.started:
            common.kill_group(process)
        self.started.clear()


def worker_argv(system: System, index: int) -> list[str]:
    if system.kind == "dramatiq":
        return [
            *(sys.executable, "-m", "dramatiq", f"_rate_apps:{system.app}"),
            *("--processes", "1", "--threads", "1", "--queues", system.queue),
        ]
    queues = f"{system.queue},{CONTROL_QUEUE}" if system.ours else system.queue
    return [
        *(sys.executable, "-m", "celery", "-A", f"_rate_apps:{system.app}", "worker"),
        *("-P", "solo", "-Q", queues, "-n", f"rl{index}@{socket.gethostname()}"),
        *("-l", "WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle"),
    ]


def beat_argv(system: System, logdir: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "celery", "-A", f"_rate_apps:{system.app}", "beat"),
        *("-l", "WARNING", "-s", str(logdir / "beat-schedule")),
    ]


# -- one run ---------------------------------------------------------------------------------------


def enqueue(apps: ModuleType, system: System, backlog: int) -> None:
    task = getattr(apps, system.task)
    if system.kind == "dramatiq":
        for n in range(backlog):
            task.send(n)
        return
    # FLUSHDB removed kombu's queue bindings, but pooled connections remember having declared
    # them: a fresh connection declares them again (else the messages would not be routed).
    app = getattr(apps, system.app)
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        for n in range(backlog):
            task.apply_async((n,), producer=producer)


def queued(apps: ModuleType, database: common.BenchDatabase, system: System) -> int:
    """Messages of ``system`` waiting anywhere in Redis (queue, unacked, delay queue, store)."""
    client = database.client
    if system.kind == "dramatiq":
        total = int(client.llen(f"dramatiq:{system.queue}"))
        total += int(client.llen(f"dramatiq:{system.queue}.DQ"))
        for key in client.scan_iter("dramatiq:__acks__.*"):
            total += int(client.scard(key))
        return total
    total = int(client.llen(system.queue)) + int(client.hlen("unacked"))
    if system.ours:
        total += apps.manager.deferred.depth()
    return total


def dead_lettered(apps: ModuleType, database: common.BenchDatabase, system: System) -> int:
    if system.kind == "dramatiq":
        return int(database.client.zcard(f"dramatiq:{system.queue}.XQ"))
    return apps.manager.dead_letters.count() if system.ours else 0


def read_records(database: common.BenchDatabase, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in database.client.lrange(key, 0, -1)]


def run_one(
    apps: ModuleType,
    database: common.BenchDatabase,
    system: System,
    workers: int,
    backlog: int,
    timeout: float,
) -> Run:
    database.reset()
    logdir = Path(tempfile.mkdtemp(prefix="bench-rate-"))
    processes = Processes(logdir)
    try:
        enqueued_at = time.time()
        enqueue(apps, system, backlog)
        waiting = queued(apps, database, system)
        if waiting != backlog:
            raise RuntimeError(f"{system.name}: {waiting} of {backlog} messages reached Redis")
        if system.ours:
            processes.start("beat", beat_argv(system, logdir))
        for index in range(workers):
            processes.start(f"worker{index}", worker_argv(system, index))
        ended = ""  # "", "timed out" or "stalled"
        done, progressed = 0, time.monotonic()
        while True:
            seen = len({r["n"] for r in read_records(database, apps.RECORDS_KEY)})
            if seen >= backlog:
                time.sleep(GRACE)
                break
            if seen > done:
                done, progressed = seen, time.monotonic()
            if time.time() - enqueued_at > timeout:
                ended = "timed out"
                break
            if time.monotonic() - progressed > STALL and not queued(apps, database, system):
                ended = "stalled"  # tasks missing and nothing left anywhere: lost
                break
            processes.check_alive()
            time.sleep(POLL)
        processes.stop()
        records = read_records(database, apps.RECORDS_KEY)
        run = Run(system, workers, backlog, enqueued_at, ended, records)
        if run.done < backlog:
            run.still_waiting = queued(apps, database, system)
            run.dead_lettered = dead_lettered(apps, database, system)
        return run
    finally:
        processes.stop(grace=0.0)
        shutil.rmtree(logdir, ignore_errors=True)


# -- main ------------------------------------------------------------------------------------------


def load_apps(redis_url: str, args: Any) -> ModuleType:
    """Configure (through the environment, which workers inherit) and import ``_rate_apps``."""
    os.environ["BENCH_REDIS_URL"] = redis_url
    os.environ["BENCH_RL_WORK_MS"] = str(args.work_ms)
    os.environ["BENCH_RL_MIN_BACKOFF"] = str(args.min_backoff)
    os.environ["BENCH_RL_MAX_BACKOFF"] = str(args.max_backoff)
    if str(common.BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(common.BENCH_DIR))
    return importlib.import_module("_rate_apps")


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    cli = common.parser(__doc__.splitlines()[0], default_db=12)
    cli.add_argument(
        "--workers", type=int_list, help="worker counts (default 1,2,4,8; quick 1,2,4)"
    )
    cli.add_argument("--backlog", type=int, help="tasks enqueued per run (default 300, quick 100)")
    cli.add_argument(
        "--timeout", type=float, help="seconds per run, from enqueue (default 180, quick 60)"
    )
    cli.add_argument(
        "--systems",
        default=",".join(s.name for s in SYSTEMS),
        help="comma-separated subset of %(default)s",
    )
    cli.add_argument("--work-ms", type=float, default=10.0, help="task body duration (ms)")
    cli.add_argument(
        "--min-backoff", type=int, default=1000, help="Dramatiq min_backoff, ms (default 1000)"
    )
    cli.add_argument(
        "--max-backoff", type=int, default=10000, help="Dramatiq max_backoff, ms (default 10000)"
    )
    args = cli.parse_args()
    workers = args.workers or ([1, 2, 4] if args.quick else [1, 2, 4, 8])
    backlog = args.backlog or (100 if args.quick else 300)
    timeout = args.timeout or (60.0 if args.quick else 180.0)
    names = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(names) - {s.name for s in SYSTEMS}
    if unknown:
        cli.error(f"unknown systems {sorted(unknown)}; known: {[s.name for s in SYSTEMS]}")
    systems = [s for s in SYSTEMS if s.name in names]
    common.install_signal_handlers()

    runs: list[Run] = []
    foreign: list[str] = []
    began = time.monotonic()
    with common.redis_server(args.redis_url, args.private_redis) as base_url:
        database = common.BenchDatabase(base_url, args.db, OWNER)
        database.claim()
        try:
            apps = load_apps(database.url, args)
            assert apps.LIMIT == LIMIT, "bench/_rate_apps.py has another limit"
            for system in systems:
                for count in workers:
                    phase = time.monotonic()
                    run = run_one(apps, database, system, count, backlog, timeout)
                    foreign += database.foreign_activity(time.monotonic() - phase)
                    runs.append(run)
                    print(f"  {system.name} x{count}: {progress(run)}", file=sys.stderr)
        finally:
            database.release()
    report(runs, backlog, args, time.monotonic() - began, foreign)


def progress(run: Run) -> str:
    state = f"{run.ended}, {run.done}/{run.backlog} done" if run.ended else "done"
    return f"{state}, drain {run.drain:.1f}s, busiest second {busiest_second(run.starts)}"


# -- output ----------------------------------------------------------------------------------------


def report(runs: list[Run], backlog: int, args: Any, elapsed: float, foreign: list[str]) -> None:
    ideal = backlog / LIMIT
    print(
        f"\n## rate_limit: {backlog} tasks enqueued, then N workers (concurrency 1 each), "
        f"limit {LIMIT}/s for the fleet, ideal drain {ideal:g} s\n"
    )
    rows = []
    for run in runs:
        rate = run.steady_rate()
        busiest = busiest_second(run.starts)
        if run.ended:
            done = f"{run.ended}, {run.done}/{run.backlog} done"
            missing = run.backlog - run.done
            lost = f"{missing - run.still_waiting} ({run.still_waiting} still waiting)"
        else:
            done = f"{run.done}/{run.backlog}"
            lost = str(run.backlog - run.done)
        if run.dead_lettered:
            lost += f", of them {run.dead_lettered} dead-lettered"
        rows.append(
            [
                run.system.label,
                run.workers,
                done,
                f"{run.drain:.1f}",
                common.ratio(run.drain, ideal),
                f"{run.enqueue_to_finish:.1f}" if run.records else "n/a",
                f"{rate:.1f}" if rate is not None else "n/a",
                common.ratio(rate, LIMIT) if rate is not None else "n/a",
                busiest,
                common.ratio(busiest, LIMIT),
                lost,
                run.duplicates,
            ]
        )
    common.print_table(
        [
            "system",
            "workers",
            "done",
            "drain, first->last start (s)",
            "drain / ideal",
            "enqueue->last finish (s)",
            "steady rate (/s)",
            "rate / limit",
            "busiest second",
            "busiest / limit",
            "lost",
            "duplicates",
        ],
        rows,
    )

    print("### detail\n")
    detail = []
    for run in runs:
        resent = sum(int(r.get("resent", 0)) for r in run.records)
        ours = run.system.ours
        calls = [returned - began for began, returned in run.grants]
        lags = [float(r["start"]) - float(r["granted"]) for r in run.records if r.get("granted")]
        span = shortest_span(run.starts, LIMIT + 1)
        detail.append(
            [
                run.system.label,
                run.workers,
                f"{span * 1000:.0f}" if span is not None else "n/a",
                len({r["pid"] for r in run.records}),
                resent if run.system.name != "celery" else "n/a",
                sum(int(r.get("refused", 0)) for r in run.records) if ours else "n/a",
                surely_within_one_second(run.grants) if ours else "n/a",
                f"{max(calls) * 1000:.0f}" if calls else "n/a",
                f"{max(lags) * 1000:.0f}" if lags else "n/a",
            ]
        )
    common.print_table(
        [
            "system",
            "workers",
            f"shortest span of {LIMIT + 1} consecutive starts (ms)",
            "processes that ran tasks",
            "sent back before running (ours: deferrals, Dramatiq: retries)",
            "refused acquires",
            "grants surely within one second",
            "slowest granting acquire (ms)",
            "max grant -> body start (ms)",
        ],
        detail,
    )
    print(
        f"A limit of {LIMIT}/s means {LIMIT + 1} consecutive starts span at least 1000 ms. "
        "The last four columns are ours only. Grants surely within one second: the most "
        "granting acquire calls that began and returned inside one sliding second (a lower "
        "bound of what the limiter let through in real time; the body-start column above also "
        "includes the varying delay between grant and body).\n"
    )

    print("### starts per second after the first start\n")
    for run in runs:
        seconds = run.per_second()
        shown = " ".join(map(str, seconds[:60])) + (" ..." if len(seconds) > 60 else "")
        print(f"- {run.system.label}, {run.workers} workers: {shown}")
    print()
    print(
        f"Workers: Celery `celery worker -P solo` (one process each; ours also consumes "
        f"`{CONTROL_QUEUE}`, fed by one `celery beat` every 0.5 s), Dramatiq `dramatiq "
        f"--processes 1 --threads 1` (one worker process each). Task body {args.work_ms:g} ms. "
        f"Dramatiq retries: max_retries=1000, min_backoff={args.min_backoff} ms, "
        f"max_backoff={args.max_backoff} ms. Total time {elapsed:.0f} s.\n"
    )
    if foreign:
        dbs = sorted({entry.split(":", 1)[0] for entry in foreign})
        print(
            f"note: clients of other Redis databases ({', '.join(dbs)}) were active during the "
            "runs; the machine and the Redis server were shared, timings include their load "
            "(use --private-redis for a server of its own).\n"
        )


if __name__ == "__main__":
    main()
