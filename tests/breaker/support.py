"""Helpers shared by the breaker tests: building breakers and moving time on the server clock.

No test here waits for a short wall-clock window: a breaker is put half-open by hand, or its
``opened_at`` (or a trial lease) is moved back on the Redis server's own clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pybreaker
import redis
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from resilience_tasks import BreakerPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.keys import KeySpace

CELERY_CONTROL = (Retry, Ignore, SoftTimeLimitExceeded)


class Recorder(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    """Records every listener event; notices two listener calls running at once."""

    def __init__(self, pause: float = 0.0) -> None:
        self.events: list[tuple[str, ...]] = []
        self.pause = pause
        self.inside = 0
        self.overlaps = 0
        self._guard = threading.Lock()

    def _enter(self, event: tuple[str, ...]) -> None:
        with self._guard:
            self.inside += 1
            self.overlaps += self.inside > 1
        if self.pause:
            time.sleep(self.pause)
        self.events.append(event)
        with self._guard:
            self.inside -= 1

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self._enter(("before",))

    def state_change(self, cb: Any, old: Any, new: Any) -> None:
        self._enter(("state", old.name if old else "", new.name))

    def failure(self, cb: Any, exc: BaseException) -> None:
        self._enter(("failure", type(exc).__name__))

    def success(self, cb: Any) -> None:
        self._enter(("success",))

    def states(self) -> list[tuple[str, ...]]:
        return [event[1:] for event in self.events if event[0] == "state"]


def make(
    client: redis.Redis,
    prefix: str,
    listeners: tuple[Any, ...] = (),
    throw_new_error_on_trip: bool = True,
    **policy: Any,
) -> FleetBreaker:
    """A breaker for resource ``dep`` under ``prefix``, as the Celery adapter builds it."""
    return FleetBreaker(
        "dep",
        BreakerPolicy(**policy),
        RedisFleetStorage(client, "dep", KeySpace(prefix)),
        listeners=listeners,
        not_failures=CELERY_CONTROL,
        throw_new_error_on_trip=throw_new_error_on_trip,
    )


def server_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


def age(breaker: FleetBreaker, client: redis.Redis, seconds: float) -> None:
    """Pretend the breaker opened ``seconds`` ago, on the server's clock."""
    client.hset(breaker._storage.key, "opened_at", repr(server_now(client) - seconds))


def expire_leases(breaker: FleetBreaker, client: redis.Redis) -> None:
    """Make every trial lease in flight lapse now, on the server's clock."""
    leases = breaker._storage.leases_key
    past = server_now(client) - 1
    for token in client.zrange(leases, 0, -1):
        client.zadd(leases, {token: past})


def fail() -> None:
    raise ConnectionError("dependency down")


def ok() -> str:
    return "ok"
