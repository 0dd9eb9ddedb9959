"""Former home of rate limits and the limiter; they live in ``policy`` and ``storage`` now.

Remove once nothing imports ``resilience_tasks.quota.rate_limit``.
"""

from resilience_tasks.quota.policy import RateDecision, RateLimit, parse_windows
from resilience_tasks.quota.storage import FleetRateLimiter

__all__ = ["FleetRateLimiter", "RateDecision", "RateLimit", "parse_windows"]
