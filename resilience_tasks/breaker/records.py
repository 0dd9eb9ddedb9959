"""What the breaker's scripts answer, as typed values shared by the sync and asyncio paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

#: Why an outcome opened the breaker (the scripts' ``cause``); ``""`` when it did not.
Cause = Literal["", "failures", "failure_rate", "slow_calls", "failed_trial", "slow_trial"]


@dataclass(frozen=True)
class Verdict:
    """How the breaker took the outcome of one admitted call.

    ``counted`` is ``"failure"``, ``"success"`` or ``"ignored"`` (an error that is nobody's
    verdict on the dependency: a caller's bug, a control exception; a trial's lease is handed
    back). ``trial_failed`` is set when this call was a half-open trial that did not pass (it
    failed, or it was slow) and opened the breaker again; ``opened`` whenever this outcome
    opened it, ``cause`` says why (``"slow_calls"``, ``"slow_trial"``: slowness; see
    ``breaker/scripts.py``), and then ``retry_after`` is the effective reset timeout.
    ``slow`` says the call took at least the policy's ``slow_call_duration``; ``slow_calls``
    is the run of slow calls in a row after this outcome, when the breaker was written.
    """

    counted: Literal["failure", "success", "ignored"]
    transition: tuple[str, str] | None = None
    failures: int = 0
    trial_failed: bool = False
    retry_after: float = 0.0
    slow: bool = False
    slow_calls: int = 0
    cause: Cause = ""

    @property
    def opened(self) -> bool:
        return self.transition is not None and self.transition[1] == "open"

    @property
    def opened_by_slowness(self) -> bool:
        """Whether slow calls, not failures, opened the breaker."""
        return self.cause in ("slow_calls", "slow_trial")


IGNORED = Verdict("ignored")


@dataclass(eq=False)
class Admission:
    """The breaker's answer to "may I call the dependency now?".

    Every field but ``verdict`` is the admission script's answer; ``verdict`` is filled in by
    ``FleetBreaker.record`` once the call has ended, so the caller of ``call_admitted`` can
    tell a failed half-open trial from an ordinary failure. ``slow`` is the run of slow calls
    at admission, or None when the admitting script did not say (a script that keeps only the
    first five values of ``breaker_admit``): then a success is written whenever the policy
    watches slow calls, so that a fast success always ends the run.
    """

    allowed: bool
    trial: bool
    state: str
    failures: int
    retry_after: float
    token: str
    transition: tuple[str, str] | None = None
    verdict: Verdict | None = None
    slow: int | None = None

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


def admission(reply: list[Any], token: str, slow: Any = None) -> Admission:
    """Parse the reply of ``breaker_admit`` (the first five fields of an admission script);
    ``slow`` is its sixth value, wherever the admission script put it."""
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
        slow=None if slow is None else int(slow),
    )


def failure(reply: list[Any], slow: bool) -> Verdict:
    """Parse the ``RECORD_FAILURE`` script's reply; ``slow`` is what the script was told."""
    old, new, failures, trial_failed, timeout, slow_calls, cause = reply
    return Verdict(
        "failure",
        transition(old, new),
        int(failures),
        bool(int(trial_failed)),
        float(text(timeout)),
        slow,
        int(slow_calls),
        _cause(cause),
    )


def success(reply: list[Any], slow: bool) -> Verdict:
    """Parse the ``RECORD_SUCCESS`` script's reply; ``slow`` is what the script was told."""
    old, new, slow_calls, trial_failed, timeout, cause = reply
    return Verdict(
        "success",
        transition(old, new),
        trial_failed=bool(int(trial_failed)),
        retry_after=float(text(timeout)),
        slow=slow,
        slow_calls=int(slow_calls),
        cause=_cause(cause),
    )


def _cause(value: Any) -> Cause:
    cause = text(value)
    if cause not in get_args(Cause):
        raise ValueError(f"unknown breaker cause {cause!r}")
    return cast(Cause, cause)
