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
    ResilienceError,
    StateUnavailableError,
)
from resilience_tasks.manager import ResilienceManager
from resilience_tasks.policies import BreakerPolicy, RetryPolicy

__all__ = [
    "BreakerOpenError",
    "BreakerPolicy",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetteredError",
    "Defer",
    "DeferredMessage",
    "FleetBreaker",
    "ResilienceError",
    "ResilienceManager",
    "RetryPolicy",
    "StateUnavailableError",
]

__version__ = "0.1.0"
