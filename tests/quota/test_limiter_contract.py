"""The fleet limiter's contract, run the same against one Redis server and a Redis Cluster.

Windows long enough (a minute) that no assertion depends on how fast this machine runs; where
a refusal must be seen, the window is full, whatever the time between calls.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.gate import Call
from resilience_tasks.quota.policy import RateLimit
from resilience_tasks.quota.storage import FleetRateLimiter
from resilience_tasks.state.connection import StateClient, connect
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL
from tests.state.servers import redis_cluster

RESOURCE = "svc"


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("limiter-cluster")) as ports:
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports[:2])


@pytest.fixture(params=["redis", "cluster"])
def state(request: pytest.FixtureRequest) -> StateClient:
    if request.param == "redis":
        return connect(REDIS_URL)
    return connect(request.getfixturevalue("cluster_url"))


@pytest.fixture
def keys(prefix: str) -> KeySpace:
    return KeySpace(prefix)


@pytest.fixture
def limiter(state: StateClient, keys: KeySpace) -> FleetRateLimiter:
    return FleetRateLimiter(state, "team-a", keys)


def test_a_window_grants_its_amount_then_says_when_it_frees(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("3/minute")
    decisions = [limiter.acquire(limit, RESOURCE) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 0 < decisions[3].retry_after <= 60.0
    assert decisions[3].window == "3 per 1 minute"
    assert decisions[3].interval == pytest.approx(20.0)
    assert limiter.remaining(limit, RESOURCE) == {"3 per 1 minute": 0}


def test_several_windows_take_all_or_nothing(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("2/minute;3/hour")
    granted = [limiter.acquire(limit, RESOURCE).allowed for _ in range(5)]
    assert granted == [True, True, False, False, False]
    # the refusals by the per-minute window did not eat the per-hour window
    assert limiter.remaining(limit, RESOURCE) == {"2 per 1 minute": 0, "3 per 1 hour": 1}


def test_separate_keys_have_separate_windows(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("1/minute", key=lambda account: account)
    assert limiter.acquire(limit, RESOURCE, Call(args=("a",))).allowed
    assert limiter.acquire(limit, RESOURCE, Call(args=("b",))).allowed
    assert not limiter.acquire(limit, RESOURCE, Call(args=("a",))).allowed


def test_the_refused_get_places_in_line_at_the_limits_pace(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("4/minute")  # a slot every 15 s
    for _ in range(4):
        assert limiter.acquire(limit, RESOURCE).allowed
    waits = [limiter.acquire(limit, RESOURCE).retry_after for _ in range(3)]
    assert 30 < waits[0] <= 60  # the first unit frees a minute after it was taken
    # then one slot per 15 s, less the moments between these calls (never more)
    assert 10 < waits[1] - waits[0] <= 15.001
    assert 10 < waits[2] - waits[1] <= 15.001
    # work that goes first does not queue: it is told when the next unit frees
    assert limiter.acquire(limit, RESOURCE, reserve=False).retry_after <= waits[0]


def test_a_cost_larger_than_the_window_is_a_configuration_error(
    limiter: FleetRateLimiter,
) -> None:
    with pytest.raises(ConfigurationError, match="can never fit"):
        limiter.acquire(RateLimit("2/minute"), RESOURCE, cost=3)


def test_clear_empties_the_windows_and_the_line(limiter: FleetRateLimiter) -> None:
    limit = RateLimit("1/minute")
    assert limiter.acquire(limit, RESOURCE).allowed
    first_slot = limiter.acquire(limit, RESOURCE).retry_after
    limiter.clear(limit, RESOURCE)
    assert limiter.remaining(limit, RESOURCE) == {"1 per 1 minute": 1}
    assert limiter.acquire(limit, RESOURCE).allowed
    # the line started again: the next refusal gets the first slot, not one after it
    assert limiter.acquire(limit, RESOURCE).retry_after <= first_slot + 1


def test_a_team_takes_units_of_its_own_per_team_window_only(
    limiter: FleetRateLimiter, state: StateClient, keys: KeySpace
) -> None:
    other = FleetRateLimiter(state, "team-b", keys)
    per_team = RateLimit("1/minute", per_team=True)
    shared = RateLimit("1/minute")
    assert limiter.acquire(per_team, RESOURCE).allowed
    assert not limiter.acquire(per_team, RESOURCE).allowed
    assert other.acquire(per_team, RESOURCE).allowed  # team a drained only its own window
    assert limiter.remaining(per_team, RESOURCE) == {"1 per 1 minute": 0}
    assert other.remaining(per_team, RESOURCE) == {"1 per 1 minute": 0}
    other.clear(per_team, RESOURCE)  # clears team b's window, not team a's
    assert limiter.remaining(per_team, RESOURCE) == {"1 per 1 minute": 0}
    # a shared window is one for every team
    assert limiter.acquire(shared, RESOURCE).allowed
    assert not other.acquire(shared, RESOURCE).allowed


def test_interactive_waiting_is_marked_until_after_its_due_time(
    limiter: FleetRateLimiter, state: StateClient
) -> None:
    limiter.interactive_waits(RESOURCE, 30)
    limiter.interactive_waits(RESOURCE, 5)  # a shorter wait does not shorten the mark
    value = state.get(limiter.waiting_key(RESOURCE))
    assert 25 < limiter.waiting_for(value) <= 31
    assert 30_000 < int(state.pttl(limiter.waiting_key(RESOURCE))) <= 31_100


def test_every_key_shares_the_deployments_hash_tag(
    limiter: FleetRateLimiter, state: StateClient, keys: KeySpace
) -> None:
    limiter.acquire(RateLimit("1/minute", per_team=True, key=lambda k: k), RESOURCE, Call(("x",)))
    limiter.acquire(RateLimit("1/minute", per_team=True, key=lambda k: k), RESOURCE, Call(("x",)))
    limiter.interactive_waits(RESOURCE, 1)
    found = [key.decode() for key in state.scan_iter(match=keys.pattern, count=1000)]
    assert len(found) == 3  # window, its line, the interactive mark
    assert all(key.startswith(keys.tag + ":") for key in found)


def test_a_window_is_named_by_resource_team_and_call_only(limiter: FleetRateLimiter) -> None:
    with pytest.raises(ConfigurationError, match="takes a resource name"):
        limiter.acquire(RateLimit("1/minute"), ("svc", "team=team-b"))  # type: ignore[arg-type]
