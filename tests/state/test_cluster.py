"""The core on a real Redis Cluster: three primaries of the machine's ``redis-server`` on free
loopback ports, reached through ``connection.connect("redis+cluster://...")``.

Cluster refuses a script or transaction whose keys live in different slots (``CROSSSLOT``);
these tests run every store's scripts there, the breaker's admission with the keys the quota
gates watch (spend, cool-down, the interactive mark) and a delivery counter included.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from resilience_tasks import ResilienceManager, report_usage
from resilience_tasks.admission import Admitter, Deliveries
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.deferred import DeadLetterStore, DeferredMessage, DeferredStore
from resilience_tasks.errors import BreakerOpenError, Defer
from resilience_tasks.gate import Call
from resilience_tasks.idempotency import IdempotencyStore
from resilience_tasks.policies import BreakerPolicy
from resilience_tasks.quota.gates import BudgetGate, CooldownGate
from resilience_tasks.quota.policy import Budget, Pricing, RateLimit
from resilience_tasks.quota.storage import CooldownStore, FleetRateLimiter, QuotaStore, SpendLedger
from resilience_tasks.state.connection import connect
from resilience_tasks.state.keys import KeySpace
from tests.conftest import pumping
from tests.state.servers import redis_cluster

TEAM = "team-a"


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


@pytest.fixture
def client(cluster_url: str) -> redis.RedisCluster:
    made = connect(cluster_url)
    assert isinstance(made, redis.RedisCluster)
    return made


@pytest.fixture
def keys() -> KeySpace:
    return KeySpace(f"rt-{uuid.uuid4().hex[:8]}")


def test_the_cluster_has_three_primaries_and_a_deployment_one_slot(
    client: redis.RedisCluster, keys: KeySpace
) -> None:
    assert len(client.get_primaries()) == 3  # type: ignore[no-untyped-call]
    names = [
        keys.breaker("llm"),
        keys.deliveries(TEAM, "t1"),
        keys.team_spend(TEAM, "2026-01-01"),
        keys.rate_window("LIMITER/llm/1/1/minute"),
        keys.deferred_parked(TEAM, "llm"),
        keys.dead_letters(TEAM),
    ]
    slot = client.keyslot  # untyped in redis-py
    assert len({slot(name) for name in names}) == 1  # type: ignore[no-untyped-call]
    # without the tag these names would be spread over the shards
    untagged = [name.replace(keys.tag, keys.prefix) for name in names]
    assert len({slot(name) for name in untagged}) > 1  # type: ignore[no-untyped-call]


def breaker(client: redis.RedisCluster, keys: KeySpace, **policy: Any) -> FleetBreaker:
    return FleetBreaker("llm", BreakerPolicy(**policy), RedisFleetStorage(client, "llm", keys))


def failing() -> None:
    raise ConnectionError("dependency down")


def test_the_breaker_opens_refuses_and_closes(client: redis.RedisCluster, keys: KeySpace) -> None:
    fleet = breaker(client, keys, fail_max=2, reset_timeout=60)
    assert fleet.call(lambda: "ok") == "ok"
    with pytest.raises(ConnectionError):
        fleet.call(failing)
    with pytest.raises(BreakerOpenError):  # the tripping call (pybreaker's default)
        fleet.call(failing)
    other_process = breaker(client, keys, fail_max=2, reset_timeout=60)
    assert other_process.current_state == "open"
    with pytest.raises(BreakerOpenError):
        other_process.call(lambda: "refused")
    other_process.close()
    assert fleet.call(lambda: "back") == "back"


def test_one_admission_reads_every_gates_keys_and_counts_a_delivery(
    client: redis.RedisCluster, keys: KeySpace
) -> None:
    fleet = breaker(client, keys, fail_max=5)
    ledger = SpendLedger(client, TEAM, keys)
    cooldowns = CooldownStore(client, keys)
    limiter = FleetRateLimiter(client, TEAM, keys)
    ledger.record("llm", {"tokens_in": 1000}, Pricing({"tokens_in": 0.01}))
    cooldowns.start("llm", 30)
    limiter.interactive_waits("llm", 10)
    gates = (
        CooldownGate(cooldowns, "llm"),
        BudgetGate(ledger, "llm", lambda: (Budget("$5/day"), None)),
    )
    watch = (*(key for gate in gates for key in gate.watch(Call())), limiter.waiting_key("llm"))
    admitter = Admitter(fleet, Deliveries(keys, TEAM, max_deliveries=5, ttl=3600))
    first = admitter.admit("t1", watch)
    again = admitter.admit("t1", watch)
    assert first.admission.allowed and again.admission.allowed
    assert client.get(keys.deliveries(TEAM, "t1")) == b"2"
    watched = again.watched
    assert float(watched[ledger.spend_key()] or 0) == pytest.approx(10.0)
    assert limiter.waiting_for(watched[limiter.waiting_key("llm")]) > 5
    with pytest.raises(Defer, match="429"):
        gates[0].check(Call(), watched)
    with pytest.raises(Defer, match="over budget"):
        gates[1].check(Call(), watched)


def test_the_rate_limiter_takes_units_from_several_windows(
    client: redis.RedisCluster, keys: KeySpace
) -> None:
    limiter = FleetRateLimiter(client, TEAM, keys)
    limit = RateLimit("2/minute;5/hour", per_team=True)
    assert [limiter.acquire(limit, "llm").allowed for _ in range(3)] == [True, True, False]
    assert limiter.remaining(limit, "llm") == {"2 per 1 minute": 0, "5 per 1 hour": 3}
    limiter.clear(limit, "llm")
    assert limiter.remaining(limit, "llm") == {"2 per 1 minute": 2, "5 per 1 hour": 5}


def test_the_ledger_and_the_quota_store(client: redis.RedisCluster, keys: KeySpace) -> None:
    ledger = SpendLedger(client, TEAM, keys)
    ledger.record("llm", {"tokens_in": 100, "tokens_out": 10}, Pricing({"tokens_in": 0.01}))
    assert ledger.spent() == pytest.approx(1.0)
    assert ledger.units("llm") == {"tokens_in": 100.0, "tokens_out": 10.0}
    assert ledger.resource_spent("llm") == pytest.approx(1.0)
    quotas = QuotaStore(client, keys)
    quotas.observe(
        "llm", {"x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "2s"}
    )
    assert quotas.get("llm")["remaining_requests"] == 7.0


def test_the_deferred_store_adds_claims_and_forgets(
    client: redis.RedisCluster, keys: KeySpace
) -> None:
    store = DeferredStore(client, TEAM, keys)
    message = DeferredMessage(task_id="t1", task="tasks.call", resource="llm")
    store.add(message, 0)
    store.add(DeferredMessage(task_id="t2", task="tasks.call", resource="llm"), 3600)
    claimed = store.claim_due(limit=10, lease=60)
    assert [entry.task_id for entry in claimed] == ["t1"]
    store.published(["t1"], lease=60)
    assert store.started("t1", "llm")
    assert store.get("t1") is None
    assert store.release() == 1  # t2 becomes due now
    assert [entry.task_id for entry in store.claim_due(limit=10)] == ["t2"]
    store.forget("t2")
    assert store.depth() == 0


def test_parked_work_comes_back_through_the_breakers_keys(
    client: redis.RedisCluster, keys: KeySpace
) -> None:
    store = DeferredStore(client, TEAM, keys)
    store.park(DeferredMessage(task_id="p1", task="tasks.call", resource="llm"), "llm", 3600)
    spot = store.parking_spot("llm", reset_timeout=1.0, trial_calls=1)
    claimed = store.claim_parked([spot], limit=10)  # a closed breaker takes it back at once
    assert [entry.task_id for entry in claimed] == ["p1"]
    assert store.reconcile(["llm"]) == 0


def test_the_dead_letter_store(client: redis.RedisCluster, keys: KeySpace) -> None:
    dead = DeadLetterStore(client, TEAM, keys)  # type: ignore[arg-type]
    dead.add("d1", "malformed", b"\x00garbage")
    dead.add("d2", "too many deliveries", {"task": "tasks.call"})
    assert dead.count() == 2
    assert [entry.task_id for entry in dead.list()] == ["d2", "d1"]
    entry = dead.get("d1")
    assert entry is not None and entry.reason == "malformed"
    dead.remove("d1")
    assert dead.count() == 1


def test_idempotency(client: redis.RedisCluster, keys: KeySpace) -> None:
    once = IdempotencyStore(client, TEAM, keys)
    calls: list[int] = []

    def effect() -> int:
        calls.append(1)
        return 42

    assert once.run_once("charge-1", effect) == 42
    assert once.run_once("charge-1", effect) == 42
    assert calls == [1]


def test_a_manager_keeps_its_state_on_the_cluster(
    cluster_url: str, app: Celery, unique: str, worker: Callable[..., None]
) -> None:
    """Real tasks through a real worker (broker on the shared Redis, state on the cluster):
    parked on an open breaker, brought back by the pump, rate-limited and priced."""
    manager = ResilienceManager(
        f"team-{unique}", app=app, redis_url=cluster_url, key_prefix=f"rt-{unique}"
    )
    resource = f"api-{unique}"
    manager.resource(resource, rate_limit="50/second", prices={"calls": 0.5})
    manager.budget("$100/day")

    @manager.task(resource=resource, breaker=BreakerPolicy(fail_max=1, reset_timeout=1))
    def double(n: int) -> int:
        report_usage(calls=1)
        return n * 2

    manager.breaker(resource).open()  # every call is refused until a trial closes it again
    worker()
    with pumping(manager, 0.1):
        results = [double.delay(n) for n in range(5)]
        assert [result.get(timeout=90) for result in results] == [0, 2, 4, 6, 8]
    assert manager.breaker(resource).current_state == "closed"
    ledger = SpendLedger(connect(cluster_url), f"team-{unique}", KeySpace(f"rt-{unique}"))
    assert ledger.spent() == pytest.approx(2.5)
