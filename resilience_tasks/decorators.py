"""``@circuit_breaker``, ``@retry`` and ``@with_fallback`` for code that is not a Celery task.

They use the same fleet state as tasks (a decorated function and a task that name the same
resource share its breaker, limits, retry budget and concurrency limit) and work on plain and
``async def`` functions alike; async ones run every Redis round trip on ``redis.asyncio``.
Policies are checked when the function is decorated; the manager is looked up at the first
call, so functions can be decorated at import time, before the manager exists.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from resilience_tasks.defaults import default_manager
from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback import scope
from resilience_tasks.fallback.chain import ProviderChain
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.fallback.resource_type import ResourceType
from resilience_tasks.policies import BreakerPolicy, RetryPolicy
from resilience_tasks.resources import check_name

if TYPE_CHECKING:
    from resilience_tasks.fallback.retry_budget import FleetRetryBudget
    from resilience_tasks.manager import ResilienceManager

F = TypeVar("F", bound=Callable[..., Any])

#: Set on a ``@retry`` wrapper: ``@circuit_breaker`` above it lends it its resource's budget.
_RETRY_MARK = "__resilience_retry__"


def circuit_breaker(
    resource: str,
    *,
    policy: BreakerPolicy | None = None,
    manager: ResilienceManager | None = None,
) -> Callable[[F], F]:
    """Guard a function with ``resource``'s fleet breaker (declared on first use with
    ``policy``, or the resource's declared policy). An open breaker raises
    ``BreakerOpenError`` (a ``pybreaker.CircuitBreakerError``) without calling it."""
    check_name("circuit_breaker resource", resource)
    if policy is not None and not isinstance(policy, BreakerPolicy):
        raise ConfigurationError(f"circuit_breaker.policy must be a BreakerPolicy, got {policy!r}")

    def decorate(func: F) -> F:
        inner = getattr(func, _RETRY_MARK, None)
        if inner is not None:
            inner.lend(resource, manager)

        def breaker() -> Any:
            owner = manager or default_manager()
            owner.resource(resource, breaker=policy)
            return owner.breaker(resource)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                return await breaker().call_async(func, *args, **kwargs)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return breaker().call(func, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


class _Budget:
    """Which fleet retry budget a ``@retry`` draws from: its own resource's, or the one a
    ``@circuit_breaker`` above it lends; none means the policy alone decides."""

    def __init__(self, resource: str | None, manager: ResilienceManager | None) -> None:
        self.resource = resource
        self.manager = manager

    def lend(self, resource: str, manager: ResilienceManager | None) -> None:
        if self.resource is None:
            self.resource, self.manager = resource, manager

    def get(self) -> FleetRetryBudget | None:
        if self.resource is None:
            return None
        owner = self.manager or default_manager()
        return owner._retry_budget_for(self.resource)


def retry(
    max_attempts: int = 3,
    *,
    policy: RetryPolicy | None = None,
    resource: str | None = None,
    manager: ResilienceManager | None = None,
    **policy_options: Any,
) -> Callable[[F], F]:
    """Retry a function by ``policy`` (or ``RetryPolicy(max_attempts=..., **policy_options)``).

    With ``resource`` (or under a ``@circuit_breaker``), each retry is drawn from that
    resource's fleet retry budget: when the fleet already retries too much, the error is raised
    at once instead of adding load to a dependency that is failing.
    """
    if policy is None:
        unknown = set(policy_options) - {field.name for field in dataclasses.fields(RetryPolicy)}
        if unknown:
            raise ConfigurationError(f"RetryPolicy has no field(s): {', '.join(sorted(unknown))}")
        policy = RetryPolicy(max_attempts=max_attempts, **policy_options)
    elif not isinstance(policy, RetryPolicy):
        raise ConfigurationError(f"retry.policy must be a RetryPolicy, got {policy!r}")
    if resource is not None:
        check_name("retry resource", resource)
    budget = _Budget(resource, manager)
    chosen = policy

    def allowed(state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None
        error = state.outcome.exception()
        if error is None or not isinstance(error, chosen.retry_on):
            return False
        if state.attempt_number >= chosen.max_attempts:  # no retry left to ask the budget for
            return False
        fleet = budget.get()
        if fleet is None or fleet.withdraw():
            return True
        scope.note(f"{budget.resource}: retry refused by the fleet retry budget")
        return False

    async def allowed_async(state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None
        error = state.outcome.exception()
        if error is None or not isinstance(error, chosen.retry_on):
            return False
        if state.attempt_number >= chosen.max_attempts:
            return False
        fleet = budget.get()
        if fleet is None:
            return True
        owner = budget.manager or default_manager()
        client = owner.breaker(budget.resource or "").asyncio_client()
        if await fleet.withdraw_async(client):
            return True
        scope.note(f"{budget.resource}: retry refused by the fleet retry budget")
        return False

    def decorate(func: F) -> F:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(chosen.max_attempts)
        if chosen.max_delay is not None:
            stop = stop | tenacity.stop_after_delay(chosen.max_delay)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def retried_async(*args: Any, **kwargs: Any) -> Any:
                fleet = budget.get()
                if fleet is not None:
                    owner = budget.manager or default_manager()
                    await fleet.deposit_async(owner.breaker(budget.resource or "").asyncio_client())
                async for attempt in tenacity.AsyncRetrying(
                    stop=stop, wait=chosen.tenacity_wait(), retry=allowed_async, reraise=True
                ):
                    with attempt:
                        return await func(*args, **kwargs)
                raise AssertionError("unreachable: tenacity returned or raised")

            setattr(retried_async, _RETRY_MARK, budget)
            return retried_async  # type: ignore[return-value]

        @functools.wraps(func)
        def retried(*args: Any, **kwargs: Any) -> Any:
            fleet = budget.get()
            if fleet is not None:
                fleet.deposit()
            for attempt in tenacity.Retrying(
                stop=stop,
                wait=chosen.tenacity_wait(),
                retry=allowed,
                reraise=True,
            ):
                with attempt:
                    return func(*args, **kwargs)
            raise AssertionError("unreachable: tenacity returned or raised")

        setattr(retried, _RETRY_MARK, budget)
        return retried  # type: ignore[return-value]

    return decorate


def with_fallback(
    resource_type: ResourceType | str = ResourceType.API_QUOTA,
    *,
    name: str | None = None,
    fallbacks: Sequence[Provider | Callable[..., Any]] = (),
    cache_ttl: float | None = None,
    manager: ResilienceManager | None = None,
    **chain_options: Any,
) -> Callable[[F], F]:
    """Run a function through the fallback protocols of ``resource_type``: it becomes the
    first provider of a chain (resource ``name``, by default the function's name), followed by
    ``fallbacks`` (providers, or plain functions tried in order), with the type's breaker,
    retries within the fleet retry budget, concurrency limit and, with ``cache_ttl``, the
    last good answer when nothing else can serve."""
    kind = ResourceType.of(resource_type, "with_fallback")
    if name is not None:
        check_name("with_fallback name", name)

    def decorate(func: F) -> F:
        resource = name or func.__name__
        providers = [Provider(resource, func)]
        for index, extra in enumerate(fallbacks):  # equal costs keep the order given
            if isinstance(extra, Provider):
                providers.append(extra)
            elif callable(extra):
                extra_name = getattr(extra, "__name__", None) or f"{resource}-fallback-{index}"
                providers.append(Provider(extra_name, extra))
            else:
                raise ConfigurationError(
                    f"with_fallback.fallbacks must hold providers or functions, got {extra!r}"
                )
        built: list[ProviderChain] = []

        def chain() -> ProviderChain:
            if not built:
                owner = manager or default_manager()
                built.append(
                    owner.providers(
                        f"{resource}.fallback",
                        providers,
                        resource_type=kind,
                        cache_ttl=cache_ttl,
                        **chain_options,
                    )
                )
            return built[0]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def served_async(*args: Any, **kwargs: Any) -> Any:
                return await chain().acall(*args, **kwargs)

            return served_async  # type: ignore[return-value]

        @functools.wraps(func)
        def served(*args: Any, **kwargs: Any) -> Any:
            return chain()(*args, **kwargs)

        return served  # type: ignore[return-value]

    return decorate
