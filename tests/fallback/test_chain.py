"""A provider chain called in-process: declaration checks, the protocol table, switching,
cost and quality, cool-downs, budgets, the stale cache, the retry budget and hedging.

Providers are plain functions here where the test is about the chain's decisions, and real
HTTP fault targets (through the ``openai`` client) where it is about time: hedging.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from resilience_tasks import (
    DEFAULT_PROTOCOLS,
    BreakerPolicy,
    ConfigurationError,
    Provider,
    ProvidersExhaustedError,
    RateLimitedError,
    ResilienceManager,
    ResourceType,
    RetryBudget,
    RetryPolicy,
    served,
)
from resilience_tasks.providers import openai_chat
from resilience_tasks.testing.fault_server import FaultServer
from tests.conftest import REDIS_URL


class Dependency:
    """A callable provider function that counts its calls and fails while told to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.error: BaseException | None = None

    def __call__(self, prompt: str) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return f"{self.name}: {prompt}"


@pytest.fixture
def deps() -> dict[str, Dependency]:
    return {name: Dependency(name) for name in ("cheap", "pricey", "local")}


def three(deps: dict[str, Dependency], **breaker: Any) -> list[Provider]:
    policy = BreakerPolicy(**{"fail_max": 2, "reset_timeout": 60.0, **breaker})
    return [
        Provider("pricey", deps["pricey"], cost=0.02, quality=2, breaker=policy),
        Provider("cheap", deps["cheap"], cost=0.01, quality=1, breaker=policy),
        Provider("local", deps["local"], cost=0.0, degraded=True, breaker=policy),
    ]


# -- declaration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda m: m.providers("c", []), "providers must be a non-empty list"),
        (lambda m: m.providers("c", [Provider("a", str), Provider("a", str)]), "unique"),
        (lambda m: m.providers("c", [Provider("c", str)]), "chain's name"),
        (lambda m: m.providers("c", ["a"]), "Provider objects"),
        (lambda m: m.providers("c", [Provider("a", str)], resource_type="gpu"), "resource_type"),
        (lambda m: m.providers("c", [Provider("a", str)], protocols=["pray"]), "protocols"),
        (
            lambda m: m.providers("c", [Provider("a", str)], protocols=["cache", "cache"]),
            "more than once",
        ),
        (lambda m: m.providers("c", [Provider("a", str)], cache_ttl=-1), "cache_ttl"),
        (lambda m: m.providers("c", [Provider("a", str)], hedge_after=0), "hedge_after"),
        (lambda m: m.providers("c:x", [Provider("a", str)]), "chain name"),
    ],
)
def test_bad_chains_fail_at_declaration_naming_the_field(
    manager: ResilienceManager, build: Callable[[ResilienceManager], Any], names: str
) -> None:
    with pytest.raises(ConfigurationError, match=names):
        build(manager)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"cost": -0.01}, r"Provider\('p'\).cost"),
        ({"cost": float("nan")}, r"Provider\('p'\).cost"),
        ({"quality": 1.5}, r"Provider\('p'\).quality"),
        ({"degraded": "yes"}, r"Provider\('p'\).degraded"),
        ({"breaker": {"fail_max": 3}}, r"Provider\('p'\).breaker"),
    ],
)
def test_bad_providers_fail_naming_the_field(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        Provider("p", str, **kwargs)


def test_every_resource_type_has_a_default_order_least_disruptive_first() -> None:
    for kind in ResourceType:
        order = DEFAULT_PROTOCOLS[kind]
        assert order, kind
        if "queue" in order:  # waiting is the most disruptive: always last
            assert order[-1] == "queue"
    assert "cache" not in DEFAULT_PROTOCOLS[ResourceType.DATABASE]  # never stale
    assert ResourceType.of("API_QUOTA") is ResourceType.API_QUOTA


# -- switching -----------------------------------------------------------------------------


def test_the_cheapest_provider_serves_and_a_minimum_quality_skips_it(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps))
    assert chat("a") == "cheap: a"
    assert served() is not None and served().provider == "cheap"  # type: ignore[union-attr]
    assert chat.at_least(2)("b") == "pricey: b"
    assert deps["local"].calls == 0  # a degraded provider is never the first choice
    assert manager.spent("cheap") == pytest.approx(0.01)
    assert manager.spent("pricey") == pytest.approx(0.02)


def test_a_failing_provider_trips_and_the_next_serves_without_calling_it_again(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps), retry=RetryPolicy.none())
    deps["cheap"].error = ConnectionError("down")
    answers = [chat(f"q{n}") for n in range(10)]
    assert answers == [f"pricey: q{n}" for n in range(10)]
    assert deps["cheap"].calls == 2  # fail_max, then its breaker keeps calls away
    record = served()
    assert record is not None and record.protocol == "switch_provider"
    assert record.steps[0] == "cheap: breaker open"
    assert manager.breaker("cheap").current_state == "open"


