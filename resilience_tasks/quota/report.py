"""The "tell" side of quotas: what a call used and what the provider said, recorded after it.

Inside a task body, ``report_usage(tokens_in=..., tokens_out=...)`` and
``report_quota(response.headers)`` note what the call used and what quota the provider reports;
the guard records both when the body returns (one round trip, only when something was
reported). A provider's 429 becomes a fleet-wide cool-down and a ``Defer`` for its
``Retry-After``: a rate signal, never a breaker failure or a used attempt.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from resilience_tasks.errors import ConfigurationError, Defer, OutsideTaskError
from resilience_tasks.quota.policy import Pricing
from resilience_tasks.quota.provider import (
    DEFAULT_RETRY_AFTER,
    RateLimitedError,
    as_rate_limited,
)
from resilience_tasks.quota.storage import CooldownStore, QuotaStore, SpendLedger


@dataclass
class CallReport:
    units: dict[str, float] = field(default_factory=dict)
    quota_headers: list[Mapping[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.units or self.quota_headers)


_CURRENT: contextvars.ContextVar[CallReport | None] = contextvars.ContextVar(
    "resilience_tasks_call_report", default=None
)


def _current() -> CallReport:
    report = _CURRENT.get()
    if report is None:
        raise OutsideTaskError(
            "report_usage and report_quota are only meaningful inside the body of a resilient task"
        )
    return report


def report_usage(**units: float) -> None:
    """Report units the current call used (``tokens_in=812, tokens_out=95``)."""
    report = _current()
    for unit, amount in units.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ConfigurationError(
                f"report_usage: {unit} must be a non-negative number, got {amount!r}"
            )
        report.units[unit] = report.units.get(unit, 0.0) + float(amount)


def report_quota(headers: Mapping[str, str]) -> None:
    """Report a provider response's headers; its quota fields are recorded for the resource."""
    _current().quota_headers.append(dict(headers))


@contextmanager
def collecting() -> Iterator[CallReport]:
    """Collect what the body reports into the yielded ``CallReport``."""
    report = CallReport()
    token = _CURRENT.set(report)
    try:
        yield report
    finally:
        _CURRENT.reset(token)


class QuotaReporter:
    """Records one resource's usage, spend and quota headers for the ledger's team; turns its
    provider's 429s into a fleet-wide cool-down."""

    def __init__(
        self,
        resource: str,
        ledger: SpendLedger,
        quotas: QuotaStore,
        cooldowns: CooldownStore,
        pricing: Callable[[], Pricing | None],
        rate_limit_errors: Callable[[], tuple[type[BaseException], ...]],
    ) -> None:
        self.resource = resource
        self._ledger = ledger
        self._quotas = quotas
        self._cooldowns = cooldowns
        self._pricing = pricing
        self._rate_limit_errors = rate_limit_errors

    def record(self, report: CallReport) -> None:
        if report.units:
            self._ledger.record(self.resource, report.units, self._pricing())
        for headers in report.quota_headers:
            self._quotas.observe(self.resource, headers)

    def is_rate_limit(self, error: BaseException) -> bool:
        return isinstance(error, (RateLimitedError, *self._rate_limit_errors()))

    def defer_for(self, error: BaseException) -> Defer:
        """A provider's rate-limit answer: record its quota, pause the fleet, wait it out."""
        limited = as_rate_limited(error)
        if limited.headers:
            self._quotas.observe(self.resource, limited.headers)
        delay = limited.retry_after if limited.retry_after is not None else DEFAULT_RETRY_AFTER
        if delay > 0:
            self._cooldowns.start(self.resource, delay)
        return Defer(delay, f"{self.resource} rate-limited the call (429); retry after {delay:g}s")
