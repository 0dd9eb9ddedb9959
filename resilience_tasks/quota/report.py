"""The "tell" side of quotas: what a call used and what the provider said, recorded after it.

Inside a task body, ``report_usage(tokens_in=..., tokens_out=...)`` and
``report_quota(response.headers)`` note what the call used and what quota the provider reports;
the guard records both when the body returns (one round trip, only when something was
reported). A provider's 429 becomes a fleet-wide cool-down and a ``Defer`` for its
``Retry-After``: a rate signal, never a breaker failure or a used attempt.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from resilience_tasks.errors import Defer
from resilience_tasks.quota.budget import Pricing, SpendLedger
from resilience_tasks.quota.provider import (
    DEFAULT_RETRY_AFTER,
    QuotaStore,
    RateLimitedError,
    as_rate_limited,
)
from resilience_tasks.state.keys import KeySpace


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
        raise RuntimeError("only meaningful inside the body of a resilient task")
    return report


def report_usage(**units: float) -> None:
    """Report units the current call used (``tokens_in=812, tokens_out=95``)."""
    report = _current()
    for unit, amount in units.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ValueError(f"report_usage: {unit} must be a non-negative number, got {amount!r}")
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
    """Records one resource's usage, spend and quota headers; reads its provider's 429s."""

    def __init__(
        self,
        team: str,
        resource: str,
        client: redis.Redis,
        keys: KeySpace,
        ledger: SpendLedger,
        quotas: QuotaStore,
        pricing: Callable[[], Pricing | None],
        rate_limit_errors: Callable[[], tuple[type[BaseException], ...]],
    ) -> None:
        self.team = team
        self.resource = resource
        self._client = client
        self._cooldown_key = keys.cooldown(resource)
        self._ledger = ledger
        self._quotas = quotas
        self._pricing = pricing
        self._rate_limit_errors = rate_limit_errors

    def record(self, report: CallReport) -> None:
        if report.units:
            self._ledger.record(self.team, self.resource, report.units, self._pricing())
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
            self._client.set(self._cooldown_key, time.time() + delay, px=int(delay * 1000) + 1)
        return Defer(delay, f"{self.resource} rate-limited the call (429); retry after {delay:g}s")
