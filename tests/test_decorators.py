"""``@circuit_breaker``, ``@retry`` and ``@with_fallback`` on plain and ``async`` functions,
sharing fleet state with each other and with tasks run by a real worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience_tasks import (
    BreakerOpenError,
    BreakerPolicy,
    ConfigurationError,
    ResilienceManager,
    ResourceType,
    RetryBudget,
    circuit_breaker,
    retry,
    served,
    set_default_manager,
    with_fallback,
)
from resilience_tasks.testing import Supervisor, wait_until
from tests.conftest import REDIS_URL, import_app_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def default(manager: ResilienceManager) -> Iterator[ResilienceManager]:
    set_default_manager(manager)
    yield manager
    set_default_manager(None)


def test_bad_decorations_fail_at_decoration_time() -> None:
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.max_attempts"):
        retry(max_attempts=0)
    with pytest.raises(ConfigurationError, match="RetryPolicy has no field"):
        retry(max_attempts=2, tries=3)
    with pytest.raises(ConfigurationError, match="circuit_breaker resource"):
        circuit_breaker("")
    with pytest.raises(ConfigurationError, match=r"circuit_breaker\.policy"):
        circuit_breaker("x", policy={"fail_max": 2})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"with_fallback\.resource_type"):
        with_fallback("gpu")


def test_without_a_manager_the_first_call_says_how_to_get_one() -> None:
    set_default_manager(None)

    @circuit_breaker("nowhere")
    def f() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="construct one"):
        f()


def test_sync_and_async_breakers_share_one_fleet_state(
    default: ResilienceManager, unique: str
) -> None:
    resource = f"mcp-{unique}"
    policy = BreakerPolicy(fail_max=2, reset_timeout=60)
    calls = {"sync": 0, "async": 0}

    @circuit_breaker(resource, policy=policy)
    def call_tool() -> None:
        calls["sync"] += 1
        raise ConnectionError("tool server down")

    @circuit_breaker(resource, policy=policy)
    async def call_tool_async() -> str:
        calls["async"] += 1
        return "ok"

    with pytest.raises(ConnectionError):
        call_tool()
    with pytest.raises(BreakerOpenError) as tripped:  # as pybreaker: the tripping call says so
        call_tool()
    assert isinstance(tripped.value.__cause__, ConnectionError)
    with pytest.raises(BreakerOpenError):
        call_tool()
    with pytest.raises(BreakerOpenError):
        asyncio.run(call_tool_async())  # opened by the sync calls: the coroutine never runs
    assert calls == {"sync": 2, "async": 0}
    assert default.breaker(resource).current_state == "open"


def test_retry_alone_retries_and_under_a_breaker_draws_on_the_fleet_budget(
    default: ResilienceManager, unique: str
) -> None:
    attempts = {"alone": 0, "budgeted": 0}

    @retry(max_attempts=3, initial=0.0, maximum=0.0, jitter=0.0)
    def alone() -> None:
        attempts["alone"] += 1
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        alone()
    assert attempts["alone"] == 3

    resource = f"budgeted-{unique}"
    default.resource(resource, retry_budget=RetryBudget(ratio=0.0, min_per_second=0.0))

    @circuit_breaker(resource, policy=BreakerPolicy(fail_max=100))
    @retry(max_attempts=3, initial=0.0, maximum=0.0, jitter=0.0)
    def budgeted() -> None:
        attempts["budgeted"] += 1
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        budgeted()
    assert attempts["budgeted"] == 1  # the fleet's budget allows no retry at all
    assert default._retry_budget_for(resource).balance()["calls"] == 1


def test_async_retry_draws_on_the_budget_on_redis_asyncio(
    default: ResilienceManager, unique: str
) -> None:
    resource = f"abudget-{unique}"
    default.resource(resource, retry_budget=RetryBudget(ratio=0.5, min_per_second=0.0))
    attempts = 0

    @retry(max_attempts=5, resource=resource, initial=0.0, maximum=0.0, jitter=0.0)
    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    async def main() -> None:
        for _ in range(4):
            with pytest.raises(ConnectionError):
                await flaky()

    asyncio.run(main())
    balance = default._retry_budget_for(resource).balance()
    assert balance["calls"] == 4 and balance["retries"] == 2  # half of the calls
    assert attempts == 6


def test_with_fallback_serves_from_the_fallback_sync_and_async(
    default: ResilienceManager, unique: str
) -> None:
    def backup(prompt: str) -> str:
        return f"backup: {prompt}"

    @with_fallback(ResourceType.API_QUOTA, name=f"llm-{unique}", fallbacks=[backup])
    def call_llm(prompt: str) -> str:
        raise TimeoutError("primary hangs")

    assert call_llm("hi") == "backup: hi"
    record = served()
    assert record is not None and record.provider == "backup"

    async def abackup(prompt: str) -> str:
        return f"abackup: {prompt}"

    @with_fallback("api_quota", name=f"allm-{unique}", fallbacks=[abackup], cache_ttl=60)
    async def acall_llm(prompt: str) -> str:
        return f"primary: {prompt}"

    assert asyncio.run(acall_llm("hi")) == "primary: hi"


def test_a_decorated_function_and_a_task_share_the_breaker(
    prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = f"tool-{unique}"
    env = {
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_PREFIX": prefix,
        "TEST_TEAM": f"team-{unique}",
        "TEST_RESOURCE": resource,
        "PYTHONPATH": str(ROOT),
    }
    live = import_app_module("tests.apps.decorated_app", env, monkeypatch)

    @circuit_breaker(resource, manager=live.manager)
    async def call_tool() -> None:
        raise ConnectionError("tool server down")

    async def trip() -> None:
        for _ in range(live.POLICY.fail_max):
            with pytest.raises((ConnectionError, BreakerOpenError)):
                await call_tool()

    asyncio.run(trip())
    with Supervisor("tests.apps.decorated_app", env=env, cwd=ROOT) as fleet:
        fleet.worker("tools", queues=[resource], concurrency=1, ready=live.app)
        waiting = live.call_tool.delay(7)
        # The task is parked on the breaker the decorated function opened...
        assert wait_until(lambda: waiting.state == "DEFERRED", timeout=60), waiting.state
        # ...and runs once the breaker lets a trial through.
        assert waiting.get(timeout=60) == 7
    assert live.manager.breaker(resource).current_state == "closed"


def test_an_exhausted_retry_asks_the_budget_only_for_retries_it_makes(
    default: ResilienceManager, unique: str
) -> None:
    resource = f"count-{unique}"

    @retry(max_attempts=2, resource=resource, initial=0.0, maximum=0.0, jitter=0.0)
    def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        down()
    balance = default._retry_budget_for(resource).balance()
    assert balance["calls"] == 1 and balance["retries"] == 1
