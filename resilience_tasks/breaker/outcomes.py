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
from typing import Literal

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
