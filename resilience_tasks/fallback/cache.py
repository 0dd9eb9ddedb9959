"""The last good result of a chain per arguments: what a chain serves when every provider
fails (a stale answer, marked as such, is often better than none).

Entries are JSON, never pickle: a cache shared by a fleet must not turn a written value into
code run by every reader. Arguments are hashed from their canonical JSON
(``json.dumps([args, kwargs], sort_keys=True, separators=(",", ":"))``), so two calls share an
entry exactly when their arguments encode alike (a tuple and a list of the same items do);
a call whose arguments or result JSON cannot encode (NaN and infinities included: they are
not JSON) is simply not cached.

Each entry is one string key with a TTL (``SET ... PX``), one JSON object readable with
``GET``: ``{"stored_at": <server seconds>, "provider": ..., "value": ...}``. Times come from
the Redis server, so ``age`` means the same on every host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback import scripts
from resilience_tasks.fallback.scripts import AsyncStateClient
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace

logger = logging.getLogger(__name__)

#: Results larger than this (bytes of JSON) are not cached by default.
MAX_BYTES = 512 * 1024


@dataclass(frozen=True)
class CachedResult:
    """A cached result: ``value`` as ``provider`` returned it, stored at ``stored_at`` (server
    seconds since the epoch), ``age`` seconds ago."""

    value: Any
    provider: str
    stored_at: float
    age: float


def _canonical(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


class ResultCache:
    """The last good result of one chain per arguments, shared by the fleet.

    ``put`` and ``get`` each cost one round trip; each has an ``_async`` twin taking a
    ``redis.asyncio`` client (bound to the caller's event loop). Values over ``max_bytes`` of
    JSON are skipped, so one huge answer cannot fill the server.
    """

    def __init__(
        self, client: StateClient, keys: KeySpace, chain: str, *, max_bytes: int = MAX_BYTES
    ) -> None:
        self.chain = chain
        self.max_bytes = max_bytes
        self._keys = keys
        self._put = client.register_script(scripts.CACHE_PUT)
        self._get = client.register_script(scripts.CACHE_GET)

    def digest(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """The SHA-256 of the arguments' canonical JSON; None when they are not JSON."""
        text = _canonical([list(args), dict(kwargs)])
        return None if text is None else hashlib.sha256(text.encode()).hexdigest()

    def key(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """The entry's key for these arguments (None when they cannot be cached)."""
        digest = self.digest(args, kwargs)
        return None if digest is None else self._keys.cached_result(self.chain, digest)

    def _request(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], value: Any, ttl: float, provider: str
    ) -> tuple[list[str], list[Any]] | None:
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not (math.isfinite(ttl) and ttl > 0)
        ):
            raise ConfigurationError(f"cache ttl must be a number of seconds > 0, got {ttl!r}")
        key = self.key(args, kwargs)
        if key is None:
            logger.debug("chain %s: arguments are not JSON; result not cached", self.chain)
            return None
        entry = _canonical({"provider": provider, "value": value})
        if entry is None:
            logger.debug("chain %s: result from %s is not JSON; not cached", self.chain, provider)
            return None
        if len(entry) > self.max_bytes:
            logger.debug(
                "chain %s: result from %s is %d bytes (over %d); not cached",
                self.chain, provider, len(entry), self.max_bytes,
            )  # fmt: skip
            return None
        return [key], [entry, max(1, math.ceil(ttl * 1000))]

    def put(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        value: Any,
        *,
        ttl: float,
        provider: str,
    ) -> bool:
        """Keep ``value`` for ``ttl`` seconds as the last good result for these arguments.
        False (and nothing stored) when the arguments or the value are not JSON."""
        request = self._request(args, kwargs, value, ttl, provider)
        if request is None:
            return False
        self._put(*request)
        return True

    def get(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> CachedResult | None:
        """The last good result for these arguments, or None."""
        key = self.key(args, kwargs)
        return None if key is None else self._read(self._get([key], []))

    async def put_async(
        self,
        aclient: AsyncStateClient,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        value: Any,
        *,
        ttl: float,
        provider: str,
    ) -> bool:
        request = self._request(args, kwargs, value, ttl, provider)
        if request is None:
            return False
        await scripts.run_async(aclient, scripts.CACHE_PUT, *request)
        return True

    async def get_async(
        self, aclient: AsyncStateClient, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> CachedResult | None:
        key = self.key(args, kwargs)
        if key is None:
            return None
        return self._read(await scripts.run_async(aclient, scripts.CACHE_GET, [key], []))

    def _read(self, reply: Any) -> CachedResult | None:
        raw, now = reply[0], float(reply[1])
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            stored_at = float(entry["stored_at"])
            return CachedResult(
                entry["value"], str(entry["provider"]), stored_at, max(0.0, now - stored_at)
            )
        except (ValueError, TypeError, KeyError):
            logger.warning("chain %s: an unreadable cache entry was ignored", self.chain)
            return None
