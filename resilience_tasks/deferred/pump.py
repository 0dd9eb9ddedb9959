"""The pump: moves work that may run again from the deferred store back onto its queue.

At-least-once: entries are claimed a batch at a time and published; a published entry stays
claimed until a worker starts its task (the worker tells the store), so a message lost between
the broker and a worker is published again when its claim expires. If publishing fails because
the broker is away, the entry comes back when its claim expires, never lost; a publish that
fails for any other reason ``max_publish_failures`` times can never succeed and goes to the
dead-letter store, as does a malformed entry. Parked work is released at the pace its breaker
can admit (see ``store``). Now and then the pump also reconciles the store: an entry that sits
in no set is made due. Several pumps may run at once (beat, every worker): claims keep them
apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from resilience_tasks.deferred.dead_letter import DeadLetterStore
from resilience_tasks.deferred.message import DeferredMessage, MalformedMessageError
from resilience_tasks.deferred.store import Claimed, DeferredStore, ParkingSpot
from resilience_tasks.errors import STATE_ERRORS

logger = logging.getLogger(__name__)

Publisher = Callable[[DeferredMessage], None]
#: Tells a task's caller that its work was dead-lettered: (task id, reason).
FailureMarker = Callable[[str, str], None]

#: Errors of a publish that say the broker is away for now: the entry waits for its claim.
TRANSIENT_PUBLISH_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError)


@dataclass
class PumpReport:
    published: int = 0
    failed: int = 0
    dead_lettered: int = 0
    reconciled: int = 0

    def add(self, other: PumpReport) -> None:
        self.published += other.published
        self.failed += other.failed
        self.dead_lettered += other.dead_lettered
        self.reconciled += other.reconciled


@dataclass(frozen=True)
class PumpSettings:
    """``claim_lease``: seconds a claim holds before publishing; ``publish_lease``: seconds a
    published entry waits for a worker to start it before it is published again (make it
    longer than work can sit in a queue: the manager uses ``visibility_timeout``)."""

    batch: int = 500
    claim_lease: float = 60.0
    publish_lease: float = 900.0
    max_publish_failures: int = 3
    reconcile_every: float = 60.0
    transient_errors: tuple[type[BaseException], ...] = TRANSIENT_PUBLISH_ERRORS


class Pump:
    def __init__(
        self,
        store: DeferredStore,
        dead_letters: DeadLetterStore,
        publish: Publisher,
        parking: Callable[[], Sequence[ParkingSpot]] = tuple,
        settings: PumpSettings | None = None,
        mark_failed: FailureMarker | None = None,
    ) -> None:
        self._store = store
        self._mark_failed = mark_failed
        self._dead_letters = dead_letters
        self._publish = publish
        self._parking = parking
        self.settings = settings or PumpSettings()
        self._next_reconcile = time.monotonic() + self.settings.reconcile_every

    def pump_once(self) -> PumpReport:
        """Publish one batch of due work and of parked work its breakers can take now."""
        settings = self.settings
        spots = self._parking()
        claimed = self._store.claim_due(settings.batch, settings.claim_lease)
        claimed += self._store.claim_parked(spots, settings.batch, settings.claim_lease)
        report = self._publish_all(claimed)
        if time.monotonic() >= self._next_reconcile:
            self._next_reconcile = time.monotonic() + settings.reconcile_every
            report.reconciled = self._store.reconcile(spot.resource for spot in spots)
        return report

    def _publish_all(self, claimed: list[Claimed]) -> PumpReport:
        report = PumpReport()
        published: list[str] = []
        for entry in claimed:
            try:
                message = DeferredMessage.from_json(entry.raw)
            except MalformedMessageError as exc:
                self._dead_letter(entry.task_id, str(exc), entry.raw, report)
                continue
            try:
                self._publish(message)
            except self.settings.transient_errors:
                logger.warning(
                    "could not publish deferred task %s (broker unavailable); it is published "
                    "again when its claim expires",
                    entry.task_id,
                    exc_info=True,
                )
                report.failed += 1
                continue
            except Exception as exc:
                report.failed += 1
                self._permanent_failure(entry, message, exc, report)
                continue
            published.append(entry.task_id)
            report.published += 1
        self._store.published(published, self.settings.publish_lease)
        return report

    def _permanent_failure(
        self, entry: Claimed, message: DeferredMessage, exc: Exception, report: PumpReport
    ) -> None:
        failures = self._store.publish_failed(entry.task_id)
        if failures >= self.settings.max_publish_failures:
            reason = f"could not be published {failures} times: {type(exc).__name__}: {exc}"
            self._dead_letter(entry.task_id, reason, message.to_json(), report)
        else:
            logger.warning(
                "could not publish deferred task %s (%d/%d): %s",
                entry.task_id,
                failures,
                self.settings.max_publish_failures,
                exc,
            )

    def _dead_letter(self, task_id: str, reason: str, raw: bytes | str, report: PumpReport) -> None:
        self._dead_letters.add(task_id, reason, raw)
        self._store.forget(task_id)
        report.dead_lettered += 1
        if self._mark_failed is not None:
            try:
                self._mark_failed(task_id, reason)
            except Exception:  # the dead letter is kept; only the caller's notice failed
                logger.warning("could not mark %s as dead-lettered", task_id, exc_info=True)

    def drain(self, max_seconds: float = 0.9) -> PumpReport:
        """Publish batches until nothing more may run now or ``max_seconds`` have passed."""
        total = PumpReport()
        deadline = time.monotonic() + max_seconds
        while True:
            report = self.pump_once()
            total.add(report)
            moved = report.published + report.dead_lettered
            if moved < self.settings.batch or report.failed or time.monotonic() >= deadline:
                return total


class PumpThread:
    """Runs ``pump`` every ``interval`` seconds in a daemon thread until stopped.

    What a worker runs beside beat's entry, and what a single-process app (the demo) runs
    instead of beat. A failing round (Redis or the broker down) is logged and retried; a
    state-store outage is logged once when it starts and once when it ends.
    """

    def __init__(
        self, pump: Callable[[], object], interval: float, name: str = "resilience-pump"
    ) -> None:
        self._pump = pump
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        unavailable = False
        while not self._stop.wait(self._interval):
            try:
                self._pump()
            except STATE_ERRORS as exc:  # an outage: one line when it starts, one when it ends
                if not unavailable:
                    logger.warning("deferred pump: state store unavailable (%s); retrying", exc)
                unavailable = True
                continue
            except Exception:
                logger.warning("deferred pump round failed; retrying", exc_info=True)
                continue
            if unavailable:
                logger.warning("deferred pump: state store is back")
                unavailable = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._interval + 5)

    def __enter__(self) -> PumpThread:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
