"""Rate limits, provider quotas, spend and budgets with a real worker on the real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager, RetryPolicy, is_degraded
from resilience_tasks.quota.policy import RateLimit
from resilience_tasks.quota.provider import RateLimitedError
from resilience_tasks.quota.report import report_quota, report_usage
from resilience_tasks.quota.storage import FleetRateLimiter
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL, wait_for

Start = Callable[..., None]


class CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one send is one round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def test_breaker_and_limit_cost_two_round_trips(app: Celery, prefix: str, unique: str) -> None:
    pool = redis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    manager = ResilienceManager(
        f"team-{unique}", app=app, key_prefix=prefix, redis_client=redis.Redis(connection_pool=pool)
    )

    @manager.task(resource=f"api-{unique}", rate_limit="1000/second;100000/day")
    def call() -> str:
        return "ok"

    call()  # loads the scripts
    CountingConnection.sends = 0
    for _ in range(10):
        assert call() == "ok"
    assert CountingConnection.sends == 20


def test_a_429_defers_for_retry_after_without_a_failure_or_an_attempt(
    manager: ResilienceManager, worker: Start, pump: None, unique: str
) -> None:
    resource = f"llm-{unique}"
    starts: list[float] = []

    @manager.task(resource=resource, breaker=BreakerPolicy(fail_max=1), retry=RetryPolicy.none())
    def complete() -> str:
        starts.append(time.time())
        if len(starts) == 1:
            raise RateLimitedError(
                "429", retry_after=1.5, headers={"x-ratelimit-remaining-requests": "0"}
            )
        return "done"

    worker()
    result = complete.delay()
    wait_for(lambda: result.state == "DEFERRED")
    assert "retry after 1.5s" in result.info["reason"]
    assert result.get(timeout=20) == "done"
    assert starts[1] - starts[0] >= 1.5
    assert manager.breaker(resource).current_state == "closed"
    assert manager.quota(resource)["remaining_requests"] == 0.0


def test_a_429_pauses_the_whole_fleet_on_that_resource(
    manager: ResilienceManager, worker: Start, pump: None, unique: str
) -> None:
    calls: list[str] = []

    @manager.task(resource=f"llm-{unique}")
    def complete(n: int) -> int:
        calls.append(f"call {n}")
        if n == 0:
            raise RateLimitedError("429", retry_after=2.0)
        return n

    worker()
    first = complete.delay(0)
    wait_for(lambda: first.state == "DEFERRED")
    second = complete.delay(1)
    wait_for(lambda: second.state == "DEFERRED")
    assert "asked to wait (429)" in second.info["reason"]
    assert calls == ["call 0"]  # the second task never reached the provider


def test_usage_spend_and_quota_are_recorded(
    manager: ResilienceManager, worker: Start, unique: str
) -> None:
    resource = f"llm-{unique}"
    manager.resource(resource, prices={"tokens_in": 0.001, "tokens_out": 0.002})

    @manager.task(resource=resource)
    def complete(prompt: str) -> str:
        report_usage(tokens_in=len(prompt) * 100, tokens_out=50)
        report_quota({"x-ratelimit-remaining-tokens": "9000"})
        return prompt.upper()

    worker()
    assert complete.delay("hello").get(timeout=15) == "HELLO"
    assert manager.spent() == pytest.approx(0.6)
    assert manager.spent(resource) == pytest.approx(0.6)
    assert manager.units(resource) == {"tokens_in": 500.0, "tokens_out": 50.0}
    assert manager.quota(resource)["remaining_tokens"] == 9000.0


def test_a_team_over_budget_is_stopped_before_the_call(
    manager: ResilienceManager, worker: Start, unique: str
) -> None:
    resource = f"llm-{unique}"
    manager.resource(resource, prices={"requests": 0.5})
    manager.budget("$1/day")
    calls: list[int] = []

    @manager.task(resource=resource)
    def complete(n: int) -> int:
        calls.append(n)
        report_usage(requests=1)
        return n

    worker()
    assert complete.delay(1).get(timeout=15) == 1
    assert complete.delay(2).get(timeout=15) == 2  # now $1.00 spent
    stopped = complete.delay(3)
    wait_for(lambda: stopped.state == "DEFERRED")
    assert stopped.info["reason"] == (
        f"over budget: team {manager.team} spent $1.00 of its $1/day budget today"
    )
    assert calls == [1, 2]


def test_over_budget_work_with_on_exceed_degrade_runs_on_the_degraded_queue(
    manager: ResilienceManager, worker: Start, unique: str
) -> None:
    resource = f"llm-{unique}"
    manager.resource(resource, prices={"requests": 0.5})
    manager.budget("$1/day", on_exceed="degrade")
    runs: list[tuple[int, bool, str]] = []

    @manager.task(resource=resource, bind=True)
    def complete(self: Any, n: int) -> int:
        runs.append((n, is_degraded(), self.request.delivery_info["routing_key"]))
        if not is_degraded():
            report_usage(requests=1)  # the degraded path spends nothing here
        return n

    worker()  # consumes every declared queue, the degraded one included
    assert complete.delay(1).get(timeout=15) == 1
    assert complete.delay(2).get(timeout=15) == 2  # now $1.00 spent
    assert complete.delay(3).get(timeout=15) == 3  # moved, same id, and served degraded
    assert runs == [
        (1, False, resource),
        (2, False, resource),
        (3, True, f"{resource}.degraded"),
    ]
    assert manager.spent() == pytest.approx(1.0)


def test_a_task_that_waited_on_its_limit_50_times_still_succeeds(
    manager: ResilienceManager,
    worker: Start,
    fast_pump: None,
    unique: str,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    resource = f"api-{unique}"
    limiter = FleetRateLimiter(redis_client, manager.team, KeySpace(prefix))  # another worker
    limit = RateLimit("1/minute", max_wait_in_worker=0.0, jitter=0.0)

    @manager.task(resource=resource, rate_limit=limit, retry=RetryPolicy.none(), bind=True)
    def patient(self: Any) -> int:
        return int(self.request.headers["resilience"]["defer_count"])

    assert limiter.acquire(limit, resource).allowed  # someone took the only unit
    worker(concurrency=1)
    result = patient.delay()
    for waits in range(1, 51):
        wait_for(lambda w=waits: result.state == "DEFERRED" and result.info["defer_count"] >= w)
        assert "rate limit 1 per 1 minute" in result.info["reason"]
        manager.release_deferred()  # come back now rather than in a minute: refused again
    limiter.clear(limit, resource)  # the window frees
    manager.release_deferred()
    assert result.get(timeout=20) >= 50  # it ran, once, with its single attempt intact


def test_interactive_work_goes_ahead_of_batch_work_on_the_same_limit(
    manager: ResilienceManager,
    worker: Start,
    fast_pump: None,
    unique: str,
    redis_client: redis.Redis,
) -> None:
    resource = f"api-{unique}"
    manager.resource(resource, rate_limit=RateLimit("2/second", max_wait_in_worker=0.0))
    ran = f"{unique}:ran"

    @manager.task(resource=resource, name=f"batch-{unique}")
    def batch(n: int) -> None:
        redis_client.rpush(ran, f"batch-{n}")

    @manager.task(resource=resource, name=f"interactive-{unique}", interactive=True)
    def interactive(n: int) -> None:
        redis_client.rpush(ran, f"interactive-{n}")

    worker(concurrency=2)
    batches = [batch.delay(n) for n in range(8)]
    wait_for(lambda: redis_client.llen(ran) >= 2)
    interactives = [interactive.delay(n) for n in range(3)]
    for result in [*batches, *interactives]:
        result.get(timeout=60)
    order = [item.decode() for item in redis_client.lrange(ran, 0, -1)]
    redis_client.delete(ran)
    last_interactive = max(i for i, name in enumerate(order) if name.startswith("interactive"))
    assert last_interactive <= 5, order  # 2 batch first, then the 3 interactive ones (+1 slack)
