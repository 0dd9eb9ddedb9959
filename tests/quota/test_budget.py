"""Budgets, prices and the spend ledger."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks import ConfigurationError
from resilience_tasks.quota.policy import Budget, Pricing, decide
from resilience_tasks.quota.storage import SpendLedger
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
    ledger = SpendLedger(redis_client, "a", KeySpace(prefix))
    pricing = Pricing({"tokens_in": 0.002, "tokens_out": 0.01})
    assert ledger.record("llm", {"tokens_in": 1000, "tokens_out": 100}, pricing) == 3.0
    ledger.record("llm", {"tokens_in": 500}, pricing)
    ledger.record("search", {"queries": 2}, Pricing({"queries": 0.25}))
    assert ledger.spent() == pytest.approx(4.5)
    assert ledger.spent("llm") == pytest.approx(4.0)
    assert ledger.resource_spent("llm") == pytest.approx(4.0)
    assert ledger.units("llm") == {"tokens_in": 1500.0, "tokens_out": 100.0}


def test_a_teams_ledger_records_for_that_team_only(redis_client: redis.Redis, prefix: str) -> None:
    keys = KeySpace(prefix)
    team_a, team_b = SpendLedger(redis_client, "a", keys), SpendLedger(redis_client, "b", keys)
    pricing = Pricing({"tokens_in": 0.01})
    team_a.record("llm", {"tokens_in": 100}, pricing)
    team_b.record("llm", {"tokens_in": 300}, pricing)
    assert team_a.spent() == pytest.approx(1.0)
    assert team_b.spent() == pytest.approx(3.0)
    assert team_a.units("llm") == {"tokens_in": 100.0}
    # the resource's total across teams is the one shared read
    assert team_a.resource_spent("llm") == team_b.resource_spent("llm") == pytest.approx(4.0)
    assert team_a.spend_key() != team_b.spend_key()


def test_spend_keys_expire_and_share_the_hash_tag(redis_client: redis.Redis, prefix: str) -> None:
    keys = KeySpace(prefix)
    SpendLedger(redis_client, "a", keys).record("llm", {"tokens_in": 1}, Pricing({"tokens_in": 1}))
    found = list(redis_client.scan_iter(keys.pattern, count=1000))
    assert len(found) == 4  # team, resource, team on resource, units
    for key in found:
        assert 0 < int(redis_client.ttl(key)) <= 40 * 86_400
