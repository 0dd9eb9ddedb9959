"""Where the demo runs: embedded, or on a Redis under names of its own run; and its worker."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery

from resilience_tasks import ResilienceManager
from resilience_tasks.deferred import PumpThread
from resilience_tasks.demo.status import EXIT_USAGE, PROG
from resilience_tasks.state import connection


@dataclass
class Setup:
    app: Celery
    manager: ResilienceManager
    where: str
    queue: Callable[[str], str]
    cleanup: Callable[[Sequence[str]], None]
    run: str


def embedded_setup(run: str) -> Setup:
    try:
        import fakeredis
    except ImportError:
        print(
            f"{PROG}: the embedded demo needs the demo extra: "
            f"pip install 'resilience-tasks[demo]' (or give --redis-url)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE) from None
    app = Celery("resilience-demo", broker="memory://", backend="cache+memory://")
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    manager = ResilienceManager(
        f"demo-{run}", app=app, redis_client=fakeredis.FakeRedis(), pump_interval=0.2
    )
    where = "embedded: in-memory broker, in-process Redis emulation"
    return Setup(app, manager, where, queue=lambda name: name, cleanup=lambda ids: None, run=run)


def redis_setup(url: str, run: str) -> Setup:
    """Broker, results and state on ``url``, under names of this run only.

    A user's Redis may hold a real deployment's queues: the demo's worker must consume none of
    them, and two demos running at once must not take each other's tasks.
    """
    app = Celery("resilience-demo", broker=url, backend=url)
    app.conf.update(task_default_queue=f"resilience-demo.{run}", result_expires=3600)
    prefix = f"rt-demo-{run}"
    manager = ResilienceManager(
        f"demo-{run}", app=app, redis_url=url, key_prefix=prefix, pump_interval=0.2
    )

    def cleanup(task_ids: Sequence[str]) -> None:
        """Delete the run's state, queues and results: a demo leaves nothing behind."""
        client = connection.connect(url)
        try:
            keys: list[Any] = list(client.scan_iter(f"*{prefix}*", count=1000))
            for queue in app.conf.task_queues or ():
                name = queue.name
                keys += [name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"]
            keys += [f"celery-task-meta-{task_id}" for task_id in task_ids]
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()

    return Setup(
        app,
        manager,
        f"Redis at {connection.redact(url)}, run {run}",
        lambda name: f"{name}.{run}",
        cleanup,
        run,
    )


@contextmanager
def running(app: Celery, manager: ResilienceManager) -> Iterator[None]:
    """A worker in this process, plus the pump that beat would drive in a deployment."""
    from celery.contrib.testing.worker import start_worker

    with (
        start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="CRITICAL"
        ),
        PumpThread(manager.pump, 0.2),
    ):
        yield
