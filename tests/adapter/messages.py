"""Raw queue items for pushing straight into a Redis queue, as kombu's Redis transport stores
them: a JSON envelope (body base64-encoded, properties with delivery tag and info) LPUSHed to
the list named after the queue."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis


def envelope(
    body: bytes,
    queue: str,
    headers: Any = None,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    **properties: Any,
) -> dict[str, Any]:
    """The envelope kombu's Redis transport would write for ``body``."""
    props: dict[str, Any] = {
        "correlation_id": str(uuid.uuid4()),
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    props.update(properties)
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": {} if headers is None else headers,
        "properties": props,
    }


def task_headers(task: Any, task_id: Any, **extra: Any) -> dict[str, Any]:
    """Celery protocol 2 headers, as ``apply_async`` writes them."""
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "test",
        "ignore_result": False,
        **extra,
    }


def task_body(args: Any = (), kwargs: Any = None, embed: Any = None) -> bytes:
    embed = (
        embed
        if embed is not None
        else {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    )
    return json.dumps([list(args), kwargs or {}, embed]).encode()


def task_envelope(
    queue: str, task: Any, task_id: Any, body: bytes | None = None, **extra: Any
) -> dict[str, Any]:
    return envelope(
        task_body() if body is None else body, queue, task_headers(task, task_id, **extra)
    )


def push(client: redis.Redis, queue: str, item: bytes | str | dict[str, Any]) -> None:
    """LPUSH ``item`` (an envelope dict is JSON-encoded) where kombu's BRPOP will find it."""
    raw = json.dumps(item) if isinstance(item, dict) else item
    client.lpush(queue, raw)
