"""``ProviderChain``: call a chain's providers, then its fallback protocols, in order.

Every provider call goes through the provider's own guard (its fleet breaker, gates,
concurrency limit and retry policy within the retry budget), the one tasks use. A provider
that refuses (open breaker, 429 cool-down, rate limit, budget, concurrency limit) or fails is
noted, and the call moves on: to the next provider, then to the chain's protocols (degrade,
cache, queue). Each step is written into the call's ``Served`` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from resilience_tasks.caller_errors import raised_at_call_boundary
from resilience_tasks.errors import (
    STATE_ERRORS,
    ConfigurationError,
    Defer,
    ResilienceError,
    StateUnavailableError,
)
from resilience_tasks.fallback import async_attempt, scope
from resilience_tasks.fallback.cache import CachedResult, ResultCache
from resilience_tasks.fallback.hedging import Hedge
from resilience_tasks.fallback.protocols import Protocol, switches
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.fallback.resource_type import ResourceType
from resilience_tasks.gate import Call
from resilience_tasks.guard import CallContext, TaskGuard
from resilience_tasks.quota.report import report_usage

logger = logging.getLogger(__name__)

#: The unit a provider's per-call ``cost`` is priced in (``prices={"calls": cost}``).
CALLS = "calls"


class ProvidersExhaustedError(ResilienceError):
    """No provider and no protocol of the chain could serve the call; ``steps`` says what was
    tried and ``__cause__`` is the last provider's error, if one failed."""

    def __init__(self, chain: str, steps: Sequence[str]) -> None:
        self.chain = chain
        self.steps = list(steps)
        super().__init__(f"chain {chain!r} could not serve the call: " + "; ".join(self.steps))


@dataclass(frozen=True)
class Answer:
    """A served value (a value of None is an answer too)."""

    value: Any


@dataclass
class ChainCall:
    """One call of a chain: its arguments, what it has tried, and its provenance."""

    chain: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    min_quality: int
    degraded: bool
    in_task: bool
    served: scope.Served
    refusals: list[tuple[Provider, Defer]] = field(default_factory=list)
    errors: list[tuple[Provider, BaseException]] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, step: str) -> None:
        with self.lock:
            self.served.steps.append(step)

    def summary(self) -> str:
        return "; ".join(self.served.steps) or "no provider to call"


@contextmanager
def _calling(
    chain: str, args: tuple[Any, ...], kwargs: dict[str, Any], min_quality: int
) -> Iterator[ChainCall]:
    """One chain call inside the current scope (opened here when there is none); its
    ``Served`` record joins the scope's once it is answered."""
    with contextlib.ExitStack() as stack:
        current = scope.current() or stack.enter_context(scope.opened())
        call = ChainCall(
            chain=chain,
            args=args,
            kwargs=kwargs,
            min_quality=min_quality,
            degraded=current.degraded,
            in_task=current.in_task,
            served=scope.Served(chain=chain, degraded=current.degraded),
        )
        outer, current.current = current.current, call.served
        try:
            yield call
        finally:
            current.current = outer
        current.served.append(call.served)
        scope.remember(call.served)


class _Charged:
    """The provider's function, charging its per-call cost as it is called (hedged losers
    and retries included). It has no code of its own, so the guard's caller-error test looks
    at the provider's function (``__wrapped__``)."""

    def __init__(self, provider: Provider, call: ChainCall) -> None:
        self.__wrapped__ = provider.fn
        self._provider = provider
        self._call = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        provider, call = self._provider, self._call
        with call.lock:
            call.served.attempts += 1
            call.served.cost += provider.cost
        if provider.cost:
            report_usage(**{CALLS: 1.0})
        return provider.fn(*args, **kwargs)


class _InThread:
    """A synchronous provider called from ``async`` code: it runs in a worker thread, so it
    cannot block the event loop (the guard awaits what this returns)."""

    def __init__(self, func: _Charged) -> None:
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.to_thread(self.__wrapped__, *args, **kwargs)


