"""At most one side effect per key, on top of at-least-once delivery.

Late acks mean a task whose worker dies after its side effect but before the ack runs again
(and so does one that outlives ``visibility_timeout``). ``run_once(key, fn)`` makes the side
effect safe to repeat: the first run stores ``fn``'s JSON result under the key and later runs
return that result without calling ``fn``. A run in progress holds a lease; a duplicate that
arrives meanwhile raises ``Defer`` (inside a resilient task: it waits in the deferred store until
the lease ends) rather than running the side effect twice. Costs one round trip before the call
and one after.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from resilience_tasks.errors import Defer
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace

T = TypeVar("T")

# KEYS: result, lease; ARGV: lease token, lease milliseconds
# Returns {1, result} when done before, {0} when the lease was taken, {2, ms left} when held.
_CHECK = """
local done = redis.call('GET', KEYS[1])
if done then return {1, done} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return {2, redis.call('PTTL', KEYS[2])}
"""


class IdempotencyStore:
    def __init__(self, client: StateClient, team: str, keys: KeySpace | None = None) -> None:
        self._client = client
        self._team = team
        self._keys = keys or KeySpace()
        self._check = client.register_script(_CHECK)

    def run_once(
        self, key: str, fn: Callable[[], T], *, ttl: float = 86_400.0, lease: float = 60.0
    ) -> T | Any:
        """``fn()`` the first time ``key`` is seen in ``ttl`` seconds; its stored result after.

        ``lease`` should exceed ``fn``'s longest run: a run that outlives it no longer keeps
        a duplicate out.
        """
        result_key = self._keys.idempotency_result(self._team, key)
        lease_key = self._keys.idempotency_lease(self._team, key)
        token = uuid.uuid4().hex
        answer = self._check([result_key, lease_key], [token, int(lease * 1000)])
        if int(answer[0]) == 1:
            return json.loads(answer[1])
        if int(answer[0]) == 2:
            raise Defer(max(0.05, int(answer[1]) / 1000), f"idempotency key {key!r} is running")
        try:
            value = fn()
        except BaseException:
            self._client.delete(lease_key)
            raise
        pipe = self._client.pipeline(transaction=True)
        pipe.set(result_key, json.dumps(value), px=int(ttl * 1000))
        pipe.delete(lease_key)
        pipe.execute()
        return value
