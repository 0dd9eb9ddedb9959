"""Parking 100,000 tasks for an hour: the deferred store vs Celery countdown (ETA) messages.

Ours (Redis database 15 by default, flushed before and after):

1. one ``celery worker -P prefork -c 2`` consumes the resource queue of ``_apps.deferred_work``,
   whose fleet breaker is opened by hand (``reset_timeout`` 3600 s);
2. real path, a sample of M tasks (default 2000, quick 500): ``apply_async`` while the breaker
   is open; the worker runs each through the resilience layer, which refuses it, writes it to
   the deferred store, stores the DEFERRED state in the result backend and acknowledges it. We
   time it and measure the Redis memory it added;
3. bulk, N tasks (default 100,000, quick 10,000): written *directly* with
   ``manager.deferred.add(message, 3600)`` from 4 driver threads (one Lua round trip each;
   the public API has no batch call). Each message is a copy of one the worker deferred in
   step 2 with its own task id and argument, so entries have the real shape and size.
   Redis memory per task is ``INFO memory`` ``used_memory`` after minus before, divided by N
   (server-wide), and the sum of ``MEMORY USAGE`` of this database's keys (exact, this
   database only). The worker's RSS (main process, and with its pool children, via psutil) is
   read idle, after step 2 and after step 3;
4. pump: the worker is stopped (so what is published stays in the broker), every entry is made
   due at once with ``manager.deferred.release()`` and ``manager.pump()`` (``Pump.drain``) runs
   in the driver until the store is empty or ``--pump-seconds`` have passed, inside
   ``celery.result.denied_join_result()`` as in a worker (no result subscription per message).
   Rate = entries moved to the broker per second.

Baseline: a fresh worker (same options) consumes the queue of ``_apps.countdown_work`` (a bare
``@app.task``, same app settings); the driver publishes the same N tasks with
``apply_async(countdown=3600)``. Celery's consumer fetches ETA messages past the prefetch limit
and holds them in RAM until they are due; the Redis transport keeps each one in its ``unacked``
hash. We wait until the worker holds them all (queue empty, ``unacked`` = N, bounded by
``--receive-seconds``: if not all arrive, the per-message figures use the count received and say
so), then measure Redis memory and the worker's RSS the same way.

    python bench/deferral.py [--quick] [--tasks N] [--sample M]
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import _common as common
from celery.result import denied_join_result

OWNER = "bench/deferral.py"
PREFIX = "rtbench-deferral"
DELAY = 3600.0
THREADS = 4


@dataclass
class Memory:
    used: int
    keys: int

    @staticmethod
    def read(database: common.BenchDatabase) -> Memory:
        return Memory(database.used_memory(), database.key_memory())

    def per(self, before: Memory, count: int) -> tuple[float, float]:
        if not count:
            return 0.0, 0.0
        return (self.used - before.used) / count, (self.keys - before.keys) / count


@dataclass
class Ours:
    sample: int = 0
    sample_seconds: float = 0.0
    sample_memory: tuple[float, float] = (0.0, 0.0)
    sample_result_bytes: float = 0.0
    tasks: int = 0
    add_seconds: float = 0.0
    memory: tuple[float, float] = (0.0, 0.0)
    rss_idle: tuple[int, int] = (0, 0)
    rss_sample: tuple[int, int] = (0, 0)
    rss_after: tuple[int, int] = (0, 0)
    pumped: int = 0
    pump_seconds: float = 0.0
    pump_left: int = 0
    pump_failed: int = 0
    pump_unaccounted: int = 0


@dataclass
class Baseline:
    tasks: int = 0
    publish_seconds: float = 0.0
    received: int = 0
    receive_seconds: float = 0.0
    memory: tuple[float, float] = (0.0, 0.0)
    rss_idle: tuple[int, int] = (0, 0)
    rss_after: tuple[int, int] = (0, 0)


def settle() -> None:
    time.sleep(2.0)


def run_ours(
    apps: ModuleType,
    database: common.BenchDatabase,
    sup: common.Supervisor,
    tasks: int,
    sample: int,
    pump_budget: float,
) -> Ours:
    out = Ours(sample=sample, tasks=tasks)
    manager = apps.manager
    store = manager.deferred
    worker = sup.worker(apps.app, "deferral", [apps.DEFERRAL_RESOURCE], "prefork", 2)
    manager.breaker(apps.DEFERRAL_RESOURCE).open()
    settle()
    out.rss_idle = worker.rss()

    # real path: through the worker and the open breaker
    before = Memory.read(database)
    started = time.perf_counter()
    with denied_join_result():
        ids = [apps.deferred_work.apply_async((i,)).id for i in range(sample)]
    if not common.wait_until(lambda: store.depth() >= sample, timeout=300):
        raise RuntimeError(f"only {store.depth()}/{sample} tasks were deferred")
    out.sample_seconds = time.perf_counter() - started
    out.sample_memory = Memory.read(database).per(before, sample)
    result_keys = [f"celery-task-meta-{task_id}" for task_id in ids[:50]]
    out.sample_result_bytes = sum(
        int(database.client.memory_usage(key, samples=0) or 0) for key in result_keys
    ) / len(result_keys)
    settle()
    out.rss_sample = worker.rss()

    # bulk: the same message shape, written straight into the store
    template = store.get(ids[0])
    assert template is not None, "the worker did not defer the sample"
    messages = [
        dataclasses.replace(template, task_id=str(uuid.uuid4()), args=[sample + i])
        for i in range(tasks)
    ]
    before = Memory.read(database)
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, tasks, 1000):
            chunk = messages[start : start + 1000]
            list(pool.map(lambda m: store.add(m, DELAY), chunk))
    out.add_seconds = time.perf_counter() - started
    out.memory = Memory.read(database).per(before, tasks)
    del messages
    settle()
    out.rss_after = worker.rss()

    # pump: make everything due and move it back to the broker
    worker.stop()
    store.release()
    depth = store.depth()
    started = time.perf_counter()
    with denied_join_result():
        while time.perf_counter() - started < pump_budget:
            drained = manager.pump(max_seconds=min(1.0, pump_budget))
            out.pumped += drained.published
            out.pump_failed += drained.failed + drained.dead_lettered
            if drained.failed or not drained.published:
                break
    out.pump_seconds = time.perf_counter() - started
    out.pump_left = store.depth()
    out.pump_unaccounted = depth - out.pump_left - out.pumped
    return out


def run_baseline(
    apps: ModuleType,
    database: common.BenchDatabase,
    sup: common.Supervisor,
    tasks: int,
    receive_budget: float,
) -> Baseline:
    out = Baseline(tasks=tasks)
    queue = apps.DEFERRAL_COUNTDOWN_QUEUE
    worker = sup.worker(apps.app, "countdown", [queue], "prefork", 2)
    settle()
    out.rss_idle = worker.rss()
    before = Memory.read(database)
    started = time.perf_counter()
    with denied_join_result():
        for i in range(tasks):
            apps.countdown_work.apply_async((i,), countdown=DELAY)
    out.publish_seconds = time.perf_counter() - started

    client = database.client

    def received() -> int:
        return int(client.hlen("unacked"))

    common.wait_until(
        lambda: received() >= tasks and client.llen(queue) == 0,
        timeout=receive_budget,
        interval=0.2,
    )
    out.receive_seconds = time.perf_counter() - started
    out.received = received()
    settle()
    out.memory = Memory.read(database).per(before, tasks)
    out.rss_after = worker.rss()
    worker.stop(grace=0)  # SIGKILL: a warm shutdown would restore 100k messages first
    return out


def main() -> None:
    cli = common.parser(__doc__.splitlines()[0], default_db=15)
    cli.add_argument("--tasks", type=int, help="tasks parked (default 100000, quick 10000)")
    cli.add_argument(
        "--sample", type=int, help="tasks deferred through the worker (default 2000, quick 500)"
    )
    cli.add_argument(
        "--pump-seconds",
        type=float,
        default=None,
        help="time budget of the pump phase (default 30, quick 10)",
    )
    cli.add_argument(
        "--receive-seconds",
        type=float,
        default=None,
        help="time the countdown worker gets to receive the messages (default 120, quick 60)",
    )
    args = cli.parse_args()
    tasks = args.tasks or (10_000 if args.quick else 100_000)
    sample = args.sample or (500 if args.quick else 2000)
    pump_budget = args.pump_seconds or (10.0 if args.quick else 30.0)
    receive_budget = args.receive_seconds or (60.0 if args.quick else 120.0)
    common.install_signal_handlers()

    with common.redis_server(args.redis_url, args.private_redis) as base_url:
        database = common.BenchDatabase(base_url, args.db, OWNER)
        database.claim()
        foreign: list[str] = []
        try:
            apps = common.load_apps(database.url, PREFIX)
            with common.Supervisor() as sup:
                phase = time.monotonic()
                ours = run_ours(apps, database, sup, tasks, sample, pump_budget)
                foreign += database.foreign_activity(time.monotonic() - phase)
                database.reset()
                phase = time.monotonic()
                baseline = run_baseline(apps, database, sup, tasks, receive_budget)
                foreign += database.foreign_activity(time.monotonic() - phase)
        finally:
            database.release()
    report(ours, baseline, foreign)


def report(ours: Ours, base: Baseline, foreign: list[str]) -> None:
    received = base.received
    partial = received < base.tasks
    print(
        f"\n## deferral: {ours.tasks} tasks parked for {DELAY:g}s, deferred store vs Celery "
        f"countdown, worker -P prefork -c 2\n"
    )
    bulk = ours.rss_after[1] - ours.rss_sample[1]
    whole = ours.rss_after[1] - ours.rss_idle[1]
    held = base.rss_after[1] - base.rss_idle[1]
    per_base = max(received, 1)
    redis_base = (base.memory[0] * base.tasks / per_base, base.memory[1] * base.tasks / per_base)
    common.print_table(
        ["measure", "ours: deferred store", "baseline: countdown=3600", "ours / baseline"],
        [
            [
                "tasks parked",
                ours.tasks,
                f"{received}/{base.tasks} received by the worker" if partial else base.tasks,
                "",
            ],
            [
                "Redis used_memory per task (bytes)",
                f"{ours.memory[0]:.0f}",
                f"{redis_base[0]:.0f}",
                common.ratio(ours.memory[0], redis_base[0]),
            ],
            [
                "Redis MEMORY USAGE per task (bytes, this db only)",
                f"{ours.memory[1]:.0f}",
                f"{redis_base[1]:.0f}",
                common.ratio(ours.memory[1], redis_base[1]),
            ],
            [
                "worker RSS, main + pool children: before -> after",
                f"{common.mib(ours.rss_sample[1])} -> {common.mib(ours.rss_after[1])}",
                f"{common.mib(base.rss_idle[1])} -> {common.mib(base.rss_after[1])}",
                "",
            ],
            [
                "worker RSS growth while the tasks were parked",
                common.mib(bulk),
                common.mib(held),
                common.ratio(bulk, held),
            ],
            [
                "worker RSS growth per parked task (bytes)",
                f"{bulk / ours.tasks:.0f}",
                f"{held / per_base:.0f}",
                common.ratio(bulk / ours.tasks, held / per_base),
            ],
            [
                "time to park them (s)",
                f"{ours.add_seconds:.1f} (direct add, {THREADS} threads)",
                f"{base.publish_seconds:.1f} publish, {base.receive_seconds:.1f} until received",
                "",
            ],
            [
                "parking rate (tasks/s)",
                f"{ours.tasks / ours.add_seconds:.0f}",
                f"{base.tasks / base.publish_seconds:.0f} published, "
                f"{received / base.receive_seconds:.0f} received",
                "",
            ],
        ],
    )
    print(
        f"ours' 'before' is after the real-path sample; over the whole phase (idle -> after "
        f"sample and bulk) the worker grew {common.mib(whole)}: "
        f"{common.mib(whole - bulk)} while it deferred the {ours.sample} real tasks (see "
        f"below), {common.mib(bulk)} while {ours.tasks} more sat in the store.\n"
    )
    if partial:
        print(
            f"note: the countdown worker received only {received} of {base.tasks} messages in "
            f"the time allowed; its per-task figures are per message received.\n"
        )

    print(f"### ours in detail (real path sample of {ours.sample} tasks, then the bulk)\n")
    common.print_table(
        ["measure", "value"],
        [
            [
                "real path: open breaker -> deferred store, tasks/s",
                f"{ours.sample / ours.sample_seconds:.0f} ({ours.sample} in "
                f"{ours.sample_seconds:.1f}s)",
            ],
            ["real path: Redis used_memory per task (bytes)", f"{ours.sample_memory[0]:.0f}"],
            ["real path: MEMORY USAGE per task (bytes)", f"{ours.sample_memory[1]:.0f}"],
            ["  of which the DEFERRED result record (bytes)", f"{ours.sample_result_bytes:.0f}"],
            [
                "worker RSS main / total: idle",
                f"{common.mib(ours.rss_idle[0])} / {common.mib(ours.rss_idle[1])}",
            ],
            [
                f"worker RSS main / total: after the {ours.sample} real deferrals",
                f"{common.mib(ours.rss_sample[0])} / {common.mib(ours.rss_sample[1])}",
            ],
            [
                f"worker RSS main / total: after {ours.tasks} more in the store",
                f"{common.mib(ours.rss_after[0])} / {common.mib(ours.rss_after[1])}",
            ],
            [
                "pump: entries moved to the broker",
                f"{ours.pumped} in {ours.pump_seconds:.1f}s ({ours.pump_left} left)",
            ],
            ["pump rate (tasks/s)", f"{ours.pumped / ours.pump_seconds:.0f}"],
            [
                "pump: failed or dead-lettered / unaccounted for",
                f"{ours.pump_failed} / {ours.pump_unaccounted}",
            ],
        ],
    )
    note = common.foreign_note(foreign, "INFO memory used_memory")
    if note:
        print(note + "; the MEMORY USAGE rows are not affected\n")


if __name__ == "__main__":
    main()
