"""The public surface changes only on purpose: this list is the contract."""

import resilience_tasks


def test_exported_names() -> None:
    assert resilience_tasks.__all__ == [
        "DEFAULT_PROTOCOLS",
        "BreakerOpenError",
        "BreakerPolicy",
        "Budget",
        "Concurrency",
        "ConfigurationError",
        "DeadLetter",
        "DeadLetteredError",
        "Defer",
        "DeferredMessage",
        "Degrade",
        "FleetBreaker",
        "Provider",
        "ProviderChain",
        "ProvidersExhaustedError",
        "RateLimit",
        "RateLimitedError",
        "ResilienceError",
        "ResilienceManager",
        "ResourceType",
        "RetryBudget",
        "RetryPolicy",
        "Served",
        "StateUnavailableError",
        "circuit_breaker",
        "is_degraded",
        "raise_for_rate_limit",
        "report_quota",
        "report_usage",
        "retry",
        "served",
        "set_default_manager",
        "with_fallback",
    ]
    for name in resilience_tasks.__all__:
        assert getattr(resilience_tasks, name) is not None


def test_errors_form_one_tree() -> None:
    for name in (
        "BreakerOpenError",
        "ConfigurationError",
        "DeadLetteredError",
        "ProvidersExhaustedError",
        "RateLimitedError",
        "StateUnavailableError",
    ):
        assert issubclass(getattr(resilience_tasks, name), resilience_tasks.ResilienceError)
    assert issubclass(resilience_tasks.ConfigurationError, ValueError)
    assert issubclass(resilience_tasks.Degrade, resilience_tasks.Defer)


def test_the_testing_harness_exports() -> None:
    import resilience_tasks.testing as testing

    assert testing.__all__ == [
        "CeleryProcess",
        "CommandMonitor",
        "FaultServer",
        "FaultStats",
        "HTTPDependency",
        "Mode",
        "MonitorSummary",
        "RedisServer",
        "Supervisor",
        "free_port",
        "kill_group",
        "wait_until",
    ]


def test_the_manager_keeps_its_stores_private() -> None:
    """Operators and users go through methods; the stores and clients may change."""
    public = {name for name in vars(resilience_tasks.ResilienceManager) if not name.startswith("_")}
    assert public == {
        "breaker",
        "budget",
        "check",
        "dead_letter",
        "dead_lettered",
        "deferred_count",
        "providers",
        "pump",
        "quota",
        "release_deferred",
        "replay_dead_letters",
        "resource",
        "run_once",
        "served",
        "spent",
        "task",
        "units",
    }
