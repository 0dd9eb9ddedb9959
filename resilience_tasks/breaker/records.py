"""What the breaker's scripts answer, as typed values shared by the sync and asyncio paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Verdict:
    """How the breaker took the outcome of one admitted call.

    ``counted`` is ``"failure"``, ``"success"`` or ``"ignored"`` (an error that is nobody's
    verdict on the dependency: a caller's bug, a control exception; a trial's lease is handed
    back). ``trial_failed`` is set when this call was a half-open trial that failed and opened
    the breaker again; ``opened`` whenever this outcome opened it (tripping or failed trial),
    and then ``retry_after`` is the effective reset timeout.
    """

    counted: Literal["failure", "success", "ignored"]
    transition: tuple[str, str] | None = None
    failures: int = 0
    trial_failed: bool = False
    retry_after: float = 0.0

    @property
    def opened(self) -> bool:
        return self.transition is not None and self.transition[1] == "open"


IGNORED = Verdict("ignored")


@dataclass(eq=False)
class Admission:
    """The breaker's answer to "may I call the dependency now?".

    Every field but ``verdict`` is the admission script's answer; ``verdict`` is filled in by
    ``FleetBreaker.record`` once the call has ended, so the caller of ``call_admitted`` can
    tell a failed half-open trial from an ordinary failure.
    """

    allowed: bool
    trial: bool
    state: str
    failures: int
    retry_after: float
    token: str
    transition: tuple[str, str] | None = None
    verdict: Verdict | None = None

    @property
    def trial_failed(self) -> bool:
        """Whether this admission was a half-open trial whose call failed and reopened it."""
        return self.verdict is not None and self.verdict.trial_failed


def text(value: Any) -> str:
    """A script's reply as ``str``, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def transition(old: Any, new: Any) -> tuple[str, str] | None:
    old_state, new_state = text(old), text(new)
    return (old_state, new_state) if old_state != new_state else None


def admission(reply: list[Any], token: str) -> Admission:
    """Parse the reply of ``breaker_admit`` (the first five fields of an admission script)."""
    decision, state, failures, wait, moved = reply[:5]
    moved_text = text(moved)
    return Admission(
        allowed=int(decision) > 0,
        trial=int(decision) == 2,
        state=text(state),
        failures=int(failures),
        retry_after=float(text(wait)),
        token=token,
        transition=transition(*moved_text.split(">")) if moved_text else None,
    )


def failure(reply: list[Any]) -> Verdict:
    """Parse the ``RECORD_FAILURE`` script's reply."""
    old, new, failures, trial_failed, timeout = reply
    return Verdict(
        "failure",
        transition(old, new),
        int(failures),
        bool(int(trial_failed)),
        float(text(timeout)),
    )


def success(reply: list[Any]) -> Verdict:
    """Parse the ``RECORD_SUCCESS`` script's reply."""
    return Verdict("success", transition(*reply))
