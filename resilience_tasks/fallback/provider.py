"""``Provider``: one way of serving a chain's calls, and a resource in its own right."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback.policy import Concurrency, RetryBudget
from resilience_tasks.policies import BreakerPolicy
from resilience_tasks.quota.policy import RateLimit
from resilience_tasks.resources import check_name


@dataclass(frozen=True)
class Provider:
    """A provider of a chain: ``fn`` is called with the chain call's arguments.

    ``name`` is a resource name: the provider has its own fleet breaker, rate limit, quota,
    cool-down, spend, concurrency limit and retry budget, declared here or with
    ``manager.resource(name, ...)``. ``cost`` is dollars per call, recorded as spend on each
    call that reaches the provider (a hedged loser included); ``prices`` are dollars per unit
    reported with ``report_usage``, as for any resource. ``quality`` is an integer tier (higher
    is better): a call may ask for a minimum. ``degraded`` providers are called only on the
    chain's degraded queue (``<queue>.degraded``), unless the chain allows them elsewhere.
    """

    name: str
    fn: Callable[..., Any] = field(repr=False)
    cost: float = 0.0
    quality: int = 0
    degraded: bool = False
    prices: dict[str, float] | None = None
    breaker: BreakerPolicy | None = None
    rate_limit: str | RateLimit | None = None
    concurrency: Concurrency | None = None
    retry_budget: RetryBudget | None = None
    rate_limit_errors: tuple[type[BaseException], ...] | None = None

    def __post_init__(self) -> None:
        check_name("Provider.name", self.name)
        if not callable(self.fn):
            raise ConfigurationError(
                f"Provider({self.name!r}).fn must be callable, got {self.fn!r}"
            )
        cost = self.cost
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost < 0
        ):
            raise ConfigurationError(
                f"Provider({self.name!r}).cost must be dollars per call >= 0, got {cost!r}"
            )
        if isinstance(self.quality, bool) or not isinstance(self.quality, int):
            raise ConfigurationError(
                f"Provider({self.name!r}).quality must be an integer tier, got {self.quality!r}"
            )
        if not isinstance(self.degraded, bool):
            raise ConfigurationError(
                f"Provider({self.name!r}).degraded must be True or False, got {self.degraded!r}"
            )
        for option, kind in (
            ("breaker", BreakerPolicy),
            ("concurrency", Concurrency),
            ("retry_budget", RetryBudget),
        ):
            value = getattr(self, option)
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(
                    f"Provider({self.name!r}).{option} must be a {kind.__name__}, got {value!r}"
                )

    @property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function (called with ``await``)."""
        return inspect.iscoroutinefunction(self.fn)
