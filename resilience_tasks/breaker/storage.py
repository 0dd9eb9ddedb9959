"""pybreaker storage backed by Redis, with the atomic operations a fleet needs.

The plain ``CircuitBreakerStorage`` properties (``state``, ``counter``, ``opened_at``...) are
kept so pybreaker code and tools can read the breaker; the fleet logic itself only uses the
atomic operations (``admit``, ``record_failure``, ``record_success``, ``force``), one Lua script
and one round trip each. Written by hand because pybreaker's own ``CircuitRedisStorage`` moves
state with separate GET/SET calls, which lets every process run its own half-open trial.

The same scripts, keys and arguments serve the asyncio path (``asyncio_storage()``, in
``breaker/async_storage.py``): this module builds each script's ``KEYS``/``ARGV`` once for both.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pybreaker
import redis

from resilience_tasks.breaker import records, scripts
from resilience_tasks.breaker.records import Admission, Verdict
from resilience_tasks.errors import ConfigurationError
from resilience_tasks.policies import BreakerPolicy
from resilience_tasks.state.keys import KeySpace

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from resilience_tasks.breaker.async_storage import AsyncFleetStorage

Request = tuple[list[str], list[Any]]

#: Policy fields the fleet can override at run time (pybreaker's setters), stored in the hash.
OVERRIDABLE = ("fail_max", "reset_timeout", "success_threshold")


class RedisFleetStorage(pybreaker.CircuitBreakerStorage):
    """Breaker state for one resource, shared by every process that talks to the same Redis.

    ``async_client`` is the ``redis.asyncio`` client for ``call_async``; without one, a client
    with the same connection settings as ``client`` is built for each event loop on first use.
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        resource: str,
        keys: KeySpace | None = None,
        async_client: aioredis.Redis | aioredis.RedisCluster | None = None,
    ) -> None:
        super().__init__(resource)
        keys = keys or KeySpace()
        self.client = client
        self.key = keys.breaker(resource)
        self.leases_key = keys.trial_leases(resource)
        self.keys_all = [
            self.key,
            self.leases_key,
            keys.call_window(resource),
            keys.failure_window(resource),
        ]
        self._admit = client.register_script(scripts.ADMIT)
        self._failure = client.register_script(scripts.RECORD_FAILURE)
        self._success = client.register_script(scripts.RECORD_SUCCESS)
        self._force = client.register_script(scripts.FORCE_STATE)
        self._async_client = async_client
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncFleetStorage] = (
            weakref.WeakKeyDictionary()
        )

    # -- each script's KEYS and ARGV, shared with the asyncio path -----------------------------

    def admit_request(self, policy: BreakerPolicy, token: str) -> Request:
        """KEYS and ARGV of the breaker's admission (``scripts.ADMIT_FUNCTION``'s arguments)."""
        args: list[Any] = [
            policy.reset_timeout,
            policy.trial_calls,
            policy.trial_lease,
            policy.rate_window,
            token,
        ]
        return self.keys_all[:3], args

    def failure_request(self, policy: BreakerPolicy, token: str, slow: bool = False) -> Request:
        args: list[Any] = [
            policy.fail_max,
            token,
            policy.rate_window,
            policy.min_calls,
            policy.failure_rate or 0,
            policy.reset_timeout,
            int(slow),
            policy.slow_call_max,
        ]
        return self.keys_all, args

    def success_request(self, policy: BreakerPolicy, token: str, slow: bool = False) -> Request:
        args: list[Any] = [
            token,
            policy.success_threshold,
            int(slow),
            policy.slow_call_max,
            policy.reset_timeout,
        ]
        return self.keys_all, args

    # -- atomic operations used by FleetBreaker ------------------------------------------------

    def admit(self, policy: BreakerPolicy, token: str) -> Admission:
        keys, args = self.admit_request(policy, token)
        reply = self._admit(keys, args)
        return records.admission(reply, token, slow=reply[5])

    def release_trial(self, token: str) -> None:
        """Give back a trial lease without a verdict (the call never went out)."""
        self.client.zrem(self.leases_key, token)

    def record_failure(self, policy: BreakerPolicy, token: str, slow: bool = False) -> Verdict:
        reply = self._failure(*self.failure_request(policy, token, slow))
        return records.failure(reply, slow)

    def record_success(self, policy: BreakerPolicy, token: str, slow: bool = False) -> Verdict:
        reply = self._success(*self.success_request(policy, token, slow))
        return records.success(reply, slow)

    def force(self, state: str) -> tuple[str, str]:
        old, new = self._force(self.keys_all, [state])
        return records.text(old), records.text(new)

    # -- fleet overrides of the policy (pybreaker's setters) -----------------------------------

    def override(self, field: str) -> str | None:
        """The fleet's override of a policy field, or None when the policy's value holds."""
        value = self.client.hget(self.key, field)
        return None if value is None else records.text(value)

    def set_override(self, field: str, value: float) -> None:
        if field not in OVERRIDABLE:
            raise ConfigurationError(f"{field!r} cannot be overridden; only {OVERRIDABLE}")
        self.client.hset(self.key, field, repr(value))

    def clear_overrides(self) -> None:
        self.client.hdel(self.key, *OVERRIDABLE)

    # -- the asyncio twin ----------------------------------------------------------------------

    def asyncio_storage(self) -> AsyncFleetStorage:
        """The asyncio operations for the running event loop (one client per loop)."""
        from resilience_tasks.breaker.async_storage import AsyncFleetStorage, async_twin

        loop = asyncio.get_running_loop()
        storage = self._async.get(loop)
        if storage is None:
            client = self._async_client or async_twin(self.client)
            storage = self._async[loop] = AsyncFleetStorage(self, client)
        return storage

    async def aclose(self) -> None:
        """Close the asyncio client built for the running loop (a given one stays the user's)."""
        storage = self._async.pop(asyncio.get_running_loop(), None)
        if storage is not None and storage.client is not self._async_client:
            await storage.client.aclose()

    # -- pybreaker's storage interface ---------------------------------------------------------

    @property
    def state(self) -> str:
        value = self.client.hget(self.key, "state")
        return records.text(value) if value is not None else pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self.force(state)

    def increment_counter(self) -> None:
        self.client.hincrby(self.key, "failures", 1)

    def reset_counter(self) -> None:
        self.client.hset(self.key, "failures", 0)

    def increment_success_counter(self) -> None:
        self.client.hincrby(self.key, "successes", 1)

    def reset_success_counter(self) -> None:
        self.client.hset(self.key, "successes", 0)

    @property
    def counter(self) -> int:
        return int(self.client.hget(self.key, "failures") or 0)

    @property
    def success_counter(self) -> int:
        return int(self.client.hget(self.key, "successes") or 0)

    @property
    def opened_at(self) -> datetime | None:
        value = self.client.hget(self.key, "opened_at")
        return datetime.fromtimestamp(float(records.text(value)), UTC) if value else None

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self.client.hset(self.key, "opened_at", when.timestamp())
