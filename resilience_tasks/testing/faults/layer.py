"""The fault layer: the target's fault applied to each service request, in order of arrival."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from resilience_tasks.testing.faults.asgi import (
    ASGIApp,
    Message,
    Receive,
    Send,
    endpoint_name,
    error_body,
    read_body,
    respond,
)
from resilience_tasks.testing.faults.spec import picked
from resilience_tasks.testing.faults.state import Target


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then waits on the client as the real one does."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class FaultLayer:
    """Applies the target's fault to each service request, then hands it to ``app``."""

    def __init__(self, target: Target, app: ASGIApp) -> None:
        self.target = target
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:
            return
        target = self.target
        target.requests += 1
        target.endpoints[endpoint_name(scope["path"])] += 1
        while True:
            fault, index = target.fault, target.next_index()
            params = fault.params
            if fault.mode in ("hang", "down"):  # down: caught between accept and the close
                target.outcomes["hung"] += 1
                if await self._hold(receive):
                    continue  # the mode changed: served as if it arrived now
                return
            if fault.mode == "errors" and picked(params["rate"], index):
                target.outcomes["error"] += 1
                message = "The server had an error while processing your request."
                await respond(send, int(params["status"]), error_body(message, "server_error"))
                return
            if fault.mode == "rate_limited" and picked(params["rate"], index):
                target.outcomes["rate_limited"] += 1
                wait = params["retry_after"]
                headers = [
                    ("retry-after", f"{wait:g}"),
                    ("retry-after-ms", str(round(wait * 1000))),
                ]
                message = f"Rate limit reached for requests on {target.name}. Please try again."
                await respond(
                    send,
                    429,
                    error_body(message, "requests", "rate_limit_exceeded"),
                    [*headers, *target.quota.headers(exhausted=True)],
                )
                return
            slow = fault.mode == "latency" or (
                fault.mode == "slow_tail" and picked(params["fraction"], index)
            )
            target.outcomes["delayed" if slow else "ok"] += 1
            if slow:
                await asyncio.sleep(params["delay"])
            break
        await self.app(scope, _replay(body, receive), send)

    async def _hold(self, receive: Receive) -> bool:
        """Hold a request until the mode changes (True) or its client goes away (False)."""

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        self.target.held += 1
        client = asyncio.ensure_future(gone())
        changed = asyncio.ensure_future(self.target.changed())
        try:
            done, _ = await asyncio.wait({client, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.target.held -= 1
            client.cancel()
            changed.cancel()
        return client not in done
