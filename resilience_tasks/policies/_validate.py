"""Checks shared by the policy dataclasses; each raises ``ConfigurationError`` naming the field."""

from __future__ import annotations

import math
from typing import Any

from resilience_tasks.errors import ConfigurationError


def positive_int(owner: str, field: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{owner}.{field} must be an integer >= {minimum}, got {value!r}")


def positive_seconds(owner: str, field: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{owner}.{field} must be a number of seconds {bound}, got {value!r}"
        )


def fraction(owner: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ConfigurationError(f"{owner}.{field} must be a fraction in (0, 1], got {value!r}")


def exception_types(owner: str, field: str, value: Any, *, allow_predicates: bool = False) -> None:
    if not isinstance(value, tuple):
        raise ConfigurationError(f"{owner}.{field} must be a tuple, got {type(value).__name__}")
    for item in value:
        if isinstance(item, type) and issubclass(item, BaseException):
            continue
        if allow_predicates and callable(item):
            continue
        kind = "exception types or predicates" if allow_predicates else "exception types"
        raise ConfigurationError(f"{owner}.{field} must hold {kind}, got {item!r}")
