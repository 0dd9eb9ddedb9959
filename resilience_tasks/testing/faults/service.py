"""The service port's app: an OpenAI-compatible chat API, its model list, and MCP at ``/mcp``."""

from __future__ import annotations

import json
import time
from collections.abc import MutableMapping
from typing import Any

from resilience_tasks.testing.faults.asgi import (
    ASGIApp,
    Receive,
    Send,
    endpoint_name,
    error_body,
    respond,
)
from resilience_tasks.testing.faults.spec import MODEL
from resilience_tasks.testing.faults.state import Target


def _text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


async def _chat(target: Target, receive: Receive, send: Send) -> None:
    try:
        payload = json.loads((await receive())["body"])
        model, messages = payload["model"], payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
    except (ValueError, KeyError, TypeError) as error:
        await respond(send, 400, error_body(f"invalid request: {error}", "invalid_request_error"))
        return
    if payload.get("stream"):
        message = "stream is not supported by the fault server"
        await respond(send, 400, error_body(message, "invalid_request_error"))
        return
    said = [(m.get("role"), _text(m.get("content"))) for m in messages if isinstance(m, dict)]
    asked = [text for _, text in said]
    users = [text for role, text in said if role == "user"]
    answer = f"{target.name}: {(users or asked or [''])[-1]}"
    prompt_tokens = sum(max(1, len(text.split())) for text in asked)
    completion_tokens = len(answer.split())
    target.quota.spend(prompt_tokens + completion_tokens)
    target.completions += 1
    number = target.completions
    body = {
        "id": f"chatcmpl-{target.name}-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    headers = [*target.quota.headers(), ("x-request-id", f"req_{target.name}_{number}")]
    await respond(send, 200, body, headers)


def service_app(target: Target, mcp: ASGIApp) -> ASGIApp:
    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        endpoint, method = endpoint_name(scope["path"]), scope["method"]
        if endpoint == "mcp":
            await mcp(scope, receive, send)
        elif (endpoint, method) == ("chat", "POST"):
            await _chat(target, receive, send)
        elif (endpoint, method) == ("models", "GET"):
            model = {"id": MODEL, "object": "model", "created": 0, "owned_by": target.name}
            await respond(send, 200, {"object": "list", "data": [model]})
        else:
            message = f"Unknown request URL: {method} {scope['path']}"
            await respond(send, 404, error_body(message, "invalid_request_error", "unknown_url"))

    return app
