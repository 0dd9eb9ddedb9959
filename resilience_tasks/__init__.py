"""resilience-tasks: keep Celery work going when what it depends on fails.

The public API is what this module exports; everything else is internal and may change.
"""

from resilience_tasks.breaker import FleetBreaker
from resilience_tasks.decorators import circuit_breaker, retry, with_fallback
from resilience_tasks.defaults import set_default_manager
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
from resilience_tasks.fallback.chain import ProviderChain, ProvidersExhaustedError
from resilience_tasks.fallback.policy import Concurrency, RetryBudget
from resilience_tasks.fallback.protocols import DEFAULT_PROTOCOLS
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.fallback.resource_type import ResourceType
from resilience_tasks.fallback.scope import Served, is_degraded, served
from resilience_tasks.manager import ResilienceManager
from resilience_tasks.policies import BreakerPolicy, RetryPolicy
from resilience_tasks.quota.policy import Budget, RateLimit
from resilience_tasks.quota.provider import raise_for_rate_limit
from resilience_tasks.quota.report import report_quota, report_usage

__all__ = [
    "DEFAULT_PROTOCOLS",
    "BreakerOpenError",
    "BreakerPolicy",
    "Budget",
    "Concurrency",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetteredError",
    "Defer",
    "DeferredMessage",
    "Degrade",
    "FleetBreaker",
    "Provider",
    "ProviderChain",
    "ProvidersExhaustedError",
    "RateLimit",
    "RateLimitedError",
    "ResilienceError",
    "ResilienceManager",
    "ResourceType",
    "RetryBudget",
    "RetryPolicy",
    "Served",
    "StateUnavailableError",
    "circuit_breaker",
    "is_degraded",
    "raise_for_rate_limit",
    "report_quota",
    "report_usage",
    "retry",
    "served",
    "set_default_manager",
    "with_fallback",
]

__version__ = "0.1.0"
