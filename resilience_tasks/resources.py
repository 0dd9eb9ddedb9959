"""Every resource a manager knows, declared in one place.

A resource's rate limit, prices and provider rate-limit exceptions can be declared with
``manager.resource(...)`` or, for the limit, on a task (``rate_limit="500/minute"``); either
way there is one declaration per resource, and a second one that disagrees is refused with
both values in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback.policy import Concurrency, RetryBudget
from resilience_tasks.policies import _validate as check
from resilience_tasks.quota.policy import Budget, Pricing, RateLimit


def check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigurationError(f"{kind} must be a non-empty name without ':', got {name!r}")


@dataclass
class ResourceSpec:
    name: str
    rate_limit: RateLimit | None = None
    pricing: Pricing | None = None
    rate_limit_errors: tuple[type[BaseException], ...] = ()
    budget: Budget | None = None
    concurrency: Concurrency | None = None
    retry_budget: RetryBudget | None = None


class Resources:
    def __init__(self) -> None:
        self._specs: dict[str, ResourceSpec] = {}
        self.team_budget: Budget | None = None

    def declare(
        self,
        name: str,
        *,
        rate_limit: str | RateLimit | None = None,
        prices: dict[str, float] | None = None,
        rate_limit_errors: tuple[type[BaseException], ...] | None = None,
        concurrency: Concurrency | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> ResourceSpec:
        check_name("resource", name)
        spec = self._specs.setdefault(name, ResourceSpec(name))
        if rate_limit is not None:
            spec.rate_limit = self._merge(
                name, "rate_limit", spec.rate_limit, RateLimit.of(rate_limit)
            )
        if prices is not None:
            spec.pricing = self._merge(name, "prices", spec.pricing, Pricing(prices))
        if rate_limit_errors is not None:
            check.exception_types("resource", "rate_limit_errors", rate_limit_errors)
            spec.rate_limit_errors = self._merge(
                name, "rate_limit_errors", spec.rate_limit_errors or None, rate_limit_errors
            )
        if concurrency is not None:
            if not isinstance(concurrency, Concurrency):
                raise ConfigurationError(
                    f"resource {name!r}: concurrency must be a Concurrency, got {concurrency!r}"
                )
            spec.concurrency = self._merge(name, "concurrency", spec.concurrency, concurrency)
        if retry_budget is not None:
            if not isinstance(retry_budget, RetryBudget):
                raise ConfigurationError(
                    f"resource {name!r}: retry_budget must be a RetryBudget, got {retry_budget!r}"
                )
            spec.retry_budget = self._merge(name, "retry_budget", spec.retry_budget, retry_budget)
        return spec

    @staticmethod
    def _merge(name: str, field: str, existing: Any, new: Any) -> Any:
        if existing is not None and existing != new:
            raise ConfigurationError(
                f"resource {name!r} already has {field}={existing!r}; a second declaration "
                f"says {new!r}: declare it once"
            )
        return new

    def known(self, name: str) -> ResourceSpec | None:
        return self._specs.get(name)

    def get(self, name: str) -> ResourceSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise ConfigurationError(f"unknown resource {name!r}; known: {sorted(self._specs)}")
        return spec

    def set_budget(self, budget: Budget, resource: str | None = None) -> None:
        if resource is None:
            self.team_budget = budget
            return
        if resource not in self._specs:
            raise ConfigurationError(
                f"budget {budget.spec!r} names unknown resource {resource!r}; declare it first "
                f"with manager.resource() or a task (known: {sorted(self._specs)})"
            )
        self._specs[resource].budget = budget

    def budgets(self, name: str) -> tuple[Budget | None, Budget | None]:
        return self.team_budget, self._specs[name].budget
