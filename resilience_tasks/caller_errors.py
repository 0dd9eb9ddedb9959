"""Errors that are the caller's bug, not the dependency's: they neither trip a breaker nor retry.

A ``TypeError`` raised while Python binds the arguments of the guarded function (a missing or
unexpected argument: ``fetch()`` for ``fetch(url)``) says nothing about the dependency, and
retrying it can only fail the same way. Counted as a failure, three such calls would open a
breaker that every team shares. The test is exact: the error is the caller's when the guarded
function's own code never appears in its traceback, i.e. the function was never entered. A
``TypeError`` raised inside the function (by a client library, say) is an ordinary failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The kinds of error that can be raised at the call boundary.
BOUNDARY_ERRORS: tuple[type[BaseException], ...] = (TypeError,)


def _code_of(func: Callable[..., Any]) -> Any:
    target: Any = func
    for _ in range(8):  # unwrap bound methods, functools.wraps chains, Celery's task.run
        code = getattr(target, "__code__", None)
        if code is not None:
            return code
        inner = getattr(target, "__func__", None) or getattr(target, "__wrapped__", None)
        if inner is None:
            return None
        target = inner
    return None


def raised_at_call_boundary(error: BaseException, func: Callable[..., Any]) -> bool:
    """Whether ``error`` was raised while calling ``func``, before its body ran.

    False when ``func`` has no Python code to compare (a builtin): then nothing is assumed.
    """
    if not isinstance(error, BOUNDARY_ERRORS):
        return False
    code = _code_of(func)
    if code is None:
        return False
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return False
        tb = tb.tb_next
    return True
