"""The pump: moves due work from the deferred store back onto its queue.

At-least-once: entries are claimed a batch at a time, published, then acknowledged together
(one round trip per batch). If publishing fails (the broker is down) the entry stays claimed
and comes back when the claim expires, never lost; if the pump dies between publishing and the
acknowledgement, the batch's entries are published again when their claims expire. A
malformed entry cannot be published and goes to the dead-letter store with the reason.
Several pumps may run at once (beat on two hosts, a manual drain): claims keep them apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from resilience_tasks.deferred.dead_letter import DeadLetterStore
from resilience_tasks.deferred.message import DeferredMessage, MalformedMessageError
from resilience_tasks.deferred.store import DeferredStore

logger = logging.getLogger(__name__)

Publisher = Callable[[DeferredMessage], None]


@dataclass
class PumpReport:
    published: int = 0
    failed: int = 0
    dead_lettered: int = 0


class Pump:
    def __init__(
        self,
        store: DeferredStore,
        dead_letters: DeadLetterStore,
        publish: Publisher,
        batch: int = 500,
        claim_lease: float = 60.0,
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._publish = publish
        self._batch = batch
        self._claim_lease = claim_lease

    def pump_once(self) -> PumpReport:
        """Publish one batch of due work."""
        report = PumpReport()
        done: list[str] = []
        for claimed in self._store.claim_due(self._batch, self._claim_lease):
            try:
                message = DeferredMessage.from_json(claimed.raw)
            except MalformedMessageError as exc:
                self._dead_letters.add(claimed.task_id, str(exc), claimed.raw)
                done.append(claimed.task_id)
                report.dead_lettered += 1
                continue
            try:
                self._publish(message)
            except Exception:
                logger.exception(
                    "could not publish deferred task %s; will retry when its claim expires",
                    claimed.task_id,
                )
                report.failed += 1
                continue
            done.append(claimed.task_id)
            report.published += 1
        self._store.ack(*done)
        return report

    def drain(self, max_seconds: float = 0.9) -> PumpReport:
        """Publish batches until nothing is due or ``max_seconds`` have passed."""
        total = PumpReport()
        deadline = time.monotonic() + max_seconds
        while True:
            report = self.pump_once()
            total.published += report.published
            total.failed += report.failed
            total.dead_lettered += report.dead_lettered
            if report.published + report.dead_lettered < self._batch or report.failed:
                return total
            if time.monotonic() >= deadline:
                return total


class PumpThread:
    """Runs ``pump`` every ``interval`` seconds in a daemon thread until stopped.

    What a worker runs beside beat's entry, and what a single-process app (the demo) runs
    instead of beat. A failing round (Redis or the broker down) is logged and retried.
    """

    def __init__(
        self, pump: Callable[[], object], interval: float, name: str = "resilience-pump"
    ) -> None:
        self._pump = pump
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._pump()
            except Exception:
                logger.warning("deferred pump round failed; retrying", exc_info=True)

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
