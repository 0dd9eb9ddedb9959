"""Budgets, prices and the spend ledger."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks import ConfigurationError
from resilience_tasks.quota.budget import Budget, Pricing, SpendLedger, decide
from resilience_tasks.state.keys import KeySpace


@pytest.mark.parametrize("spec", ["$50/day", "50/day", "$12.5 / day", "$3/d"])
def test_budgets_parse(spec: str) -> None:
    assert Budget(spec).amount > 0


@pytest.mark.parametrize("spec", ["fifty dollars", "$50/week", "$0/day", "$-5/day", ""])
def test_malformed_budgets_are_refused(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="budget"):
        Budget(spec)


def test_on_exceed_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="on_exceed"):
        Budget("$5/day", on_exceed="panic")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prices",
    [
        {"tokens_in": -1.0},
        {"tokens_in": float("inf")},
        {},
        {"tokens in": 1.0},
        {"tokens_in": "cheap"},
    ],
)
def test_bad_prices_are_refused(prices: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="prices"):
        Pricing(prices)


def test_decide_names_who_spent_what() -> None:
    budget = Budget("$10/day")
    assert decide(budget, 9.99, "team a").allowed
    decision = decide(budget, 10.0, "team a")
    assert not decision.allowed
    assert decision.reason == "team a spent $10.00 of its $10/day budget today"
    assert 0 < decision.retry_after <= 86_400


def test_the_ledger_adds_spend_per_team_resource_and_day(
    redis_client: redis.Redis, prefix: str
) -> None:
    ledger = SpendLedger(redis_client, KeySpace(prefix))
    pricing = Pricing({"tokens_in": 0.002, "tokens_out": 0.01})
    assert ledger.record("a", "llm", {"tokens_in": 1000, "tokens_out": 100}, pricing) == 3.0
    ledger.record("a", "llm", {"tokens_in": 500}, pricing)
    ledger.record("b", "llm", {"tokens_in": 500}, pricing)
    assert ledger.spent("a") == pytest.approx(4.0)
    assert ledger.spent("a", "llm") == pytest.approx(4.0)
    assert ledger.resource_spent("llm") == pytest.approx(5.0)
    assert ledger.units("a", "llm") == {"tokens_in": 1500.0, "tokens_out": 100.0}
