"""The fleet-wide circuit breaker: pybreaker's contract over atomic Redis state."""

from resilience_tasks.breaker.fleet import FleetBreaker
from resilience_tasks.breaker.records import Admission, Verdict
from resilience_tasks.breaker.storage import RedisFleetStorage

__all__ = ["Admission", "FleetBreaker", "RedisFleetStorage", "Verdict"]
