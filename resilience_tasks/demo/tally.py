"""The account: every task the demo sent, settled from what its ``AsyncResult`` reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult

from resilience_tasks import DeadLetteredError, ResilienceManager, Served

#: How long the demo waits for any one task's outcome before counting it as lost.
OUTCOME_TIMEOUT = 60.0

RETURNED, FAILED_BY_POLICY, DEAD_LETTERED = "returned", "failed as its policy says", "dead-lettered"
ACCOUNTED = (RETURNED, FAILED_BY_POLICY, DEAD_LETTERED)

#: How a returned task's chain call was answered, when not by the provider it asked first.
BY_BACKUP, DEGRADED, STALE = "by a backup provider", "degraded", "stale, from the cache"
PROVENANCE = (BY_BACKUP, DEGRADED, STALE)


def provenance(record: Served) -> str | None:
    """The account's name for how ``record`` was answered; None for the first provider."""
    if record.stale:
        return STALE
    if record.degraded:
        return DEGRADED
    return BY_BACKUP if record.protocol in ("switch_provider", "hedge") else None


@dataclass
class Sent:
    """One task the demo sent, what its policy says may end it, and how it did end."""

    label: str
    result: AsyncResult
    policy_failure: type[BaseException] | None = None
    outcome: str | None = None
    detail: str = ""
    value: Any = None
    #: What served the task's last chain call (tasks that call no chain have none).
    served: Served | None = None


class Tally:
    """Every task sent, settled one by one from what its ``AsyncResult`` actually reports.

    A task is accounted for when it returned, failed with the error its retry policy ends in,
    or was dead-lettered (its caller got ``DeadLetteredError`` and the dead-letter store holds
    its record). Anything else (no outcome in time, an unexpected error, a dead-letter error
    with no record) is lost, and the demo says which and why.
    """

    def __init__(self, manager: ResilienceManager) -> None:
        self.manager = manager
        self.sent: list[Sent] = []
        #: Seconds to wait for one outcome. Once a task has timed out the demo has waited long
        #: enough for everything sent before it, so the rest get a short wait each.
        self.patience = OUTCOME_TIMEOUT

    def send(
        self,
        task: Any,
        *args: Any,
        label: str,
        policy_failure: type[BaseException] | None = None,
    ) -> Sent:
        entry = Sent(label, task.delay(*args), policy_failure)
        self.sent.append(entry)
        return entry

    def settle(self, entry: Sent) -> Sent:
        """Wait for ``entry``'s outcome (once) and classify it."""
        if entry.outcome is not None:
            return entry
        timeout = self.patience
        try:
            entry.value = entry.result.get(timeout=timeout, interval=0.02)
            entry.detail, entry.outcome = str(entry.value), RETURNED
            records = self.manager.served(entry.result.id)
            entry.served = records[-1] if records else None
        except DeadLetteredError as error:
            record = self.manager.dead_letter(entry.result.id)
            if record is None:
                entry.outcome, entry.detail = "lost", f"DeadLetteredError but no record: {error}"
            else:
                entry.outcome, entry.detail = DEAD_LETTERED, record.reason
        except ResultTimeout:
            self.patience = 2.0
            entry.outcome = "lost"
            entry.detail = f"no outcome after {timeout:.0f}s (state {entry.result.state})"
        except Exception as error:
            if entry.policy_failure is not None and isinstance(error, entry.policy_failure):
                entry.outcome = FAILED_BY_POLICY
            else:
                entry.outcome = "lost"
            entry.detail = f"{type(error).__name__}: {error}"
        return entry

    def settle_all(self) -> None:
        for entry in self.sent:
            self.settle(entry)

    def count(self, outcome: str) -> int:
        return sum(1 for entry in self.sent if entry.outcome == outcome)

    def answered(self, how: str) -> int:
        """Returned tasks whose chain call was answered ``how`` (``PROVENANCE``)."""
        return sum(
            1
            for entry in self.sent
            if entry.outcome == RETURNED and entry.served and provenance(entry.served) == how
        )

    @property
    def lost(self) -> list[Sent]:
        return [entry for entry in self.sent if entry.outcome not in ACCOUNTED]


def account(tally: Tally, left_waiting: int) -> list[str]:
    """The closing lines, computed from the outcomes collected."""
    lost = tally.lost
    lines = [
        f"sent: {len(tally.sent)}",
        f"returned: {tally.count(RETURNED)}",
        *(f"  of them {how}: {tally.answered(how)}" for how in PROVENANCE if tally.answered(how)),
        f"failed as their retry policy says: {tally.count(FAILED_BY_POLICY)}",
        f"dead-lettered: {tally.count(DEAD_LETTERED)}",
        f"left waiting in the deferred store: {left_waiting}",
        f"lost: {len(lost)}",
    ]
    lines += [f"  lost {entry.label} ({entry.result.id}): {entry.detail}" for entry in lost[:10]]
    if len(lost) > 10:
        lines.append(f"  ... and {len(lost) - 10} more")
    return lines
