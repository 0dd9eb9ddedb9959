"""Provider chains served by real ``celery worker`` processes, against real fault targets.

The providers are OpenAI-compatible HTTP servers (``FaultServer``) called through the official
``openai`` client; faults are switched on them while the workers run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from resilience_tasks.testing import Supervisor, wait_until
from resilience_tasks.testing.fault_server import FaultServer
from tests.conftest import REDIS_URL, import_app_module

ROOT = Path(__file__).resolve().parent.parent.parent
RESET = 2.0
FAIL_MAX = 3


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, FaultServer]]:
    servers = {name: FaultServer(name) for name in ("primary", "backup", "local")}
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def fault(targets: dict[str, FaultServer]) -> Iterator[dict[str, FaultServer]]:
    for server in targets.values():
        server.set("healthy")
        server.reset()
    yield targets
    for server in targets.values():
        server.set("healthy")


def chain_env(
    prefix: str, unique: str, targets: dict[str, FaultServer], **extra: str
) -> dict[str, str]:
    return {
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_PREFIX": prefix,
        "TEST_TEAM": f"team-{unique}",
        "TEST_CHAIN": f"chat-{unique}",
        "TEST_PRIMARY_URL": targets["primary"].openai_base_url,
        "TEST_BACKUP_URL": targets["backup"].openai_base_url,
        "TEST_LOCAL_URL": targets["local"].openai_base_url,
        "TEST_RESET_TIMEOUT": str(RESET),
        "TEST_FAIL_MAX": str(FAIL_MAX),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def results(pending: list[AsyncResult], timeout: float = 120) -> list[dict[str, Any]]:
    assert wait_until(lambda: all(r.ready() for r in pending), timeout=timeout), {
        r.id: r.state for r in pending if not r.ready()
    }
    return [r.get(timeout=5) for r in pending]


def test_primary_down_backup_serves_and_recovery_brings_traffic_back(
    fault: dict[str, FaultServer], prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = chain_env(prefix, unique, fault, TEST_ROLE="normal")
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    chain = env["TEST_CHAIN"]
    with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as fleet:
        fleet.worker("normal", queues=[chain], concurrency=2, ready=live.app)
        assert live.answer.delay("warm").get(timeout=60)["provider"] == f"{chain}-primary"

        fault["primary"].set("down")
        fault["primary"].reset()
        answers = results([live.answer.delay(f"q{n}") for n in range(30)])
        assert {a["provider"] for a in answers} == {f"{chain}-backup"}
        assert all(a["text"].startswith("backup: ") for a in answers)
        # The primary saw at most the breaker's trip count (plus what was in flight on the
        # other worker process as it tripped), plus one trial per reset timeout since.
        reached = fault["primary"].stats().requests
        assert reached <= FAIL_MAX + 1 + 1, reached

        fault["primary"].set("healthy")

        # Within a reset timeout or so the breaker lets a trial through, and traffic returns.
        def back_on_primary() -> bool:
            return live.answer.delay("again").get(timeout=30)["provider"] == f"{chain}-primary"

        assert wait_until(back_on_primary, timeout=30, interval=0.2)
        later = results([live.answer.delay(f"r{n}") for n in range(10)])
        assert {a["provider"] for a in later} == {f"{chain}-primary"}
        assert all(not a["degraded"] and not a["stale"] for a in later)


def test_both_down_work_moves_to_the_degraded_queue_and_only_degraded_workers_serve_it(
    fault: dict[str, FaultServer],
    prefix: str,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
) -> None:
    env = chain_env(prefix, unique, fault)
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    chain = env["TEST_CHAIN"]
    fault["primary"].set("errors", rate=1.0, status=503)
    fault["backup"].set("down")
    with Supervisor("tests.apps.chain_app", env={**env, "TEST_ROLE": "normal"}, cwd=ROOT) as a:
        a.worker("normal", queues=[chain], concurrency=2, ready=live.app)
        pending = [live.answer.delay(f"q{n}") for n in range(12)]
        # Nothing serves them yet: no worker consumes the degraded queue.
        assert wait_until(lambda: redis_client.llen(f"{chain}.degraded") >= 12, timeout=60)
        assert not any(r.ready() for r in pending)
        assert fault["local"].stats().requests == 0  # normal workers never call it
        with Supervisor(
            "tests.apps.chain_app", env={**env, "TEST_ROLE": "degraded"}, cwd=ROOT
        ) as b:
            b.worker("degraded", queues=[f"{chain}.degraded"], concurrency=2, ready=live.app)
            answers = results(pending)

            # The degraded provider goes down too: the work waits, back on its normal queue,
            # and the first normal provider to return serves it under its own id.
            fault["local"].set("down")
            waiting = live.answer.delay("while everything is down")
            assert wait_until(lambda: waiting.state == "DEFERRED", timeout=60), waiting.state
            fault["primary"].set("healthy")
            back = waiting.get(timeout=90)
            assert back["provider"] == f"{chain}-primary" and back["role"] == "normal"
            assert not back["degraded"] and not back["stale"]
    for record, result in zip(answers, pending, strict=True):
        assert record["provider"] == f"{chain}-local"
        assert record["degraded"] is True and record["role"] == "degraded"
        assert record["text"].startswith("local: ")
        assert result.id  # the same task id the caller holds resolved
        assert live.manager.served(result.id)[-1].provider == f"{chain}-local"
    assert fault["local"].stats().outcomes.get("ok") == 12


def test_everything_down_serves_the_stale_answer_or_waits_per_the_chain(
    fault: dict[str, FaultServer], prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No degrade step: the stale cache comes right after the providers, then the queue.
    env = chain_env(
        prefix,
        unique,
        fault,
        TEST_ROLE="normal",
        TEST_PROTOCOLS="circuit_break,retry,switch_provider,cache,queue",
    )
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    chain = env["TEST_CHAIN"]
    with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as fleet:
        fleet.worker("normal", queues=[chain], concurrency=2, ready=live.app)
        fresh = live.answer.delay("cached question").get(timeout=60)
        assert fresh["provider"] == f"{chain}-primary" and not fresh["stale"]

        for name in ("primary", "backup", "local"):
            fault[name].set("down")
        stale = live.answer.delay("cached question").get(timeout=60)
        assert stale["stale"] is True and stale["protocol"] == "cache"
        assert stale["text"] == fresh["text"] and stale["provider"] == f"{chain}-primary"

        # A question never answered before has no stale answer: it waits, and is served
        # once a provider is back, under its own task id.
        waiting = live.answer.delay("a new question")
        assert wait_until(lambda: waiting.state == "DEFERRED", timeout=60), waiting.state
        fault["backup"].set("healthy")
        answer = waiting.get(timeout=90)
        assert answer["provider"] == f"{chain}-backup" and not answer["stale"]


def test_the_concurrency_limit_holds_across_workers_and_a_killed_worker_frees_its_slots(
    fault: dict[str, FaultServer],
    prefix: str,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
) -> None:
    env = chain_env(prefix, unique, fault, TEST_HOLD="0.4", TEST_VISIBILITY_TIMEOUT="10")
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    chain = env["TEST_CHAIN"]
    limit = live.manager._concurrency_limit(live.SLOW)
    with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as fleet:
        fleet.worker("one", queues=[live.SLOW], concurrency=3, ready=live.app)
        fleet.worker("two", queues=[live.SLOW], concurrency=3, ready=live.app)
        pending = [live.slow_call.delay(n) for n in range(24)]
        assert sorted(r.get(timeout=120) for r in results_ready(pending)) == list(range(24))
        seen = [int(v) for v in redis_client.lrange(f"{prefix}:inside-seen", 0, -1)]
        assert len(seen) >= 24 and max(seen) <= 2, seen
        assert limit is not None and limit.in_flight() == 0

        # A worker killed mid-call leaves its lease behind; it expires, and the rest go on.
        env_hold = {**env, "TEST_HOLD": "30"}
        with Supervisor("tests.apps.chain_app", env=env_hold, cwd=ROOT) as doomed:
            victim = doomed.worker("victim", queues=[live.SLOW], concurrency=2, ready=live.app)
            fleet.stop_all()
            stuck = [live.slow_call.delay(100 + n) for n in range(2)]
            assert wait_until(lambda: limit.in_flight() == 2, timeout=60)
            victim.kill()
        assert limit.in_flight() == 2  # the dead worker's leases are still there...
        with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as rescue:
            rescue.worker("rescue", queues=[live.SLOW], concurrency=2, ready=live.app)
            after = [live.slow_call.delay(200 + n) for n in range(4)]
            # ...until they expire: new work gets the slots, and the killed work is redelivered.
            assert sorted(r.get(timeout=120) for r in results_ready(after)) == [200, 201, 202, 203]
            assert sorted(r.get(timeout=120) for r in results_ready(stuck)) == [100, 101]
    _ = chain


def results_ready(pending: list[AsyncResult], timeout: float = 120) -> list[AsyncResult]:
    assert wait_until(lambda: all(r.ready() for r in pending), timeout=timeout), {
        r.id: r.state for r in pending if not r.ready()
    }
    return pending


def test_a_worker_without_the_degraded_queue_of_a_degraded_only_chain_warns_at_start(
    fault: dict[str, FaultServer], prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = chain_env(prefix, unique, fault)
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as fleet:
        lonely = fleet.worker("lonely", queues=[live.LOCAL_ONLY], concurrency=1, ready=live.app)
        assert wait_until(lambda: "has only degraded providers" in lonely.output(), timeout=30)
        assert f"-Q {live.LOCAL_ONLY}.degraded" in lonely.output()
        both = fleet.worker(
            "both",
            queues=[live.LOCAL_ONLY, f"{live.LOCAL_ONLY}.degraded"],
            concurrency=1,
            ready=live.app,
        )
        assert live.ask_local.delay("hi").get(timeout=60) == "local: hi"
        assert "has only degraded providers" not in both.output()


def test_what_served_a_task_is_sent_as_a_task_event_when_events_are_on(
    fault: dict[str, FaultServer], prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = chain_env(prefix, unique, fault, TEST_ROLE="normal")
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    chain = env["TEST_CHAIN"]
    seen: list[dict[str, Any]] = []
    connection = live.app.connection_for_read()
    receiver = live.app.events.Receiver(
        connection, handlers={"task-served": seen.append}, app=live.app
    )
    listener = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
    listener.start()
    try:
        with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as fleet:
            fleet.worker("evented", queues=[chain], concurrency=1, ready=live.app, args=["-E"])
            fault["primary"].set("down")
            result = live.answer.delay("who answers?")
            assert result.get(timeout=60)["provider"] == f"{chain}-backup"
            assert wait_until(lambda: any(e["uuid"] == result.id for e in seen), timeout=30)
    finally:
        receiver.should_stop = True
        listener.join(5)
        connection.release()
    event = next(e for e in seen if e["uuid"] == result.id)
    assert event["provider"] == f"{chain}-backup"
    assert event["protocol"] == "switch_provider"
    assert event["cost"] == pytest.approx(0.02 + 0.01 * event["attempts"] - 0.01)
    assert any("primary: failed" in step for step in event["steps"])


def test_a_degraded_header_of_the_wrong_shape_does_not_degrade_the_work(
    fault: dict[str, FaultServer], prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = chain_env(prefix, unique, fault, TEST_ROLE="normal")
    live = import_app_module("tests.apps.chain_app", env, monkeypatch)
    chain = env["TEST_CHAIN"]
    with Supervisor("tests.apps.chain_app", env=env, cwd=ROOT) as fleet:
        fleet.worker("normal", queues=[chain], concurrency=1, ready=live.app)
        odd = [
            live.answer.apply_async(("q",), headers={"resilience": {"degraded": value}})
            for value in ("yes", 1, ["x"], {"a": 1}, None)
        ]
        for result in odd:
            answer = result.get(timeout=60)
            assert answer["provider"] == f"{chain}-primary" and not answer["degraded"]
