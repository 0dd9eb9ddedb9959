"""What a ``ResilienceManager`` installs into a Celery app.

* Settings the guarantees rest on: JSON only; late acks and requeue on a lost worker (a killed
  worker's task comes back); prefetch 1 (a worker never hoards risky work); a deliberate
  Redis ``visibility_timeout`` (when a whole worker dies, its unacked messages return after it)
  and a sweep for such messages at least every 10 s rather than kombu's default 100 s.
* One queue per resource, so a worker started without ``-Q`` consumes them all and an operator
  can give a resource its own workers.
* The pump task and its beat entry, on a control queue, and a pump thread in each worker.
* Settings for a Redis outage (``OUTAGE``, ``REDIS_BROKER_OPTIONS``): results that cannot be
  stored are retried, not reported lost; workers reconnect to the broker however long it takes;
  sockets time out and are probed instead of hanging on a server that vanished. Each is set
  only where the user has not set it.
* Start-up checks: a worker or beat whose state Redis is unreachable stops with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps, signals
from kombu.entity import Exchange, Queue

from resilience_tasks.deferred import PumpThread
from resilience_tasks.errors import ConfigurationError, StateUnavailableError

logger = logging.getLogger(__name__)

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


#: Celery settings that let a fleet ride out a Redis outage; the user's own values win.
OUTAGE: dict[str, Any] = {
    # A result that cannot be written is retried instead of being lost after the body ran
    # (Celery's default gives up at once when the backend's GET of the old state fails, and the
    # message is acknowledged). Sleeps are drawn at random up to 0.2 * 2**n s, capped at 10 s:
    # 100 retries hold a result through about 8 minutes of outage (longer when a retry waits in
    # the Redis backend's own reconnect loop), bounded so a pool process is not blocked forever
    # and well inside the default visibility_timeout. Clients' ``get()`` retries the same way.
    "result_backend_always_retry": True,
    "result_backend_max_retries": 100,
    "result_backend_base_sleep_between_retries_ms": 200,
    "result_backend_max_sleep_between_retries_ms": 10_000,
    # The worker's consumer reconnects to the broker forever (Celery's default gives up after
    # 100 tries and the worker exits), at start-up too. ``None`` is "no limit" to kombu's
    # retry loop (``0`` would mean "no retries").
    "broker_connection_retry": True,
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,
    # A server that answers an error a fresh connection may not get (a replica's READONLY
    # after a failover) makes the consumer reconnect instead of stopping the worker.
    "broker_channel_error_retry": True,
    # The Redis result backend: fail fast on connect (Celery waits on the OS, minutes for a
    # host that vanished), detect dead peers on idle connections, retry a command that timed
    # out (SETEX and GET are idempotent), and ping a pooled connection idle for 10 s before use.
    "redis_socket_connect_timeout": 5.0,
    "redis_socket_timeout": 30.0,
    "redis_socket_keepalive": True,
    "redis_retry_on_timeout": True,
    "redis_backend_health_check_interval": 10,
}

#: kombu Redis transport options for the same outage, merged under the user's own.
#: ``retry_on_timeout`` is left off on purpose: a publish that timed out may have reached the
#: server, and kombu turns off batched publishing when it is on (an ambiguous replay).
REDIS_BROKER_OPTIONS: dict[str, Any] = {
    # Without a socket timeout a publish to a server that vanished without closing the TCP
    # connection waits forever, and kombu's health checks never run.
    "socket_timeout": 30.0,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    # kombu drops a BRPOP connection whose reply is overdue by brpop_timeout + this interval:
    # a consumer on a half-open connection recovers in about 21 s instead of 51 s.
    "health_check_interval": 10,
}

REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://", "redis+socket://", "socket://")


def when_configured(app: Celery, apply: Callable[[Any], None]) -> None:
    """Run ``apply(conf)`` now if the app's configuration is loaded, and each time it is loaded.

    Celery loads the configuration again when ``config_from_object`` is called on a configured
    app, and what was written into the old one is gone: applying again keeps it installed.
    """

    def on_configured(sender: Any, source: Any, **_: Any) -> None:
        if sender is app:
            apply(source)

    app.on_after_configure.connect(on_configured, weak=False)
    if app.configured:
        apply(app.conf)


def configure(app: Celery, visibility_timeout: float) -> None:
    """Install the serialization and delivery settings, and the outage settings the user has
    not set, keeping the user's transport options."""
    when_configured(app, lambda conf: conf.update({**JSON_ONLY, **DELIVERY}))

    def outage_defaults(conf: Any) -> None:
        for key, value in OUTAGE.items():
            if not conf.value_set_for(key):
                conf[key] = value

    def merge_transport_options(conf: Any) -> None:
        options = dict(conf.broker_transport_options or {})
        if str(conf.broker_url or "").startswith(REDIS_SCHEMES):
            for key, value in REDIS_BROKER_OPTIONS.items():
                options.setdefault(key, value)
        options.setdefault("visibility_timeout", visibility_timeout)
        timeout = float(options["visibility_timeout"])
        if timeout <= 0:
            raise ConfigurationError(f"visibility_timeout must be > 0, got {timeout}")
        # kombu sweeps for unacked messages only every interval * throttle seconds (100 s by
        # default): a dead worker's tasks would wait that long after visibility_timeout.
        options.setdefault("unacked_restore_interval", max(1, min(10, round(timeout / 3))))
        options.setdefault("unacked_restore_throttle", 1)
        conf.broker_transport_options = options

    when_configured(app, outage_defaults)
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

        def terminate(self, worker: Any) -> None:  # a cold shutdown stops it too
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


def note_task_events(app: Celery, note: Callable[[bool], None]) -> None:
    """Tell ``note`` whether a worker of ``app`` sends task events (``-E``), at its start-up
    (before the pool forks, so its processes know too)."""

    def run(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:
            note(bool(getattr(sender, "task_events", False)))

    signals.worker_init.connect(run, weak=False)


def warn_on_ready(app: Celery, warnings: Callable[[set[str]], list[str]]) -> None:
    """When a worker of ``app`` is ready, log each of ``warnings(queues it consumes)``."""

    def run(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return
        consumer = getattr(sender, "task_consumer", None)
        queues = {queue.name for queue in getattr(consumer, "queues", None) or ()}
        for warning in warnings(queues):
            logger.warning("resilience-tasks: %s", warning)

    signals.worker_ready.connect(run, weak=False)
