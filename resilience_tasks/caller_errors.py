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
from types import CodeType
from typing import Any

#: The kinds of error that can be raised at the call boundary.
BOUNDARY_ERRORS: tuple[type[BaseException], ...] = (TypeError,)


def _code_of(func: Callable[..., Any]) -> Any:
    target: Any = func
    for _ in range(8):  # unwrap bound methods, functools.wraps chains, task.run, callables
        code = getattr(target, "__code__", None)
        if code is not None:
            return code
        inner = getattr(target, "__func__", None) or getattr(target, "__wrapped__", None)
        if inner is None:  # an instance with a ``__call__`` of Python code
            inner = next(
                (
                    vars(kind)["__call__"]
                    for kind in type(target).__mro__
                    if "__call__" in vars(kind)
                ),
                None,
            )
            if getattr(inner, "__code__", None) is None:
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
