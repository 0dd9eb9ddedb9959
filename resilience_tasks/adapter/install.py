"""What a ``ResilienceManager`` installs into a Celery app.

* Settings the guarantees rest on: JSON only; late acks and requeue on a lost worker (a killed
  worker's task comes back); prefetch 1 (a worker never hoards risky work); a deliberate
  Redis ``visibility_timeout`` (when a whole worker dies, its unacked messages return after it)
  and a sweep for such messages at least every 10 s rather than kombu's default 100 s.
* One queue per resource, so a worker started without ``-Q`` consumes them all and an operator
  can give a resource its own workers.
* The pump task and its beat entry, on a control queue, and a pump thread in each worker.
* Start-up checks: a worker or beat whose state Redis is unreachable stops with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps, signals
from kombu.entity import Exchange, Queue

from resilience_tasks.deferred import PumpThread
from resilience_tasks.errors import ConfigurationError, StateUnavailableError

JSON_ONLY = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "event_serializer": "json",
}

DELIVERY = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def when_configured(app: Celery, apply: Callable[[Any], None]) -> None:
    """Run ``apply(conf)`` now if the app's configuration is loaded, else right after it is."""
    if app.configured:
        apply(app.conf)
        return

    def on_configured(sender: Any, source: Any, **_: Any) -> None:
        apply(source)

    app.on_after_configure.connect(on_configured, weak=False)


def configure(app: Celery, visibility_timeout: float) -> None:
    """Install the serialization and delivery settings, keeping the user's transport options."""
    app.conf.update(JSON_ONLY)
    app.conf.update(DELIVERY)

    def merge_transport_options(conf: Any) -> None:
        options = dict(conf.broker_transport_options or {})
        options.setdefault("visibility_timeout", visibility_timeout)
        timeout = float(options["visibility_timeout"])
        if timeout <= 0:
            raise ConfigurationError(f"visibility_timeout must be > 0, got {timeout}")
        # kombu sweeps for unacked messages only every interval * throttle seconds (100 s by
        # default): a dead worker's tasks would wait that long after visibility_timeout.
        options.setdefault("unacked_restore_interval", max(1, min(10, round(timeout / 3))))
        options.setdefault("unacked_restore_throttle", 1)
        conf.broker_transport_options = options

    when_configured(app, merge_transport_options)


def add_queue(app: Celery, name: str) -> None:
    """Make sure workers without ``-Q`` consume queue ``name``."""

    def apply(conf: Any) -> None:
        queues = list(conf.task_queues or [Queue(conf.task_default_queue)])
        if all(queue.name != name for queue in queues):
            queues.append(Queue(name, Exchange(name), routing_key=name))
            conf.task_queues = queues

    when_configured(app, apply)


def add_router(app: Celery, routes: dict[str, dict[str, str]]) -> None:
    """Append ``routes`` (task name -> ``{"queue": ...}``, filled in as tasks are declared) to
    the app's routers, after the user's own so that theirs win."""

    def apply(conf: Any) -> None:
        existing = conf.task_routes
        if existing is None:
            routers = []
        elif isinstance(existing, list | tuple):
            routers = list(existing)
        else:
            routers = [existing]
        conf.task_routes = [*routers, routes]

    when_configured(app, apply)


def add_beat_entry(app: Celery, name: str, entry: dict[str, Any]) -> None:
    def apply(conf: Any) -> None:
        conf.beat_schedule = {**(conf.beat_schedule or {}), name: entry}

    when_configured(app, apply)


def pump_in_workers(app: Celery, name: str, pump: Callable[[], object], interval: float) -> None:
    """Run ``pump`` every ``interval`` seconds in a thread of each worker's main process.

    Beat's entry drives the pump too; with both, deferred work returns even while beat is
    down, and claims keep the pumps from publishing anything twice.
    """

    class DeferredPump(bootsteps.StartStopStep):  # type: ignore[misc]
        def __init__(self, worker: Any, **kwargs: Any) -> None:
            super().__init__(worker, **kwargs)
            self._thread = PumpThread(pump, interval, name=name)

        def start(self, worker: Any) -> None:
            self._thread.start()

        def stop(self, worker: Any) -> None:
            self._thread.stop()

    DeferredPump.name = name
    app.steps["worker"].add(DeferredPump)


def check_on_start(app: Celery, check: Callable[[], None]) -> None:
    """Stop a worker or beat of ``app`` with one clear line when ``check`` fails."""

    def run_check(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return
        try:
            check()
        except StateUnavailableError as exc:
            raise SystemExit(f"resilience-tasks: {exc}") from None

    signals.worker_init.connect(run_check, weak=False)
    signals.beat_init.connect(run_check, weak=False)
