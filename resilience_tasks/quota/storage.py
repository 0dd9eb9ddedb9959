"""The Redis side of quotas: the fleet rate limiter, the spend ledger, the providers' last
reported quotas and the cool-downs after a 429.

Each class is the one owner of its keys: it names them (through ``KeySpace``), writes them and
tells readers (the gates, which read in the breaker's admission round trip) which keys to
watch and how to read them. The objects a manager hands out are bound to its team: a team
records spend and takes units of per-team windows only as itself. Reads of other teams are
limited to totals (a resource's spend across teams, a shared window), which tell nothing of
one team's work.

All scripts are in ``scripts.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import limits

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.gate import Call
from resilience_tasks.quota import scripts
from resilience_tasks.quota.policy import Pricing, RateDecision, RateLimit, utc_day
from resilience_tasks.quota.provider import DEFAULT_PARSERS, QuotaParser
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace

#: Days spend and units are kept.
SPEND_TTL = 40 * 86_400

_NO_CALL = Call()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: bytes | str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


class FleetRateLimiter:
    """One team's view of the fleet-wide moving windows: one round trip takes a unit from
    every window of a limit.

    ``limits`` parses the limits and names the windows (``RateLimitItem.key_for``); the
    windows themselves are read and written by the scripts in ``scripts.py`` on the state
    client, whether it is one server or a cluster. ``limits``' storage classes each build
    their own client (``RedisStorage`` from a connection pool, ``RedisClusterStorage`` from a
    URL) and stamp hits with the caller's clock, so they are not used.
    """

    def __init__(self, client: StateClient, team: str, keys: KeySpace | None = None) -> None:
        self._client = client
        self.team = team
        self._keys = keys or KeySpace()
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._usage = client.register_script(scripts.WINDOW_USAGE)
        self._extend = client.register_script(scripts.EXTEND_DEADLINE)

    def _windows(
        self, limit: RateLimit, resource: str, call: Call
    ) -> list[tuple[limits.RateLimitItem, str]]:
        if not isinstance(resource, str):  # e.g. an identifiers tuple, as callers once passed
            raise ConfigurationError(
                f"the limiter takes a resource name (the team and the call pick the window), "
                f"got {resource!r}"
            )
        ids = limit.identifiers(resource, self.team, call.args, call.kwargs)
        return [(item, item.key_for(*ids)) for item in limit.windows]

    def acquire(
        self,
        limit: RateLimit,
        resource: str,
        call: Call = _NO_CALL,
        *,
        cost: int = 1,
        reserve: bool = True,
    ) -> RateDecision:
        """Take ``cost`` units from every window of ``limit`` for ``call`` in one round trip;
        if refused, say how long to wait: until a slot reserved for this call (``reserve``),
        or until the next unit frees."""
        windows = self._windows(limit, resource, call)
        keys: list[str] = []
        args: list[Any] = [cost, 1 if reserve else 0]
        for item, name in windows:
            keys += [self._keys.rate_window(name), self._keys.rate_queue(name)]
            args += [item.amount, item.get_expiry()]
        index, wait = self._acquire(keys, args)
        if int(index) == 0:
            return RateDecision(True)
        refused = windows[int(index) - 1][0]
        seconds = float(_text(wait))
        if seconds < 0:
            raise ConfigurationError(
                f"rate_limit {limit.spec!r}: a cost of {cost} can never fit {refused}"
            )
        return RateDecision(False, seconds, str(refused), refused.get_expiry() / refused.amount)

    def remaining(self, limit: RateLimit, resource: str, call: Call = _NO_CALL) -> dict[str, int]:
        """Units left in each window now (for status pages and tests)."""
        windows = self._windows(limit, resource, call)
        args: list[Any] = []
        for item, _ in windows:
            args += [item.amount, item.get_expiry()]
        used = self._usage([self._keys.rate_window(name) for _, name in windows], args)
        return {
            str(item): item.amount - int(count)
            for (item, _), count in zip(windows, used, strict=True)
        }

    def clear(self, limit: RateLimit, resource: str, call: Call = _NO_CALL) -> None:
        """Empty the limit's windows and lines (an operator's reset, e.g. after a provider
        raised a quota)."""
        names = [name for _, name in self._windows(limit, resource, call)]
        self._client.delete(
            *(
                key
                for name in names
                for key in (self._keys.rate_window(name), self._keys.rate_queue(name))
            )
        )

    # -- interactive work first ------------------------------------------------------------------

    def waiting_key(self, resource: str) -> str:
        """Holds when interactive work refused by ``resource``'s limit comes back (server
        seconds); batch work stands aside while it is set."""
        return self._keys.interactive_waiting(resource)

    def interactive_waits(self, resource: str, seconds: float) -> None:
        """Note that interactive work will come back in ``seconds``; the mark outlives that by
        a second, while the work returns."""
        self._extend([self.waiting_key(resource)], [seconds, 1.0])

    @staticmethod
    def waiting_for(watched: bytes | str | None) -> float:
        """Seconds until waiting interactive work returns, from the watched key's value."""
        return max(0.0, _seconds(watched) - time.time())


