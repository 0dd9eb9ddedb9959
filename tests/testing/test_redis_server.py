"""The private redis-server: data survives a clean stop and a restart with AOF, a kill is a
crash, and the port stays the same across restarts."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks.testing import RedisServer


def test_stop_and_restart_keep_aof_data_on_the_same_port() -> None:
    with RedisServer(appendonly=True) as server:
        url = server.url(2)
        client = redis.Redis.from_url(url)
        client.set("kept", "1")
        server.stop()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert client.get("kept") == b"1"
        server.restart()
        assert server.url(2) == url and client.get("kept") == b"1"
        client.close()


def test_kill_is_a_crash_and_without_aof_the_data_is_gone() -> None:
    with RedisServer() as server:
        client = server.client()
        client.set("lost", "1")
        server.kill()
        assert not server.running
        server.start()
        assert client.get("lost") is None
        client.close()


def test_close_removes_the_directory() -> None:
    server = RedisServer().start()
    directory = server.directory
    assert directory.is_dir()
    server.close()
    assert not directory.exists() and not server.running
