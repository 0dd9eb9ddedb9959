"""resilience-tasks: keep Celery work going when what it depends on fails.

The public API is what this module exports; everything else is internal and may change.
"""

from resilience_tasks.breaker import FleetBreaker
from resilience_tasks.deferred import DeadLetter, DeferredMessage
from resilience_tasks.errors import (
    BreakerOpenError,
    ConfigurationError,
    DeadLetteredError,
    Defer,
    Degrade,
    RateLimitedError,
    ResilienceError,
    StateUnavailableError,
)
from resilience_tasks.manager import ResilienceManager
from resilience_tasks.policies import BreakerPolicy, RetryPolicy
from resilience_tasks.quota.policy import Budget, RateLimit
from resilience_tasks.quota.provider import raise_for_rate_limit
from resilience_tasks.quota.report import report_quota, report_usage

__all__ = [
    "BreakerOpenError",
    "BreakerPolicy",
    "Budget",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetteredError",
    "Defer",
    "DeferredMessage",
    "Degrade",
    "FleetBreaker",
    "RateLimit",
    "RateLimitedError",
    "ResilienceError",
    "ResilienceManager",
    "RetryPolicy",
    "StateUnavailableError",
    "raise_for_rate_limit",
    "report_quota",
    "report_usage",
]

__version__ = "0.1.0"