def test_a_429_cools_the_provider_down_for_the_fleet_and_calls_switch(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps))
    deps["cheap"].error = RateLimitedError("slow down", retry_after=60)
    assert chat("a") == "pricey: a"
    assert chat("b") == "pricey: b"
    assert deps["cheap"].calls == 1  # the cool-down refuses it before any call
    assert manager.breaker("cheap").current_state == "closed"  # a 429 is not a failure
    record = served()
    assert record is not None and "asked to wait (429)" in record.steps[0]


def test_an_over_budget_team_is_switched_to_the_free_provider(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps), degrade_in_place=True)
    manager.budget("$0.015/day")
    assert chat("a") == "cheap: a"  # spends 0.01
    assert chat("b") == "cheap: b"  # 0.02: over budget from now on
    assert chat("c") == "local: c"
    record = served()
    assert record is not None and record.degraded and record.protocol == "degrade"
    assert any("over budget" in step for step in record.steps)


def test_outside_a_task_the_degraded_provider_serves_in_place(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps), retry=RetryPolicy.none())
    deps["cheap"].error = deps["pricey"].error = TimeoutError("hung")
    assert chat("a") == "local: a"
    record = served()
    assert record is not None and record.degraded and record.provider == "local"


def test_the_stale_answer_when_nothing_can_serve_then_an_error_naming_every_step(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers(
        "chat", three(deps), cache_ttl=60, protocols=["switch_provider", "cache"]
    )
    assert chat("known") == "cheap: known"
    for dep in deps.values():
        dep.error = ConnectionError("down")
    assert chat("known") == "cheap: known"
    record = served()
    assert record is not None and record.stale and record.protocol == "cache"
    assert record.age is not None and record.age >= 0
    with pytest.raises(ProvidersExhaustedError) as raised:
        chat("never asked")
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert any("cheap: failed" in step for step in raised.value.steps)
    assert any("pricey: failed" in step for step in raised.value.steps)


def test_without_switch_provider_only_the_first_is_ever_called(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps), protocols=["circuit_break"])
    deps["cheap"].error = ConnectionError("down")
    with pytest.raises(ProvidersExhaustedError):
        chat("a")
    assert deps["pricey"].calls == 0


def test_the_callers_own_bug_is_raised_at_once_without_switching(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps))
    with pytest.raises(TypeError):
        chat("a", "unexpected")
    assert deps["pricey"].calls == 0
    assert manager.breaker("cheap").current_state == "closed"


