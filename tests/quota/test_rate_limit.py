"""Rate-limit declarations and the fleet limiter on the real Redis."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks import ConfigurationError
from resilience_tasks.quota.rate_limit import FleetRateLimiter, RateLimit
from resilience_tasks.state.keys import KeySpace


@pytest.mark.parametrize(
    ("spec", "windows"),
    [
        ("500/minute", ["500 per 1 minute"]),
        ("10/s", ["10 per 1 second"]),
        (
            "10/second;500/minute;10000/day",
            ["10 per 1 second", "500 per 1 minute", "10000 per 1 day"],
        ),
        ("20 per 2 seconds", ["20 per 2 second"]),
    ],
)
def test_specs_parse(spec: str, windows: list[str]) -> None:
    assert [str(item) for item in RateLimit(spec).windows] == windows


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ten per minute", "cannot read 'ten per minute'"),
        ("0/s", "allows nothing"),
        ("10/fortnight", "cannot read"),
        ("", "must be a string"),
        ("10/second;;", "cannot read"),
    ],
)
def test_malformed_specs_are_refused_clearly(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RateLimit(spec)


def test_other_fields_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_wait_in_worker"):
        RateLimit("1/s", max_wait_in_worker=-1)
    with pytest.raises(ConfigurationError, match="jitter"):
        RateLimit("1/s", jitter=2)
    with pytest.raises(ConfigurationError, match="key"):
        RateLimit("1/s", key="api_key")  # type: ignore[arg-type]


@pytest.fixture
def limiter(redis_client: redis.Redis, prefix: str) -> FleetRateLimiter:
    return FleetRateLimiter(redis_client, KeySpace(prefix))


def test_a_window_grants_its_amount_then_says_when_it_frees(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("3/second")
    decisions = [limiter.acquire(limit, ("svc",)) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 0 < decisions[3].retry_after <= 1.0
    assert decisions[3].window == "3 per 1 second"


def test_several_windows_take_all_or_nothing(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("2/second;3/minute")
    granted = [limiter.acquire(limit, ("svc",)).allowed for _ in range(5)]
    assert granted == [True, True, False, False, False]
    # the refusals by the per-second window did not eat the per-minute window
    assert limiter.remaining(limit, ("svc",)) == {"2 per 1 second": 0, "3 per 1 minute": 1}


def test_identifiers_split_windows_per_team_and_key() -> None:
    limit = RateLimit("1/second", per_team=True, key=lambda account, **_: account)
    assert limit.identifiers("llm", "research", ("acct-1",), {}) == (
        "llm",
        "team=research",
        "key=acct-1",
    )


def test_separate_keys_have_separate_windows(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("1/second")
    assert limiter.acquire(limit, ("svc", "key=a")).allowed
    assert limiter.acquire(limit, ("svc", "key=b")).allowed
    assert not limiter.acquire(limit, ("svc", "key=a")).allowed


def test_the_refused_get_places_in_line_at_the_limits_pace(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("4/second")
    for _ in range(4):
        assert limiter.acquire(limit, ("svc",)).allowed
    waits = [limiter.acquire(limit, ("svc",)).retry_after for _ in range(3)]
    assert 0.9 < waits[0] <= 1.0  # the first unit frees a second after it was taken
    assert waits[1] - waits[0] == pytest.approx(0.25, abs=0.01)  # then one slot per 1/4 s
    assert waits[2] - waits[1] == pytest.approx(0.25, abs=0.01)
    # work that goes first does not queue: it is told when the next unit frees
    assert limiter.acquire(limit, ("svc",), reserve=False).retry_after <= waits[0]


def test_a_cost_larger_than_the_window_is_an_error(limiter: FleetRateLimiter) -> None:
    with pytest.raises(ValueError, match="can never fit"):
        limiter.acquire(RateLimit("2/second"), ("svc",), cost=3)
