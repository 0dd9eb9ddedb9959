"""What providers say about their quotas: ``429`` answers and rate-limit headers.

A ``429`` (or a client library's rate-limit exception) is a rate signal, not a failure: the
work is deferred for ``Retry-After`` and the breaker does not count it. Quota headers are
recorded per resource (``storage.QuotaStore``), so the rest of the system knows how much is
left before it hits zero. OpenAI-compatible (``x-ratelimit-*``) and Anthropic
(``anthropic-ratelimit-*``) shapes are read out of the box; pass a parser for any other shape.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from resilience_tasks.errors import RateLimitedError

__all__ = [
    "DEFAULT_PARSERS",
    "DEFAULT_RETRY_AFTER",
    "QuotaParser",
    "RateLimitedError",
    "anthropic_quota",
    "as_rate_limited",
    "openai_quota",
    "parse_duration",
    "parse_retry_after",
    "raise_for_rate_limit",
]

QuotaParser = Callable[[Mapping[str, str]], dict[str, float]]

#: Seconds to wait on a 429 that gives no Retry-After.
DEFAULT_RETRY_AFTER = 1.0


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (delta seconds or an HTTP date) or ``retry-after-ms``."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def raise_for_rate_limit(status: int, headers: Mapping[str, str]) -> None:
    """Raise ``RateLimitedError`` if ``status`` is 429; otherwise do nothing."""
    if status == 429:
        raise RateLimitedError("HTTP 429 from the provider", parse_retry_after(headers), headers)


def as_rate_limited(error: BaseException) -> RateLimitedError:
    """A client library's rate-limit exception, read as ``RateLimitedError``.

    Looks for response headers where httpx-based clients (OpenAI, Anthropic) keep them.
    """
    if isinstance(error, RateLimitedError):
        return error
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or getattr(error, "headers", None) or {}
    headers = {str(k): str(v) for k, v in dict(headers).items()}
    return RateLimitedError(f"{type(error).__name__}: {error}", parse_retry_after(headers), headers)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    parts = _DURATION.findall(text.strip())
    if not parts:
        try:
            return float(text)
        except ValueError:
            return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(amount) * scale[unit] for amount, unit in parts)


def _quota_fields(
    headers: Mapping[str, str],
    name: Callable[[str, str], str],
    reset_seconds: Callable[[str], float | None],
) -> dict[str, float]:
    """Read ``{limit,remaining,reset}`` of requests and tokens; ``name(field, kind)`` gives
    each header's name in the provider's shape."""
    lowered = {key.lower(): value for key, value in headers.items()}
    quota: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        for field in ("limit", "remaining"):
            value = lowered.get(name(field, kind))
            if value is not None:
                with contextlib.suppress(ValueError):
                    quota[f"{field}_{kind}"] = float(value)
        reset = lowered.get(name("reset", kind))
        seconds = reset_seconds(reset) if reset is not None else None
        if seconds is not None:
            quota[f"reset_{kind}"] = seconds
    return quota


def _seconds_until(rfc3339: str) -> float | None:
    try:
        when = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def openai_quota(headers: Mapping[str, str]) -> dict[str, float]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset: ``6m0s``)."""
    return _quota_fields(headers, lambda field, kind: f"x-ratelimit-{field}-{kind}", parse_duration)


def anthropic_quota(headers: Mapping[str, str]) -> dict[str, float]:
    """``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` (reset: RFC 3339)."""
    return _quota_fields(
        headers, lambda field, kind: f"anthropic-ratelimit-{kind}-{field}", _seconds_until
    )


DEFAULT_PARSERS: tuple[QuotaParser, ...] = (openai_quota, anthropic_quota)
