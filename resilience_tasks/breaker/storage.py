"""pybreaker storage backed by Redis, with the atomic operations a fleet needs.

The plain ``CircuitBreakerStorage`` properties (``state``, ``counter``, ``opened_at``...) are
kept so pybreaker code and tools can read the breaker; the fleet logic itself only uses the
three atomic operations (``admit``, ``record_failure``, ``record_success``), one Lua script and
one round trip each. Written by hand because pybreaker's own ``CircuitRedisStorage`` moves state
with separate GET/SET calls, which lets every process run its own half-open trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker
import redis

from resilience_tasks.breaker import scripts
from resilience_tasks.policies import BreakerPolicy
from resilience_tasks.state.keys import KeySpace

_NO_DELIVERY_KEY = "-"


@dataclass(frozen=True)
class Admission:
    """The breaker's answer to "may I call the dependency now?"."""

    allowed: bool
    trial: bool
    state: str
    failures: int
    retry_after: float
    deliveries: int
    token: str
    transition: tuple[str, str] | None = None
    watched: tuple[bytes | None, ...] = ()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisFleetStorage(pybreaker.CircuitBreakerStorage):
    """Breaker state for one resource, shared by every process that talks to the same Redis."""

    def __init__(self, client: redis.Redis, resource: str, keys: KeySpace | None = None) -> None:
        super().__init__(resource)
        keys = keys or KeySpace()
        self._client = client
        self._key = keys.breaker(resource)
        self._keys_all = [
            self._key,
            keys.trial_leases(resource),
            keys.call_window(resource),
            keys.failure_window(resource),
        ]
        self._admit = client.register_script(scripts.ADMIT)
        self._failure = client.register_script(scripts.RECORD_FAILURE)
        self._success = client.register_script(scripts.RECORD_SUCCESS)
        self._force = client.register_script(scripts.FORCE_STATE)

    # -- atomic operations used by FleetBreaker ------------------------------------------------

    def admit(
        self,
        policy: BreakerPolicy,
        token: str,
        delivery_key: str | None = None,
        delivery_ttl: int = 0,
        watch: tuple[str, ...] = (),
    ) -> Admission:
        keys = [*self._keys_all[:3], delivery_key or _NO_DELIVERY_KEY, *watch]
        args: list[Any] = [
            policy.reset_timeout,
            policy.trial_calls,
            policy.trial_lease,
            policy.rate_window,
            token,
            delivery_ttl if delivery_key else 0,
        ]
        decision, state, failures, wait, deliveries, transition, watched = self._admit(keys, args)
        moved = _text(transition)
        return Admission(
            allowed=int(decision) > 0,
            trial=int(decision) == 2,
            state=_text(state),
            failures=int(failures),
            retry_after=float(_text(wait)),
            deliveries=int(deliveries),
            token=token,
            transition=tuple(moved.split(">")) if moved else None,  # type: ignore[arg-type]
            watched=tuple(value or None for value in watched),
        )

    def release_trial(self, token: str) -> None:
        """Give back a trial lease without a verdict (the call never went out)."""
        self._client.zrem(self._keys_all[1], token)

    def record_failure(self, policy: BreakerPolicy, token: str) -> tuple[str, str]:
        args: list[Any] = [
            policy.fail_max,
            token,
            policy.rate_window,
            policy.min_calls,
            policy.failure_rate or 0,
        ]
        old, new, _ = self._failure(self._keys_all, args)
        return _text(old), _text(new)

    def record_success(self, policy: BreakerPolicy, token: str) -> tuple[str, str]:
        old, new = self._success(self._keys_all[:2], [token, policy.success_threshold])
        return _text(old), _text(new)

    def force(self, state: str) -> tuple[str, str]:
        old, new = self._force(self._keys_all, [state])
        return _text(old), _text(new)

    # -- pybreaker's storage interface ---------------------------------------------------------

    @property
    def state(self) -> str:
        value = self._client.hget(self._key, "state")
        return _text(value) if value is not None else pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self.force(state)

    def increment_counter(self) -> None:
        self._client.hincrby(self._key, "failures", 1)

    def reset_counter(self) -> None:
        self._client.hset(self._key, "failures", 0)

    def increment_success_counter(self) -> None:
        self._client.hincrby(self._key, "successes", 1)

    def reset_success_counter(self) -> None:
        self._client.hset(self._key, "successes", 0)

    @property
    def counter(self) -> int:
        return int(self._client.hget(self._key, "failures") or 0)

    @property
    def success_counter(self) -> int:
        return int(self._client.hget(self._key, "successes") or 0)

    @property
    def opened_at(self) -> datetime | None:
        value = self._client.hget(self._key, "opened_at")
        return datetime.fromtimestamp(float(_text(value)), UTC) if value else None

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self._client.hset(self._key, "opened_at", when.timestamp())
