"""ResilienceManager end to end: real Redis, a real in-process worker, messages on the broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore
from celery.result import AsyncResult

from resilience_tasks import (
    BreakerPolicy,
    ConfigurationError,
    DeadLetteredError,
    ResilienceManager,
    RetryPolicy,
)
from tests.conftest import wait_for

Start = Callable[..., None]


def test_a_task_runs_and_returns(manager: ResilienceManager, worker: Start, unique: str) -> None:
    @manager.task(resource=f"svc-{unique}")
    def double(x: int) -> int:
        return x * 2

    worker()
    assert double.delay(21).get(timeout=15) == 42
    assert double(4) == 8  # a direct call runs through the guard too


def test_settings_that_guarantees_rest_on_are_installed(manager: ResilienceManager) -> None:
    conf = manager.app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 900.0
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1
    assert f"resilience-pump-{manager.team}" in conf.beat_schedule


def test_open_breaker_defers_and_the_same_result_resolves(
    manager: ResilienceManager, worker: Start, pump: None, unique: str
) -> None:
    calls: list[int] = []
    resource = f"svc-{unique}"

    @manager.task(resource=resource, breaker=BreakerPolicy(fail_max=1, reset_timeout=60))
    def fetch(x: int) -> int:
        calls.append(x)
        return x + 1

    manager.breaker(resource).open()
    worker()
    results = [fetch.delay(i) for i in range(5)]
    wait_for(lambda: all(r.state == "DEFERRED" for r in results))
    assert calls == []  # the dependency was never called
    assert manager.deferred_count() == 5
    info = results[0].info
    assert info["reason"] == "breaker open"

    manager.breaker(resource).close()  # an operator closes it and releases the waiting work
    assert manager.release_deferred() == 5
    assert sorted(r.get(timeout=15) for r in results) == [1, 2, 3, 4, 5]
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert manager.deferred_count() == 0


def test_a_dead_dependency_trips_and_recovers_through_a_trial(
    manager: ResilienceManager, worker: Start, pump: None, unique: str
) -> None:
    down = {"value": True}
    hits: list[int] = []

    @manager.task(resource=f"svc-{unique}", breaker=BreakerPolicy(fail_max=2, reset_timeout=1))
    def call(x: int) -> int:
        hits.append(x)
        if down["value"]:
            raise ConnectionError("down")
        return x

    worker(concurrency=2)
    failed = [call.delay(i) for i in range(2)]
    for result in failed:
        with pytest.raises(ConnectionError):
            result.get(timeout=15)
    waiting = [call.delay(i) for i in range(10, 16)]
    wait_for(lambda: all(r.state == "DEFERRED" for r in waiting))
    time.sleep(2.5)  # two reset timeouts: two trials, both failing
    down["value"] = False
    assert sorted(r.get(timeout=20) for r in waiting) == list(range(10, 16))
    outage_hits = len(hits) - 6  # the successful runs at the end
    assert outage_hits <= 2 + 4  # two to trip, about one trial per reset_timeout


def test_in_process_retries_then_success(
    manager: ResilienceManager, worker: Start, unique: str
) -> None:
    attempts: list[float] = []

    @manager.task(
        resource=f"svc-{unique}", retry=RetryPolicy.fixed(max_attempts=3, wait=0.1, jitter=0.0)
    )
    def flaky() -> int:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise TimeoutError("slow")
        return len(attempts)

    worker()
    assert flaky.delay().get(timeout=15) == 3
    assert attempts[2] - attempts[0] >= 0.2


def test_long_backoff_frees_the_worker_and_keeps_the_attempt_count(
    manager: ResilienceManager, worker: Start, pump: None, unique: str
) -> None:
    attempts: list[int] = []

    @manager.task(
        resource=f"svc-{unique}",
        retry=RetryPolicy.fixed(max_attempts=3, wait=1.0, jitter=0.0, in_process_budget=0.5),
    )
    def slow_to_recover() -> int:
        attempts.append(1)
        raise ConnectionError("still down")

    worker()
    result = slow_to_recover.delay()
    wait_for(lambda: result.state == "DEFERRED")
    assert "retry 2/3" in result.info["reason"]
    with pytest.raises(ConnectionError):
        result.get(timeout=20)
    assert len(attempts) == 3  # the budget survived both trips through the deferred store


def test_errors_not_named_by_the_policy_are_not_retried(
    manager: ResilienceManager, worker: Start, unique: str
) -> None:
    attempts: list[int] = []

    @manager.task(
        resource=f"svc-{unique}",
        retry=RetryPolicy.fixed(max_attempts=5, wait=0.01, retry_on=(TimeoutError,)),
    )
    def bad_request() -> None:
        attempts.append(1)
        raise ValueError("the request is wrong")

    worker()
    with pytest.raises(ValueError):
        bad_request.delay().get(timeout=15)
    assert attempts == [1]


def test_celery_control_exceptions_do_not_trip_the_breaker(
    manager: ResilienceManager, worker: Start, unique: str
) -> None:
    resource = f"svc-{unique}"

    @manager.task(resource=resource, breaker=BreakerPolicy(fail_max=1))
    def ignored() -> None:
        raise Ignore()

    worker()
    for _ in range(3):
        ignored.delay()
    time.sleep(1.0)
    assert manager.breaker(resource).current_state == "closed"


def wait_out_max_defer_age(
    manager: ResilienceManager, resource: str, task: Any, *args: Any
) -> AsyncResult:
    """Send ``task`` while ``resource``'s breaker is held open, and pump until its wait passes
    ``max_defer_age`` and a worker dead-letters it."""
    manager.breaker(resource).open()
    result: AsyncResult = task.delay(*args)
    deadline = time.monotonic() + 30
    while not result.ready() and time.monotonic() < deadline:
        manager.pump()
        time.sleep(0.1)
    return result


def test_work_deferred_too_long_is_dead_lettered_with_its_reason(
    app: Celery, prefix: str, worker: Start, unique: str
) -> None:
    manager = ResilienceManager(f"team-{unique}", app=app, key_prefix=prefix)
    resource = f"svc-{unique}"

    @manager.task(resource=resource, breaker=BreakerPolicy(reset_timeout=600), max_defer_age=0.5)
    def never_runs() -> None:
        raise AssertionError("the breaker is open")

    worker()
    result = wait_out_max_defer_age(manager, resource, never_runs)
    with pytest.raises(DeadLetteredError, match="max_defer_age"):
        result.get(timeout=1)
    entry = manager.dead_letter(result.id)
    assert entry is not None
    assert "breaker open" in entry.reason
    assert manager.deferred_count() == 0


def test_a_message_for_an_unknown_task_is_dead_lettered(
    manager: ResilienceManager, worker: Start
) -> None:
    worker()
    result = manager.app.send_task("no.such.task", args=[1])
    wait_for(lambda: manager.dead_letter(result.id) is not None)
    entry = manager.dead_letter(result.id)
    assert entry is not None and "unknown task 'no.such.task'" in entry.reason


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
            "application/x-python-serialize",
            "untrusted content of type pickle",
        ),
        (b'[[1], {}, {"callbacks": nul', "application/json", "decode"),
    ],
)
def test_undecodable_messages_are_dead_lettered(
    manager: ResilienceManager,
    worker: Start,
    unique: str,
    body: bytes,
    content_type: str,
    reason: str,
) -> None:
    @manager.task(resource=f"svc-{unique}")
    def target(x: int) -> int:
        return x

    worker()
    with manager.app.producer_or_acquire() as producer:
        producer.publish(
            body,
            routing_key=f"svc-{unique}",
            content_type=content_type,
            content_encoding="binary" if "python" in content_type else "utf-8",
            headers={"id": f"bad-{unique}", "task": target.name},
            exchange=f"svc-{unique}",
        )
    wait_for(lambda: manager.dead_letter(f"bad-{unique}") is not None)
    entry = manager.dead_letter(f"bad-{unique}")
    assert entry is not None and reason in entry.reason
    assert entry.message["headers"]["task"] == target.name


# -- bad input at declaration ----------------------------------------------------------------


def test_unknown_and_refused_task_options_are_named(manager: ResilienceManager) -> None:
    with pytest.raises(ConfigurationError, match="'max_retires' is not a task option"):
        manager.task(resource="svc", max_retires=3)(lambda: None)
    with pytest.raises(ConfigurationError, match="'serializer' is not accepted"):
        manager.task(resource="svc", serializer="pickle")(lambda: None)


def test_celery_options_pass_through(manager: ResilienceManager, unique: str) -> None:
    @manager.task(resource=f"svc-{unique}", time_limit=12, acks_late=True, queue="special")
    def configured() -> None:
        return None

    assert configured.time_limit == 12
    assert configured.acks_late is True
    assert manager.app.amqp.router.route({}, configured.name)["queue"].name == "special"


@pytest.mark.parametrize(
    ("declare", "field"),
    [
        (lambda m: m.task(resource="svc", breaker=BreakerPolicy(fail_max=0)), "fail_max"),
        (
            lambda m: m.task(resource="svc", breaker=BreakerPolicy(reset_timeout=-1)),
            "reset_timeout",
        ),
        (lambda m: m.task(resource="svc", retry=RetryPolicy(max_attempts=0)), "max_attempts"),
        (lambda m: m.task(resource="", retry=None), "resource"),
        (lambda m: m.task(resource="svc", breaker={"fail_max": 3}), "breaker"),
        (lambda m: m.task(resource="svc", max_defer_age=-1), "max_defer_age"),
    ],
)
def test_invalid_declarations_fail_naming_the_field(
    manager: ResilienceManager, declare: Callable[[ResilienceManager], Any], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=field):
        declare(manager)(lambda: None)


def test_one_breaker_policy_per_resource(manager: ResilienceManager, unique: str) -> None:
    manager.task(resource=f"svc-{unique}", breaker=BreakerPolicy(fail_max=3))(lambda: None)
    with pytest.raises(ConfigurationError, match="one policy per resource"):
        manager.task(
            resource=f"svc-{unique}", breaker=BreakerPolicy(fail_max=4), name=f"other-{unique}"
        )(lambda: None)


def test_a_duplicate_delivery_does_not_repeat_the_side_effect(
    manager: ResilienceManager, worker: Start, pump: None, unique: str
) -> None:
    sent: list[int] = []

    @manager.task(resource=f"svc-{unique}")
    def send_mail(order: int) -> str:
        def side_effect() -> str:
            sent.append(order)
            time.sleep(0.5)
            return f"mail-{order}"

        return manager.run_once(f"mail:{order}", side_effect, lease=1.0)

    worker()
    first, duplicate = send_mail.delay(7), send_mail.delay(7)  # e.g. a redelivery
    assert first.get(timeout=15) == duplicate.get(timeout=15) == "mail-7"
    assert sent == [7]


def test_a_direct_call_that_cannot_run_says_why(manager: ResilienceManager, unique: str) -> None:
    from resilience_tasks import BreakerOpenError, Defer, RateLimit

    @manager.task(
        resource=f"svc-{unique}", rate_limit=RateLimit("1/minute", max_wait_in_worker=0.0)
    )
    def call() -> int:
        return 1

    assert call() == 1
    with pytest.raises(Defer, match="rate limit 1 per 1 minute"):
        call()
    manager.breaker(f"svc-{unique}").open()
    with pytest.raises(BreakerOpenError):
        call()


def test_an_operator_replays_dead_letters_once_the_cause_is_fixed(
    app: Celery, prefix: str, worker: Start, unique: str
) -> None:
    manager = ResilienceManager(f"team-{unique}", app=app, key_prefix=prefix)
    resource = f"svc-{unique}"

    @manager.task(resource=resource, breaker=BreakerPolicy(reset_timeout=600), max_defer_age=0.5)
    def double(x: int) -> int:
        return 2 * x

    worker()
    result = wait_out_max_defer_age(manager, resource, double, 21)
    with pytest.raises(DeadLetteredError):
        result.get(timeout=1)
    manager.breaker(resource).close()  # what made it fail is fixed
    assert manager.replay_dead_letters() == [result.id]
    assert manager.replay_dead_letters([result.id]) == []  # replayed once, however often asked
    wait_for(lambda: AsyncResult(result.id, app=app).state == "SUCCESS")
    assert AsyncResult(result.id, app=app).get(timeout=5) == 42
    assert manager.dead_letter(result.id) is None
