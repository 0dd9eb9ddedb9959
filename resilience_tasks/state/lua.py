"""Lua fragments shared by every script we run on Redis.

Every script that needs the time reads it from the Redis server (``TIME``), so the whole fleet
shares one clock whatever the hosts' clocks say. Scripts start with ``CLOCK``, which defines the
local ``now`` (server seconds, as a float).

Rules every script follows, so that it runs on Redis Cluster: every key it touches is passed in
``KEYS`` (never built inside the script), and all of one script's keys share one hash tag
(``KeySpace`` puts its prefix in braces).
"""

from __future__ import annotations

CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""


def with_clock(body: str) -> str:
    """``body`` preceded by the clock preamble."""
    return CLOCK + body
