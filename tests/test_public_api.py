"""The public surface changes only on purpose: this list is the contract."""

import resilience_tasks


def test_exported_names() -> None:
    assert resilience_tasks.__all__ == [
        "BreakerOpenError",
        "BreakerPolicy",
        "Budget",
        "ConfigurationError",
        "DeadLetter",
        "DeadLetteredError",
        "Defer",
        "DeferredMessage",
        "Degrade",
        "FleetBreaker",
        "RateLimit",
        "RateLimitedError",
        "ResilienceError",
        "ResilienceManager",
        "RetryPolicy",
        "StateUnavailableError",
        "raise_for_rate_limit",
        "report_quota",
        "report_usage",
    ]
    for name in resilience_tasks.__all__:
        assert getattr(resilience_tasks, name) is not None


def test_errors_form_one_tree() -> None:
    for name in (
        "BreakerOpenError",
        "ConfigurationError",
        "DeadLetteredError",
        "RateLimitedError",
        "StateUnavailableError",
    ):
        assert issubclass(getattr(resilience_tasks, name), resilience_tasks.ResilienceError)
    assert issubclass(resilience_tasks.ConfigurationError, ValueError)
    assert issubclass(resilience_tasks.Degrade, resilience_tasks.Defer)
