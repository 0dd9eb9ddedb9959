"""Finding and reaching the Redis server that holds resilience state."""

from __future__ import annotations

import os
from typing import Any

import redis

from resilience_tasks.errors import StateUnavailableError

STATE_URL_ENV = "RESILIENCE_REDIS_URL"


def state_url(broker_url: str | None) -> str:
    """``RESILIENCE_REDIS_URL`` if set, else the broker's URL when it is a Redis URL."""
    url = os.environ.get(STATE_URL_ENV) or broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise StateUnavailableError(
            f"resilience-tasks keeps its state in Redis: set {STATE_URL_ENV} "
            f"(the broker URL {broker_url!r} is not a Redis URL)"
        )
    return url


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; connections open lazily and are re-made after a fork."""
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("socket_timeout", 10.0)
    options.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(url, **options)


def ensure_reachable(client: redis.Redis, url: str) -> None:
    """Ping once; on failure raise one clear ``StateUnavailableError`` instead of a traceback."""
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StateUnavailableError(
            f"cannot reach the resilience state store at {redact(url)}: {str(exc).rstrip('.')}. "
            f"Start Redis or point {STATE_URL_ENV} at a running server."
        ) from None


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
