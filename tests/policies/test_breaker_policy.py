import pytest

from resilience_tasks import BreakerPolicy, ConfigurationError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fail_max", 0),
        ("fail_max", 2.5),
        ("fail_max", True),
        ("reset_timeout", -1.0),
        ("reset_timeout", 0),
        ("reset_timeout", float("nan")),
        ("success_threshold", 0),
        ("trial_calls", 0),
        ("trial_lease", -5),
        ("failure_rate", 0.0),
        ("failure_rate", 1.5),
        ("window", 0),
        ("min_calls", 0),
        ("exclude", [ValueError]),
        ("exclude", ("not an exception",)),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"BreakerPolicy\.{field}"):
        BreakerPolicy(**{field: value})  # type: ignore[arg-type]


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(fail_max=-1)


def test_rate_window_is_off_without_a_failure_rate() -> None:
    assert BreakerPolicy().rate_window == 0
    assert BreakerPolicy(failure_rate=0.5, window=30).rate_window == 30


def test_exclude_accepts_types_and_predicates() -> None:
    policy = BreakerPolicy(exclude=(KeyError, lambda exc: "business" in str(exc)))
    assert len(policy.exclude) == 2


def test_defaults_are_pybreakers() -> None:
    policy = BreakerPolicy()
    assert (policy.fail_max, policy.reset_timeout, policy.success_threshold) == (5, 60.0, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("slow_call_duration", 0),
        ("slow_call_duration", -0.5),
        ("slow_call_duration", float("inf")),
        ("slow_call_duration", True),
        ("slow_call_max", 0),
        ("slow_call_max", 1.5),
    ],
)
def test_invalid_slow_call_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"BreakerPolicy\.{field}"):
        BreakerPolicy(**{field: value})  # type: ignore[arg-type]


def test_slow_calls_are_off_by_default() -> None:
    policy = BreakerPolicy()
    assert policy.slow_call_duration is None and not policy.is_slow(3600.0)
    assert policy.describe()["slow_call_duration"] is None


def test_a_call_is_slow_from_the_threshold_on() -> None:
    policy = BreakerPolicy(slow_call_duration=2.0, slow_call_max=4)
    assert [policy.is_slow(d) for d in (1.99, 2.0, 30.0, None)] == [False, True, True, False]
    assert policy.describe()["slow_call_max"] == 4
