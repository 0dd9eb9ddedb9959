"""Rate-limit declarations (the limiter's behaviour on Redis: ``test_limiter_contract.py``)."""

from __future__ import annotations

import pytest

from resilience_tasks import ConfigurationError
from resilience_tasks.quota.policy import RateLimit


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


def test_identifiers_split_windows_per_team_and_key() -> None:
    limit = RateLimit("1/second", per_team=True, key=lambda account, **_: account)
    assert limit.identifiers("llm", "research", ("acct-1",), {}) == (
        "llm",
        "team=research",
        "key=acct-1",
    )
