"""The fleet-wide circuit breaker: pybreaker's API over atomic Redis state."""

from resilience_tasks.breaker.fleet import FleetBreaker
from resilience_tasks.breaker.storage import Admission, RedisFleetStorage

__all__ = ["Admission", "FleetBreaker", "RedisFleetStorage"]
