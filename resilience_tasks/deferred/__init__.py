"""Deferred work: the store, the dead-letter store and the pump."""

from resilience_tasks.deferred.dead_letter import DeadLetter, DeadLetterStore
from resilience_tasks.deferred.message import DeferredMessage, MalformedMessageError
from resilience_tasks.deferred.pump import Pump, PumpReport, PumpSettings, PumpThread
from resilience_tasks.deferred.store import DeferredStore, ParkingSpot

__all__ = [
    "DeadLetter",
    "DeadLetterStore",
    "DeferredMessage",
    "DeferredStore",
    "MalformedMessageError",
    "ParkingSpot",
    "Pump",
    "PumpReport",
    "PumpSettings",
    "PumpThread",
]