class CooldownStore:
    """Fleet-wide pauses of a resource after its provider answered 429.

    The deadline is stamped by the server clock and compared with the worker's clock when read
    (the admission script returns the value, not the server's time); a host whose clock is off
    waits that much more or less, and never past the key's expiry on the server.
    """

    def __init__(self, client: StateClient, keys: KeySpace | None = None) -> None:
        self._keys = keys or KeySpace()
        self._extend = client.register_script(scripts.EXTEND_DEADLINE)

    def key(self, resource: str) -> str:
        return self._keys.cooldown(resource)

    def start(self, resource: str, seconds: float) -> float:
        """Pause ``resource`` for the whole fleet for ``seconds`` (a longer pause already
        running is kept). Returns the deadline (server seconds)."""
        return float(_text(self._extend([self.key(resource)], [seconds, 0])))

    @staticmethod
    def remaining(watched: bytes | str | None) -> float:
        """Seconds of cool-down left, from the watched key's value."""
        return max(0.0, _seconds(watched) - time.time())


class SpendLedger:
    """One team's spend and units per resource and per UTC day; one round trip per record."""

    def __init__(self, client: StateClient, team: str, keys: KeySpace | None = None) -> None:
        self._client = client
        self.team = team
        self._keys = keys or KeySpace()
        self._record = client.register_script(scripts.RECORD_SPEND)

    def spend_key(self, resource: str | None = None, day: str | None = None) -> str:
        """The key of this team's spend today (on ``resource`` if given): budgets watch it."""
        day = day or utc_day()
        if resource is None:
            return self._keys.team_spend(self.team, day)
        return self._keys.team_resource_spend(self.team, resource, day)

    def record(
        self,
        resource: str,
        units: Mapping[str, float],
        pricing: Pricing | None,
        now: float | None = None,
    ) -> float:
        """Add ``units`` (and their cost) to today's totals of this team. Returns the cost."""
        day = utc_day(now)
        cost = pricing.cost(units) if pricing is not None else 0.0
        args: list[Any] = [repr(float(cost)), SPEND_TTL]
        for unit, amount in units.items():
            args += [unit, repr(float(amount))]
        self._record(
            [
                self._keys.team_spend(self.team, day),
                self._keys.resource_spend(resource, day),
                self._keys.team_resource_spend(self.team, resource, day),
                self._keys.team_resource_units(self.team, resource, day),
            ],
            args,
        )
        return cost

    def spent(self, resource: str | None = None, day: str | None = None) -> float:
        """This team's spend on ``day`` (today), on ``resource`` or on everything."""
        return float(self._client.get(self.spend_key(resource, day)) or 0.0)

    def units(self, resource: str, day: str | None = None) -> dict[str, float]:
        """This team's units on ``resource`` on ``day`` (today)."""
        key = self._keys.team_resource_units(self.team, resource, day or utc_day())
        raw: Mapping[Any, Any] = self._client.hgetall(key)
        return {_text(unit): float(amount) for unit, amount in raw.items()}

    def resource_spent(self, resource: str, day: str | None = None) -> float:
        """Every team's spend on ``resource`` on ``day`` (today): a total, no team's detail."""
        return float(self._client.get(self._keys.resource_spend(resource, day or utc_day())) or 0.0)


class QuotaStore:
    """The latest quota each resource's provider reported, with when it was seen."""

    def __init__(
        self, client: StateClient, keys: KeySpace | None = None, ttl: float = 86_400.0
    ) -> None:
        self._client = client
        self._keys = keys or KeySpace()
        self._ttl = int(ttl)
        self._parsers: dict[str, tuple[QuotaParser, ...]] = {}
        self._observe = client.register_script(scripts.OBSERVE_QUOTA)

    def use_parser(self, resource: str, parser: QuotaParser) -> None:
        """Read ``resource``'s headers with ``parser`` (before the built-in shapes)."""
        self._parsers[resource] = (parser, *DEFAULT_PARSERS)

    def observe(self, resource: str, headers: Mapping[str, str]) -> dict[str, float]:
        """Record what ``headers`` say of ``resource``'s quota; returns what was read."""
        quota: dict[str, float] = {}
        for parser in self._parsers.get(resource, DEFAULT_PARSERS):
            quota.update(parser(headers))
        if quota:
            args: list[Any] = [self._ttl]
            for name, value in quota.items():
                args += [name, repr(float(value))]
            self._observe([self._keys.quota(resource)], args)
        return quota

    def get(self, resource: str) -> dict[str, float]:
        """The last recorded quota of ``resource`` (empty if none was seen recently)."""
        raw: Mapping[Any, Any] = self._client.hgetall(self._keys.quota(resource))
        return {_text(key): float(_text(value)) for key, value in raw.items()}