class ProviderChain:
    """A chain of providers declared with ``manager.providers``; call it like a function.

    ``chain(*args, **kwargs)`` calls the chosen provider's function with these arguments and
    returns its value; ``chain.at_least(quality)(...)`` asks for a minimum quality tier.
    """

    def __init__(
        self,
        name: str,
        providers: Sequence[Provider],
        *,
        resource_type: ResourceType,
        protocols: Sequence[Protocol],
        guard: Callable[[Provider], TaskGuard],
        cache: ResultCache | None,
        cache_ttl: float | None,
        hedge_after: float | None,
        degrade_in_place: bool,
        queue_delay: float,
    ) -> None:
        self.name = name
        self.providers = tuple(providers)
        self.resource_type = resource_type
        self.protocols = tuple(protocols)
        self.cache_ttl = cache_ttl
        self.hedge_after = hedge_after
        self.degrade_in_place = degrade_in_place
        self.queue_delay = queue_delay
        self._guard = guard
        self._cache = cache if cache_ttl else None  # a cache keeps answers only with a TTL
        self._cache_ttl = float(cache_ttl or 0.0)
        self._switches = switches(self.protocols)
        self._hedge = Hedge(name, hedge_after) if hedge_after is not None else None
        order = {provider.name: index for index, provider in enumerate(self.providers)}
        self._by_cost = sorted(self.providers, key=lambda p: (p.cost, order[p.name]))

    def __repr__(self) -> str:
        names = ", ".join(provider.name for provider in self.providers)
        return f"ProviderChain({self.name!r}: {names})"

    @property
    def degraded_only(self) -> bool:
        return all(provider.degraded for provider in self.providers)

    # -- calling -------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(args, kwargs, 0)

    def at_least(self, quality: int) -> Callable[..., Any]:
        """The chain, for calls that need providers of ``quality`` or better."""
        return lambda *args, **kwargs: self._call(args, kwargs, quality)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """``await chain.acall(...)``: the chain from ``async`` code (providers may be
        coroutine functions); hedged losers are cancelled."""
        return await self._call_async(args, kwargs, 0)

    def at_least_async(self, quality: int) -> Callable[..., Any]:
        """``acall`` for calls that need providers of ``quality`` or better."""
        return lambda *args, **kwargs: self._call_async(args, kwargs, quality)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], min_quality: int) -> Any:
        with _calling(self.name, args, kwargs, min_quality) as call:
            return self._serve(0, call).value

    async def _call_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], min_quality: int
    ) -> Any:
        with _calling(self.name, args, kwargs, min_quality) as call:
            return (await self._serve_async(0, call)).value

    def _serve(self, index: int, call: ChainCall) -> Answer:
        if index == 0:
            answer = self._first(call)
            if answer is not None:
                return answer
        if index == len(self.protocols):
            raise self._exhausted(call)
        protocol = self.protocols[index]
        result: Answer = protocol.serve(self, call, lambda: self._serve(index + 1, call))
        return result

    async def _serve_async(self, index: int, call: ChainCall) -> Answer:
        if index == 0:
            answer = await self._first_async(call)
            if answer is not None:
                return answer
        if index == len(self.protocols):
            raise self._exhausted(call)
        protocol = self.protocols[index]
        result: Answer = await protocol.serve_async(
            self, call, lambda: self._serve_async(index + 1, call)
        )
        return result

    def _exhausted(self, call: ChainCall) -> ProvidersExhaustedError:
        error = ProvidersExhaustedError(self.name, call.served.steps)
        if call.errors:
            error.__cause__ = call.errors[-1][1]
        return error

    def candidates(self, call: ChainCall) -> list[Provider]:
        """Who may serve this call here, cheapest first: on the degraded queue only degraded
        providers, elsewhere only normal ones of the asked quality."""
        if call.degraded:
            return self._degraded_for(call)
        return [p for p in self._by_cost if not p.degraded and p.quality >= call.min_quality]

    def _degraded_for(self, call: ChainCall) -> list[Provider]:
        """The degraded providers that meet the call's minimum quality, cheapest first."""
        return [p for p in self._by_cost if p.degraded and p.quality >= call.min_quality]

    def _to_try(self, call: ChainCall) -> list[Provider]:
        candidates = [p for p in self.candidates(call) if p.name not in call.tried]
        if not candidates:
            call.note("no provider to call here")
        return candidates if self._switches else candidates[:1]

    def _first(self, call: ChainCall) -> Answer | None:
        """The preferred provider, then (with ``switch_provider``) the others; hedged when the
        chain says so."""
        candidates = self._to_try(call)
        if self._hedge is not None and len(candidates) > 1:
            return self._hedge.race(self.attempt, call, candidates)
        for position, provider in enumerate(candidates):
            answer = self.attempt(provider, call, "call" if position == 0 else "switch_provider")
            if answer is not None:
                return answer
        return None

    # -- one provider --------------------------------------------------------------------------

    def attempt(self, provider: Provider, call: ChainCall, protocol: str) -> Answer | None:
        """Call ``provider`` through its guard; None when it refused or failed (noted)."""
        if provider.is_async:
            raise ConfigurationError(
                f"provider {provider.name!r} is a coroutine function: call the chain with "
                f"'await {self.name}.acall(...)'"
            )
        call.tried.add(provider.name)
        guard = self._guard(provider)
        context = CallContext(call=Call(call.args, call.kwargs))
        try:
            value = guard.run(context, _Charged(provider, call))
        except Exception as error:
            self._missed(provider, call, error)
            return None
        cache = self._served_by(provider, call, protocol)
        if cache is not None:
            try:
                cache.put(
                    call.args, call.kwargs, value, ttl=self._cache_ttl, provider=provider.name
                )
            except STATE_ERRORS as exc:
                logger.warning("%s: could not cache an answer (%s)", self, exc)
        return Answer(value)

    async def attempt_async(
        self, provider: Provider, call: ChainCall, protocol: str
    ) -> Answer | None:
        call.tried.add(provider.name)
        guard = self._guard(provider)
        charged = _Charged(provider, call)
        func = charged if provider.is_async else _InThread(charged)
        try:
            value = await async_attempt.run(guard, Call(call.args, call.kwargs), func)
        except Exception as error:
            self._missed(provider, call, error)
            return None
        cache = self._served_by(provider, call, protocol)
        if cache is not None:
            try:
                await cache.put_async(
                    guard.breaker.asyncio_client(),
                    call.args,
                    call.kwargs,
                    value,
                    ttl=self._cache_ttl,
                    provider=provider.name,
                )
            except STATE_ERRORS as exc:
                logger.warning("%s: could not cache an answer (%s)", self, exc)
        return Answer(value)

    def _missed(self, provider: Provider, call: ChainCall, error: Exception) -> None:
        """Note why ``provider`` did not answer, or raise what no other provider would fix."""
        if isinstance(error, Defer):  # breaker, cool-down, limit, budget, concurrency: not now
            with call.lock:
                call.refusals.append((provider, error))
            call.note(f"{provider.name}: {error.reason}")
            return
        if isinstance(error, (StateUnavailableError, *STATE_ERRORS)):
            raise error
        if raised_at_call_boundary(error, provider.fn):
            raise error  # the caller's bug: no other provider would take these arguments
        with call.lock:
            call.errors.append((provider, error))
        call.note(f"{provider.name}: failed ({type(error).__name__}: {error})")

    def _served_by(self, provider: Provider, call: ChainCall, protocol: str) -> ResultCache | None:
        """Record that ``provider`` answered (unless a hedged race already has its winner);
        returns the cache its answer is kept in: none for a degraded provider's."""
        served = call.served
        with call.lock:
            if served.provider is None:
                served.provider = provider.name
                served.protocol = protocol
                served.degraded = provider.degraded
                served.steps.append(f"{provider.name}: served ({protocol})")
        return None if provider.degraded else self._cache

    async def _first_async(self, call: ChainCall) -> Answer | None:
        candidates = self._to_try(call)
        if self._hedge is not None and len(candidates) > 1:
            return await self._hedge.race_async(self.attempt_async, call, candidates)
        for position, provider in enumerate(candidates):
            protocol = "call" if position == 0 else "switch_provider"
            answer = await self.attempt_async(provider, call, protocol)
            if answer is not None:
                return answer
        return None

    # -- what the protocols ask of the chain ---------------------------------------------------

    def degrade_plan(self, call: ChainCall) -> str:
        """``move`` (to the degraded queue), ``here`` (call degraded providers now) or
        ``skip``."""
        if call.degraded or not self._degraded_for(call):
            return "skip"
        if call.in_task and not self.degrade_in_place:
            return "move"
        return "here"

    def try_degraded(self, call: ChainCall) -> Answer | None:
        for provider in self._degraded_for(call):
            answer = self.attempt(provider, call, "degrade")
            if answer is not None:
                return answer
        return None

    async def try_degraded_async(self, call: ChainCall) -> Answer | None:
        for provider in self._degraded_for(call):
            answer = await self.attempt_async(provider, call, "degrade")
            if answer is not None:
                return answer
        return None

    def from_cache(self, call: ChainCall) -> Answer | None:
        if self._cache is None:
            return None
        try:
            hit = self._cache.get(call.args, call.kwargs)
        except STATE_ERRORS as exc:
            call.note(f"cache: unavailable ({exc})")
            return None
        return self._stale(call, hit)

    async def from_cache_async(self, call: ChainCall) -> Answer | None:
        if self._cache is None:
            return None
        client = self._guard(self.providers[0]).breaker.asyncio_client()
        try:
            hit = await self._cache.get_async(client, call.args, call.kwargs)
        except STATE_ERRORS as exc:
            call.note(f"cache: unavailable ({exc})")
            return None
        return self._stale(call, hit)

    def _stale(self, call: ChainCall, hit: CachedResult | None) -> Answer | None:
        if hit is None:
            call.note("cache: no answer stored for these arguments")
            return None
        served = call.served
        served.provider, served.protocol, served.stale, served.age = (
            hit.provider,
            "cache",
            True,
            hit.age,
        )
        call.note(f"cache: stale answer of {hit.provider}, {hit.age:.0f}s old")
        return Answer(hit.value)

    def queue_plan(self, call: ChainCall) -> Defer | None:
        """The wait in the deferred store, in a task: parked on the preferred provider's
        breaker when that refused, else for the soonest wait a provider asked for."""
        if not call.in_task:
            return None
        reason = f"{self.name}: no provider could serve ({call.summary()})"
        if call.degraded:  # the work goes back to its normal queue, paced by the first choice
            normal = [p for p in self._by_cost if not p.degraded and p.quality >= call.min_quality]
            if normal:
                call.note(f"queue: back to the normal queue, parked on {normal[0].name}")
                return Defer(self.queue_delay, reason, park_on=normal[0].name)
        for _, refused in call.refusals:
            if refused.park_on is not None:
                call.note(f"queue: parked on {refused.park_on}'s breaker")
                return Defer(refused.delay, reason, park_on=refused.park_on)
        delays = [refused.delay for _, refused in call.refusals]
        delay = min(delays) if delays else self.queue_delay
        call.note(f"queue: deferred for {delay:.1f}s")
        return Defer(delay, reason)
