import pytest

from resilience_tasks import ConfigurationError, RetryPolicy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", 0),
        ("max_attempts", 1.5),
        ("initial", -0.1),
        ("maximum", -1),
        ("jitter", -1),
        ("max_delay", 0),
        ("in_process_budget", -1),
        ("backoff", "quadratic"),
        ("retry_on", (ValueError, "x")),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"RetryPolicy\.{field}"):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_maximum_below_initial_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="maximum"):
        RetryPolicy.exponential(initial=5.0, maximum=1.0)


def test_exponential_waits_double_and_are_capped() -> None:
    policy = RetryPolicy.exponential(max_attempts=10, initial=0.5, maximum=4.0, jitter=0.0)
    assert [policy.wait_after(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_within_its_bound() -> None:
    policy = RetryPolicy.fixed(wait=1.0, jitter=0.3)
    waits = [policy.wait_after(1) for _ in range(200)]
    assert all(1.0 <= wait <= 1.3 for wait in waits)
    assert len(set(waits)) > 1


def test_linear_waits_grow_by_the_increment() -> None:
    policy = RetryPolicy.linear(initial=1.0, increment=0.5, maximum=2.0, jitter=0.0)
    assert [policy.wait_after(n) for n in range(1, 5)] == [1.0, 1.5, 2.0, 2.0]


def test_presets_differ_and_take_overrides() -> None:
    assert RetryPolicy.database().retry_on == (ConnectionError, TimeoutError, OSError)
    assert RetryPolicy.llm_api().maximum > RetryPolicy.http_api().maximum
    assert RetryPolicy.tool_server(max_attempts=2).max_attempts == 2
    with pytest.raises(ConfigurationError, match="max_attempt"):
        RetryPolicy.http_api(max_attempt=2)
