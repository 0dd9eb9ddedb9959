"""Provider signals: Retry-After, quota headers, and their record in Redis."""

from __future__ import annotations

import email.utils
import time

import pytest
import redis

from resilience_tasks.quota.provider import (
    RateLimitedError,
    anthropic_quota,
    as_rate_limited,
    openai_quota,
    parse_duration,
    parse_retry_after,
    raise_for_rate_limit,
)
from resilience_tasks.quota.storage import CooldownStore, QuotaStore
from resilience_tasks.state.keys import KeySpace


def test_retry_after_in_seconds_milliseconds_and_dates() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"Retry-After": date}, now=now) or 0) <= 31
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_raise_for_rate_limit_only_on_429() -> None:
    raise_for_rate_limit(200, {})
    with pytest.raises(RateLimitedError) as limited:
        raise_for_rate_limit(429, {"Retry-After": "3"})
    assert limited.value.retry_after == 3.0


def test_a_client_exception_with_response_headers_is_read() -> None:
    class Response:
        def __init__(self) -> None:
            self.headers = {"retry-after": "2", "x-ratelimit-remaining-requests": "0"}

    class ClientRateLimitError(Exception):
        response = Response()

    limited = as_rate_limited(ClientRateLimitError("slow down"))
    assert limited.retry_after == 2.0
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"


def test_openai_headers() -> None:
    quota = openai_quota(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert quota == {
        "limit_requests": 500.0,
        "remaining_requests": 499.0,
        "reset_requests": pytest.approx(0.12),
        "remaining_tokens": 149984.0,
        "reset_tokens": 360.0,
    }
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)


def test_anthropic_headers() -> None:
    quota = anthropic_quota(
        {
            "anthropic-ratelimit-requests-remaining": "42",
            "anthropic-ratelimit-tokens-limit": "80000",
        }
    )
    assert quota == {"remaining_requests": 42.0, "limit_tokens": 80000.0}


def test_quotas_are_recorded_per_resource(redis_client: redis.Redis, prefix: str) -> None:
    store = QuotaStore(redis_client, KeySpace(prefix))
    store.observe(
        "llm.openai", {"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "1s"}
    )
    recorded = store.get("llm.openai")
    assert recorded["remaining_requests"] == 12.0
    assert recorded["resets_at_requests"] - recorded["observed_at"] == pytest.approx(1.0)
    assert store.get("llm.other") == {}


def test_a_custom_parser_reads_other_shapes(redis_client: redis.Redis, prefix: str) -> None:
    store = QuotaStore(redis_client, KeySpace(prefix))
    store.use_parser("sms", lambda headers: {"remaining_requests": float(headers["X-Credits"])})
    store.observe("sms", {"X-Credits": "17"})
    assert store.get("sms")["remaining_requests"] == 17.0


def test_observed_quotas_are_stamped_by_the_server_clock(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = QuotaStore(redis_client, KeySpace(prefix))
    before = float(redis_client.time()[0])
    store.observe("llm", {"x-ratelimit-remaining-tokens": "5"})
    after = float(redis_client.time()[0]) + 1
    assert before <= store.get("llm")["observed_at"] <= after


def test_a_cooldown_is_kept_until_its_longest_deadline(
    redis_client: redis.Redis, prefix: str
) -> None:
    cooldowns = CooldownStore(redis_client, KeySpace(prefix))
    first = cooldowns.start("llm", 30)
    assert cooldowns.start("llm", 2) == first  # a shorter Retry-After never shortens the pause
    assert 25 < cooldowns.remaining(redis_client.get(cooldowns.key("llm"))) <= 31
    assert 25_000 < int(redis_client.pttl(cooldowns.key("llm"))) <= 30_100
    assert cooldowns.start("llm", 60) > first  # a longer one extends it
    assert cooldowns.remaining(redis_client.get(cooldowns.key("other"))) == 0.0