def test_a_retry_the_fleet_budget_refuses_falls_through_to_the_next_provider(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    retry = RetryPolicy(max_attempts=5, initial=0.0, maximum=0.0, jitter=0.0)
    providers = three(deps, fail_max=100)
    providers[1] = Provider(
        "cheap",
        deps["cheap"],
        cost=0.01,
        retry_budget=RetryBudget(ratio=0.0, min_per_second=0.0),
    )
    chat = manager.providers("chat", providers, retry=retry)
    deps["cheap"].error = ConnectionError("down")
    assert chat("a") == "pricey: a"
    assert deps["cheap"].calls == 1  # no retry: the budget allows none
    record = served()
    assert record is not None
    assert "cheap: retry refused by the fleet retry budget" in record.steps


def test_retries_on_one_provider_within_its_budget(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    flaky = Dependency("flaky")
    calls = Counter[str]()

    def once_failing(prompt: str) -> str:
        calls[prompt] += 1
        if calls[prompt] == 1:
            raise ConnectionError("blip")
        return flaky(prompt)

    retry = RetryPolicy(max_attempts=2, initial=0.0, maximum=0.0, jitter=0.0)
    chat = manager.providers("chat", [Provider("flaky", once_failing)], retry=retry)
    assert chat("a") == "flaky: a"
    record = served()
    assert record is not None and record.attempts == 2 and record.protocol == "call"


# -- hedging over real HTTP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_and_fast() -> Iterator[tuple[FaultServer, FaultServer]]:
    slow = FaultServer("slow", mode="slow_tail", fraction=0.25, delay=4.0)
    fast = FaultServer("fast")
    with slow, fast:
        yield slow, fast


def _hedged_chain(
    manager: ResilienceManager,
    servers: tuple[FaultServer, FaultServer],
    hedge_after: float | None,
    asynchronous: bool = False,
) -> Any:
    slow, fast = servers
    options = {"model": "fault-chat", "timeout": 10.0, "asynchronous": asynchronous}
    return manager.providers(
        f"hedged-{hedge_after}-{asynchronous}",
        [
            openai_chat(
                f"slow-{hedge_after}-{asynchronous}",
                base_url=slow.openai_base_url,
                cost=0.001,
                **options,
            ),
            openai_chat(
                f"fast-{hedge_after}-{asynchronous}",
                base_url=fast.openai_base_url,
                cost=0.002,
                **options,
            ),
        ],
        hedge_after=hedge_after,
    )


def test_hedging_answers_the_slow_tail_from_the_next_provider(
    manager: ResilienceManager, slow_and_fast: tuple[FaultServer, FaultServer]
) -> None:
    slow, fast = slow_and_fast
    slow.reset()
    fast.reset()
    hedged = _hedged_chain(manager, slow_and_fast, hedge_after=1.0)
    records, latencies = [], []
    for n in range(8):
        started = time.monotonic()
        assert hedged(f"q{n}").endswith(f": q{n}")
        latencies.append(time.monotonic() - started)
        records.append(served())
    by = Counter(record.protocol for record in records)
    assert by["hedge"] == 2 and by["call"] == 6, by  # every 4th call of the slow one is slow
    assert max(latencies) < 4.0  # no caller waited out the slow tail
    for record in records:
        if record.protocol == "hedge":
            assert record.provider.startswith("fast") and record.attempts == 2
            assert record.cost == pytest.approx(0.003)  # the loser is charged too


def test_async_hedging_cancels_the_loser(
    manager: ResilienceManager, slow_and_fast: tuple[FaultServer, FaultServer]
) -> None:
    slow, _ = slow_and_fast
    slow.set("latency", delay=5.0)
    try:
        hedged = _hedged_chain(manager, slow_and_fast, hedge_after=0.5, asynchronous=True)

        async def main() -> Any:
            started = time.monotonic()
            text = await hedged.acall("q")
            return text, time.monotonic() - started, served()

        text, took, record = asyncio.run(main())
        assert text == "fast: q" and took < 5.0
        assert record.protocol == "hedge"
        assert any("hedged call cancelled" in step for step in record.steps)
    finally:
        slow.set("slow_tail", fraction=0.25, delay=4.0)


def test_an_async_call_runs_a_synchronous_provider_off_the_event_loop(
    manager: ResilienceManager,
) -> None:
    def blocking(prompt: str) -> str:
        time.sleep(0.5)
        return f"sync: {prompt}"

    chat = manager.providers("chat", [Provider("blocking", blocking)])

    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        running = asyncio.ensure_future(ticker())
        try:
            return await chat.acall("a"), ticks
        finally:
            running.cancel()

    text, ticks = asyncio.run(main())
    assert text == "sync: a"
    assert ticks > 5  # the loop kept turning while the provider slept


def test_a_minimum_quality_holds_on_the_degraded_path_too(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    chat = manager.providers("chat", three(deps), retry=RetryPolicy.none())
    deps["pricey"].error = ConnectionError("down")
    with pytest.raises(ProvidersExhaustedError):
        chat.at_least(2)("a")  # the free local model (quality 0) may not answer it
    assert deps["local"].calls == 0
    assert chat("b") == "cheap: b"


def test_a_full_concurrency_limit_moves_the_call_on_or_waits_in_the_worker_if_allowed(
    manager: ResilienceManager, deps: dict[str, Dependency]
) -> None:
    from resilience_tasks import Concurrency

    providers = [
        Provider("patient", deps["cheap"], concurrency=Concurrency(1, max_wait_in_worker=30.0)),
        Provider("busy", deps["pricey"], cost=0.01, concurrency=Concurrency(1)),
    ]
    chat = manager.providers("chat", providers)
    busy = manager._concurrency_limit("busy")
    patient = manager._concurrency_limit("patient")
    assert busy is not None and patient is not None
    held = patient.acquire()  # another worker holds the only slot of each
    assert held is not None and busy.acquire() is not None
    threading.Timer(0.3, patient.release, args=(held, "success")).start()
    assert chat("a") == "cheap: a"  # waited in the worker for the slot to free up

    chat2 = manager.providers("chat2", [Provider("busy", deps["pricey"]), providers[0]])
    deps["cheap"].error = ConnectionError("down")
    with pytest.raises(ProvidersExhaustedError) as raised:
        chat2("b")
    assert any("at its fleet concurrency limit" in step for step in raised.value.steps)
    assert deps["pricey"].calls == 0  # refused without a call


def test_a_healthy_provider_call_is_one_round_trip_its_budget_deposit_included(
    app: Any, prefix: str, unique: str
) -> None:
    """The admission counts the first call in the provider's retry budget in the same script;
    a fast success with nothing pending writes nothing more."""
    from tests.test_quota_end_to_end import CountingConnection

    pool = redis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    manager = ResilienceManager(
        f"team-{unique}", app=app, key_prefix=prefix, redis_client=redis.Redis(connection_pool=pool)
    )
    chat = manager.providers("chat", [Provider("free", lambda prompt: f"free: {prompt}")])
    assert chat("warm") == "free: warm"  # loads the scripts
    CountingConnection.sends = 0
    for n in range(5):
        assert chat(f"q{n}") == f"free: q{n}"
    assert CountingConnection.sends == 5
    budget = manager._retry_budget("free")
    assert budget is not None and budget.balance()["calls"] == 6
