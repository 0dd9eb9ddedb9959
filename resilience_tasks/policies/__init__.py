"""Pure policy objects: what users declare on a task. No Celery, no Redis here."""

from resilience_tasks.policies.breaker_policy import BreakerPolicy
from resilience_tasks.policies.retry_policy import RetryPolicy

__all__ = ["BreakerPolicy", "RetryPolicy"]
