"""The state store through Sentinel: a private primary and a ``redis-server --sentinel``
monitoring it, reached with ``redis+sentinel://host:port/service_name/db``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from resilience_tasks.errors import StateUnavailableError
from resilience_tasks.quota.policy import Pricing
from resilience_tasks.quota.storage import SpendLedger
from resilience_tasks.state.connection import StateURL, connect, ensure_reachable
from resilience_tasks.state.keys import KeySpace
from tests.state.servers import redis_server, sentinel

SERVICE = "state-primary"
SECRET = "primary-Pa55"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(primary port, sentinel port); the primary wants a password, as in production."""
    directory: Path = tmp_path_factory.mktemp("sentinel")
    with ExitStack() as stack:
        primary = stack.enter_context(redis_server(directory / "primary", "--requirepass", SECRET))
        port = stack.enter_context(
            sentinel(directory / "sentinel", primary, SERVICE, auth_pass=SECRET)
        )
        yield primary, port


def test_the_state_client_reaches_the_primary_through_the_sentinel(
    topology: tuple[int, int],
) -> None:
    primary, port = topology
    url = f"redis+sentinel://:{SECRET}@127.0.0.1:{port}/{SERVICE}/2"
    client = connect(url)
    assert isinstance(client, redis.Redis)
    ensure_reachable(client, url)
    marker = uuid.uuid4().hex
    client.set(f"sentinel-test:{marker}", "here", ex=60)
    direct = redis.Redis(port=primary, password=SECRET, db=2)
    assert direct.get(f"sentinel-test:{marker}") == b"here"  # database 2 of that primary
    # scripts work through it: the ledger records and reads back
    ledger = SpendLedger(client, "team", KeySpace(f"rt-{marker}"))
    ledger.record("llm", {"tokens_in": 10}, Pricing({"tokens_in": 0.5}))
    assert ledger.spent() == pytest.approx(5.0)


def test_an_unknown_service_name_is_named_as_such(topology: tuple[int, int]) -> None:
    _, port = topology
    url = StateURL(
        f"redis+sentinel://:{SECRET}@127.0.0.1:{port}/no-such-service", "RESILIENCE_REDIS_URL"
    )
    client = connect(url, socket_timeout=2, socket_connect_timeout=2)
    with pytest.raises(StateUnavailableError) as caught:
        ensure_reachable(client, url)
    message = str(caught.value)
    assert "the sentinels know no primary for that service" in message
    assert "service name in RESILIENCE_REDIS_URL" in message
    assert SECRET not in message


def test_a_wrong_primary_password_is_a_credentials_problem(topology: tuple[int, int]) -> None:
    _, port = topology
    url = StateURL(f"redis+sentinel://:wrong@127.0.0.1:{port}/{SERVICE}", "RESILIENCE_REDIS_URL")
    client = connect(url, socket_timeout=2, socket_connect_timeout=2)
    with pytest.raises(StateUnavailableError, match="refused the credentials"):
        ensure_reachable(client, url)
