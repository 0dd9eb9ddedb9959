"""Which errors are the dependency's fault, and which are nobody's verdict on it.

Three kinds of outcome, as pybreaker has them plus the one a fleet needs:

- a *failure*: any error the breaker is not told to ignore;
- a *success*: a normal return, or an error in the user's ``exclude`` list (pybreaker counts an
  excluded error as a success: the dependency answered, the answer was a business error);
- *ignored*: the call says nothing about the dependency. The built-in never-failures (the
  deferral and rate-limit signals, the control exceptions the Celery adapter passes in, a
  generator closed early, a cancelled coroutine) and errors that are the caller's bug
  (``caller_errors``). Nothing is counted, and a trial's lease is handed back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from types import CodeType
from typing import Any, Literal

from resilience_tasks.caller_errors import BOUNDARY_ERRORS, raised_at_call_boundary
from resilience_tasks.errors import BreakerOpenError, Defer, RateLimitedError

Kind = Literal["failure", "success", "ignored"]
Exclusion = type[BaseException] | Callable[[BaseException], bool]

#: Exceptions that are never the dependency's verdict, whatever the policy says.
NEVER_FAILURES: tuple[type[BaseException], ...] = (
    Defer,
    BreakerOpenError,
    RateLimitedError,
    GeneratorExit,
    asyncio.CancelledError,
)


def excluded(error: BaseException, exclusions: Iterable[Exclusion]) -> bool:
    """Whether a type or predicate of ``exclusions`` covers ``error`` (pybreaker's rule)."""
    for exclusion in exclusions:
        if isinstance(exclusion, type):
            if isinstance(error, exclusion):
                return True
        elif exclusion(error):
            return True
    return False


def caller_error(error: BaseException, func: Callable[..., Any]) -> bool:
    """The caller's bug when calling ``func``: see ``caller_errors.raised_at_call_boundary``."""
    return raised_at_call_boundary(error, func)


def raised_in_block(error: BaseException, own_code: CodeType) -> bool:
    """Whether ``error`` was raised by a ``with breaker.calling():`` block's own statement.

    A block has no call boundary of its own: it is the guarded code. Its boundary is where it
    calls out, so a ``TypeError`` raised in the block's own frame (wrong arguments to the
    function it calls, or an operator on the wrong types) is the caller's bug, and one raised
    deeper, inside what it called, is an ordinary failure. ``own_code`` is the code of the
    context manager, whose frame ``contextlib`` puts in front of the block's.
    """
    if not isinstance(error, BOUNDARY_ERRORS):
        return False
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code is own_code:
        tb = tb.tb_next
    return tb is not None and tb.tb_next is None
