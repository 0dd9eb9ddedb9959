"""What the state connection says when something is wrong: the right cause, the right
setting, and never a secret."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from resilience_tasks.errors import ConfigurationError, StateUnavailableError
from resilience_tasks.state import connection
from resilience_tasks.state.connection import StateURL, connect, ensure_reachable, redact
from tests.state.servers import free_port, redis_server

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (f"redis://app:{SECRET}@127.0.0.1:6379/0", "redis://app:***@127.0.0.1:6379/0"),
        (f"redis://127.0.0.1:6379/0?password={SECRET}", "redis://127.0.0.1:6379/0?password=***"),
        (
            f"redis://127.0.0.1/0?db=1&password={SECRET}&socket_timeout=3",
            "redis://127.0.0.1/0?db=1&password=***&socket_timeout=3",
        ),
        (
            f"redis+sentinel://:{SECRET}@h1:26379,h2:26379/main/2?sentinel_password={SECRET}",
            "redis+sentinel://:***@h1:26379,h2:26379/main/2?sentinel_password=***",
        ),
        (
            f"unix:///run/redis.sock?password={SECRET}&db=2",
            "unix:///run/redis.sock?password=***&db=2",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://u:{SECRET}@host/0#frag@x", "redis://u:***@host/0#frag@x"),
    ],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET not in redact(url)


def test_a_malformed_state_url_names_its_variable_not_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(connection.STATE_URL_ENV, f"localhost:{SECRET}@6379")
    with pytest.raises(ConfigurationError) as caught:
        connection.resolve(None, "redis://127.0.0.1:6379/0")
    message = str(caught.value)
    assert "RESILIENCE_REDIS_URL is not a Redis URL" in message
    assert "broker" not in message
    assert SECRET not in message


def test_a_bad_port_names_where_the_url_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(connection.STATE_URL_ENV, f"redis://:{SECRET}@127.0.0.1:63x9/0")
    source = connection.resolve(None, "amqp://guest:guest@127.0.0.1//")
    with pytest.raises(ConfigurationError) as caught:
        connect(source)
    assert "RESILIENCE_REDIS_URL is malformed" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_malformed_broker_url_is_named_as_the_broker_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(connection.STATE_URL_ENV, raising=False)
    source = connection.resolve(None, f"redis://:{SECRET}@127.0.0.1:port/0")
    with pytest.raises(ConfigurationError) as caught:
        connect(source)
    assert "the Celery broker URL (broker_url) is malformed" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_broker_that_is_not_redis_asks_for_the_state_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(connection.STATE_URL_ENV, raising=False)
    with pytest.raises(ConfigurationError) as caught:
        connection.resolve(None, f"amqp://guest:{SECRET}@127.0.0.1:5672//")
    assert "set RESILIENCE_REDIS_URL" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_manager_argument_wins_and_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(connection.STATE_URL_ENV, "redis://127.0.0.1:6379/3")
    with pytest.raises(ConfigurationError, match=r"redis_url \(ResilienceManager argument\)"):
        connection.resolve("127.0.0.1:6379", None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://:7000", "names no host"),
        ("redis+sentinel://127.0.0.1:26379", "service_name"),
        ("redis+sentinel://127.0.0.1:26379/main/x", "service_name"),
        ("redis+sentinel://127.0.0.1:26379/main?retries=2", "unknown option"),
    ],
)
def test_malformed_cluster_and_sentinel_urls_say_the_right_form(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        connect(StateURL(url, connection.STATE_URL_ENV))


def _unreachable(url: str, origin: str = connection.STATE_URL_ENV) -> str:
    client = connect(StateURL(url, origin), socket_connect_timeout=2, socket_timeout=2)
    with pytest.raises(StateUnavailableError) as caught:
        ensure_reachable(client, StateURL(url, origin))
    return str(caught.value)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private server with a password."""
    with redis_server(tmp_path_factory.mktemp("auth"), "--requirepass", SECRET) as port:
        yield port


def test_a_wrong_password_is_called_a_wrong_password(guarded: int) -> None:
    message = _unreachable(f"redis://:wrong-{SECRET}@127.0.0.1:{guarded}/0")
    assert "refused the credentials" in message
    assert "Check the user and password in RESILIENCE_REDIS_URL" in message
    assert "Start Redis" not in message
    assert SECRET not in message


def test_a_missing_password_is_called_a_credentials_problem(guarded: int) -> None:
    message = _unreachable(f"redis://127.0.0.1:{guarded}/0")
    assert "refused the credentials" in message
    assert "Start Redis" not in message


def test_the_right_password_connects(guarded: int) -> None:
    client = connect(f"redis://127.0.0.1:{guarded}/0?password={SECRET}")
    ensure_reachable(client, "")
    assert isinstance(client, redis.Redis)
    assert client.ping()


def test_a_refused_connection_says_start_redis() -> None:
    port = free_port()
    message = _unreachable(f"redis://:{SECRET}@127.0.0.1:{port}/0")
    assert f"cannot reach the resilience state store at redis://:***@127.0.0.1:{port}/0" in message
    assert "connection refused" in message
    assert "Start Redis there or point RESILIENCE_REDIS_URL at a running server" in message
    assert SECRET not in message


def test_an_unknown_host_is_called_unknown() -> None:
    # A name too long for DNS fails inside the resolver: no query leaves the machine.
    host = ".".join(["a" * 63] * 5)
    message = _unreachable(f"redis://{host}:6379/0", "the Celery broker URL (broker_url)")
    assert "host name cannot be resolved" in message
    assert "Check the host in the Celery broker URL (broker_url)" in message


def test_a_host_name_that_cannot_be_a_dns_name_is_called_unknown() -> None:
    message = _unreachable("redis://a..b:6379/0")
    assert "host name cannot be resolved" in message


def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        message = _unreachable(f"redis://127.0.0.1:{port}/0")
    assert "no answer in time" in message
    assert "Start Redis" not in message


def test_an_unreachable_cluster_fails_with_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(StateUnavailableError) as caught:
        connect(
            StateURL(f"redis+cluster://:{SECRET}@127.0.0.1:{port}", connection.STATE_URL_ENV),
            socket_connect_timeout=2,
        )
    message = str(caught.value)
    assert "cannot reach the resilience state store at redis+cluster://:***@" in message
    assert "RESILIENCE_REDIS_URL" in message
    assert SECRET not in message
