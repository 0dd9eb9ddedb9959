"""The seven fallback protocols as small strategy objects behind one interface.

Three shape every call to a provider (``CircuitBreak``, ``ScaleDown``, ``Retry``): they say
which of the resource's protections its calls go through. Four serve a call that the ones
before could not (``SwitchProvider``, ``DegradeService``, ``Cache``, ``Queue``): each answers the
call or hands it to the next, least disruptive first. A chain's protocols come from
``DEFAULT_PROTOCOLS`` for its ``ResourceType`` unless it names its own order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from resilience_tasks.errors import ConfigurationError, Degrade
from resilience_tasks.fallback.resource_type import ResourceType

if TYPE_CHECKING:
    from resilience_tasks.fallback.chain import ChainCall, ProviderChain

Next = Callable[[], Any]
AsyncNext = Callable[[], Awaitable[Any]]


@dataclass
class AttemptOptions:
    """What a provider's calls go through, as the chain's guard-stage protocols set it (the
    provider's breaker always: see ``CircuitBreak``)."""

    concurrency: bool = False
    retry: bool = False


class Protocol:
    """One protocol: it may shape each provider call (``shape``) and serve a call the
    protocols before it could not (``serve``, which answers or calls ``next``)."""

    name: ClassVar[str]

    def shape(self, options: AttemptOptions) -> None:
        """Turn on what this protocol adds to every call of a provider."""

    def serve(self, chain: ProviderChain, call: ChainCall, next: Next) -> Any:
        """Answer ``call`` or hand it on; the guard-stage protocols only hand it on."""
        return next()

    async def serve_async(self, chain: ProviderChain, call: ChainCall, next: AsyncNext) -> Any:
        return await next()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CircuitBreak(Protocol):
    """Each provider's fleet breaker: an open one is skipped at once (no call goes out),
    and slow calls count when its policy sets ``slow_call_duration``.

    Always in force, listed or not: a provider is a resource whose breaker every task and
    decorated function calling it shares, so a chain cannot opt out of it. The table lists it
    where it is the first line of defence, so that the order reads as what happens."""

    name = "circuit_break"


class ScaleDown(Protocol):
    """Each provider's fleet concurrency limit (``Concurrency``), lowered on failures and
    raised on successes; a provider at its limit is skipped like a busy one."""

    name = "scale_down"

    def shape(self, options: AttemptOptions) -> None:
        options.concurrency = True


class Retry(Protocol):
    """The chain's retry policy on the same provider, within the provider's fleet retry budget;
    a retry the budget refuses is not made and the call moves on."""

    name = "retry"

    def shape(self, options: AttemptOptions) -> None:
        options.retry = True


class SwitchProvider(Protocol):
    """The other providers, cheapest first (of those meeting the call's minimum quality):
    the next one on a failure, an open breaker, an exhausted quota, a 429 cool-down or a
    budget. Without it in a chain, only the first provider is ever called."""

    name = "switch_provider"


class DegradeService(Protocol):
    """When no normal provider can serve: in a task, move the work (same task id) to the
    task's degraded queue, where degraded workers call only ``degraded=True`` providers;
    outside a task (or with ``degrade_in_place``), call those providers here."""

    name = "degrade"

    def serve(self, chain: ProviderChain, call: ChainCall, next: Next) -> Any:
        how = chain.degrade_plan(call)
        if how == "move":
            raise _degrade(call)
        if how == "here":
            answer = chain.try_degraded(call)
            if answer is not None:
                return answer
        return next()

    async def serve_async(self, chain: ProviderChain, call: ChainCall, next: AsyncNext) -> Any:
        how = chain.degrade_plan(call)
        if how == "move":
            raise _degrade(call)
        if how == "here":
            answer = await chain.try_degraded_async(call)
            if answer is not None:
                return answer
        return await next()


def _degrade(call: ChainCall) -> Degrade:
    call.note("degrade: moved to the degraded queue")
    return Degrade(0.0, f"{call.chain}: no provider could serve ({call.summary()})")


class Cache(Protocol):
    """The last good answer for the same arguments, marked stale, when nothing fresher could
    be had (chains with ``cache_ttl``)."""

    name = "cache"

    def serve(self, chain: ProviderChain, call: ChainCall, next: Next) -> Any:
        answer = chain.from_cache(call)
        return answer if answer is not None else next()

    async def serve_async(self, chain: ProviderChain, call: ChainCall, next: AsyncNext) -> Any:
        answer = await chain.from_cache_async(call)
        return answer if answer is not None else await next()


class Queue(Protocol):
    """In a task: wait in the deferred store until a provider can take the work (parked on
    the preferred provider's breaker when it is open). Outside a task there is nowhere to
    wait, and the call moves on."""

    name = "queue"

    def serve(self, chain: ProviderChain, call: ChainCall, next: Next) -> Any:
        wait = chain.queue_plan(call)
        if wait is not None:
            raise wait
        return next()

    async def serve_async(self, chain: ProviderChain, call: ChainCall, next: AsyncNext) -> Any:
        wait = chain.queue_plan(call)
        if wait is not None:
            raise wait
        return await next()


PROTOCOLS: dict[str, type[Protocol]] = {
    kind.name: kind
    for kind in (CircuitBreak, ScaleDown, Retry, SwitchProvider, DegradeService, Cache, Queue)
}

_GUARDS = ("circuit_break", "scale_down", "retry")

#: Each resource type's protocols, least disruptive first. A chain may name its own order.
DEFAULT_PROTOCOLS: dict[ResourceType, tuple[str, ...]] = {
    # metered APIs: another provider, then a cheaper one, then yesterday's answer, then wait
    ResourceType.API_QUOTA: (*_GUARDS, "switch_provider", "degrade", "cache", "queue"),
    ResourceType.MCP_SERVER: (*_GUARDS, "switch_provider", "cache", "queue"),
    ResourceType.NETWORK: (*_GUARDS, "switch_provider", "cache", "queue"),
    # a database answer must be fresh: no stale cache, wait instead
    ResourceType.DATABASE: (*_GUARDS, "switch_provider", "queue"),
    # the worker itself is short: do less, elsewhere, or later
    ResourceType.MEMORY: ("scale_down", "degrade", "queue"),
    ResourceType.CPU: ("scale_down", "degrade", "queue"),
    ResourceType.DISK: ("circuit_break", "retry", "switch_provider", "queue"),
}


def build(
    resource_type: ResourceType, order: Sequence[str | Protocol] | None, owner: str
) -> tuple[Protocol, ...]:
    """The chain's protocol objects: its own ``order`` or its resource type's default."""
    names: Sequence[str | Protocol] = (
        order if order is not None else DEFAULT_PROTOCOLS[resource_type]
    )
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigurationError(f"{owner}.protocols must be a list of names, got {names!r}")
    built: list[Protocol] = []
    for item in names:
        if isinstance(item, Protocol):
            built.append(item)
            continue
        kind = PROTOCOLS.get(item) if isinstance(item, str) else None
        if kind is None:
            raise ConfigurationError(
                f"{owner}.protocols: unknown protocol {item!r}; known: {sorted(PROTOCOLS)}"
            )
        built.append(kind())
    seen = [protocol.name for protocol in built]
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if twice:
        raise ConfigurationError(f"{owner}.protocols names {twice} more than once")
    return tuple(built)


def attempt_options(protocols: Sequence[Protocol]) -> AttemptOptions:
    options = AttemptOptions()
    for protocol in protocols:
        protocol.shape(options)
    return options


def switches(protocols: Sequence[Protocol]) -> bool:
    return any(isinstance(protocol, SwitchProvider) for protocol in protocols)


__all__ = [
    "DEFAULT_PROTOCOLS",
    "PROTOCOLS",
    "AttemptOptions",
    "Cache",
    "CircuitBreak",
    "DegradeService",
    "Protocol",
    "Queue",
    "Retry",
    "ScaleDown",
    "SwitchProvider",
]
