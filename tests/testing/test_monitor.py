"""MONITOR: commands of one database only, scripts apart, MULTI..EXEC as one round trip."""

from __future__ import annotations

from resilience_tasks.testing import CommandMonitor, RedisServer


def test_round_trips_scripts_and_transactions_of_one_database() -> None:
    with RedisServer() as server:
        mine, other = server.client(1), server.client(2)
        mine.ping(), other.ping()  # connected (SELECT) before the recording starts
        with CommandMonitor(server.url(1), 1) as monitor:
            mine.set("a", 1)
            mine.eval("redis.call('GET', KEYS[1]); return redis.call('TIME')", 1, "a")
            with mine.pipeline(transaction=True) as pipe:
                pipe.incr("b")
                pipe.incr("b")
                pipe.execute()
            other.set("elsewhere", 1)
        summary = monitor.summary()
        assert summary.round_trips == {"set": 1, "eval": 1, "exec": 1}
        assert summary.in_scripts == {"get": 1, "time": 1}
        assert summary.in_transactions == {"incrby": 2}
        assert summary.per_task(3)["total"] == 1.0
        assert sum(monitor.per_second(lambda c: c.name == "set").values()) == 1
