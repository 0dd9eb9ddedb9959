"""The control port's app: the mode read and switched, the stats read and reset, health."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from resilience_tasks.testing.faults.asgi import ASGIApp, Receive, Send, read_body, respond
from resilience_tasks.testing.faults.spec import Fault
from resilience_tasks.testing.faults.state import Target


def control_app(target: Target, switch: Callable[[Fault], Awaitable[None]]) -> ASGIApp:
    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:
            return
        route = (scope["method"], scope["path"].rstrip("/"))
        if route == ("GET", "/health"):
            await respond(send, 200, {"name": target.name, "mode": target.fault.mode})
        elif route == ("GET", "/mode"):
            await respond(send, 200, target.fault.as_json())
        elif route in (("POST", "/mode"), ("PUT", "/mode")):
            try:
                request = json.loads(body or b"{}")
                if not isinstance(request, dict) or "mode" not in request:
                    raise ValueError('the body must be a JSON object with a "mode"')
                fault = Fault.of(**request)
            except (ValueError, TypeError) as error:
                await respond(send, 400, {"error": str(error)})
                return
            await switch(fault)
            await respond(send, 200, fault.as_json())
        elif route == ("GET", "/stats"):
            await respond(send, 200, target.stats())
        elif route == ("POST", "/reset"):
            target.reset()
            await respond(send, 200, target.stats())
        else:
            await respond(send, 404, {"error": f"no route {route[0]} {route[1]}"})

    return app
