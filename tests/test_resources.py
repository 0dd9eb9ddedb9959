"""Declaring resources, limits, prices and budgets: conflicts and bad input fail at once."""

from __future__ import annotations

import pytest

from resilience_tasks import BreakerPolicy, ConfigurationError, ResilienceManager


def test_a_resource_declared_once_is_shared_by_its_tasks(
    manager: ResilienceManager, unique: str
) -> None:
    manager.resource(
        f"llm-{unique}",
        rate_limit="500/minute",
        prices={"tokens_in": 1e-6},
        breaker=BreakerPolicy(fail_max=3),
    )

    @manager.task(resource=f"llm-{unique}")
    def complete() -> None:
        return None

    spec = manager._resources.get(f"llm-{unique}")
    assert spec.rate_limit is not None and spec.rate_limit.spec == "500/minute"
    assert manager.breaker(f"llm-{unique}").policy.fail_max == 3
    assert complete.runtime.resource == f"llm-{unique}"


def test_a_task_level_limit_declares_the_resource_limit(
    manager: ResilienceManager, unique: str
) -> None:
    manager.task(resource=f"api-{unique}", rate_limit="10/second")(lambda: None)
    with pytest.raises(ConfigurationError, match="declare it once"):
        manager.task(resource=f"api-{unique}", rate_limit="20/second", name=f"other-{unique}")(
            lambda: None
        )


def test_a_default_breaker_gives_way_to_a_declared_one(
    manager: ResilienceManager, unique: str
) -> None:
    @manager.task(resource=f"db-{unique}")
    def first() -> None:
        return None

    manager.resource(f"db-{unique}", breaker=BreakerPolicy(fail_max=9))
    assert first.runtime.guard.breaker.policy.fail_max == 9


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda m: m.task(resource="r", rate_limit="ten per minute"), "ten per minute"),
        (lambda m: m.task(resource="r", rate_limit="0/s"), "allows nothing"),
        (lambda m: m.resource("r", prices={"tokens_in": -0.5}), r"prices\['tokens_in'\]"),
        (lambda m: m.budget("$50/day", resource="never-declared"), "unknown resource"),
        (lambda m: m.budget("fifty"), "budget 'fifty'"),
        (lambda m: m.resource("r", rate_limit_errors=("429",)), "rate_limit_errors"),
        (lambda m: m.task(resource="r", interactive="yes"), "interactive"),
    ],
)
def test_bad_declarations_fail_with_a_clear_message(
    manager: ResilienceManager, declare: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        result = declare(manager)  # type: ignore[operator]
        if callable(result):
            result(lambda: None)
