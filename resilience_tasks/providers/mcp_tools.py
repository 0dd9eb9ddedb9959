"""MCP tool calls as providers: one tool served by a chain of fallback servers.

Each call opens its own connection to the server (streamable HTTP, with the ``mcp`` SDK),
calls the tool and closes it, so a server that went down and came back, or a call made from a
fresh event loop, never meets a stale session. ``timeout`` bounds the whole call, connection
included. What a call can raise, for the chain to judge:

* ``MCPToolError``: the tool ran and answered an error (``isError``): a failure.
* ``RateLimitedError``: the server answered HTTP 429; ``retry_after`` from its ``Retry-After``.
* ``TimeoutError``, the HTTP client's connection errors, ``mcp.MCPError`` for a server error
  (HTTP 5xx included): failures, raised as themselves rather than wrapped in the SDK's
  exception groups.

The synchronous ``fn`` runs the call in an event loop of its own, so it is for code running
outside one (a prefork worker's task body, a thread); inside an event loop use
``asynchronous=True`` and await ``fn``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from resilience_tasks.errors import ConfigurationError, ResilienceError
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.quota.provider import RateLimitedError, parse_retry_after

if TYPE_CHECKING:
    import httpx2
    from mcp.types import CallToolResult

#: What a missing ``mcp`` package is met with.
INSTALL_HINT = "mcp_tool needs the MCP SDK: pip install 'resilience-tasks[mcp]'"

Returns = Literal["text", "structured", "result"]


class MCPToolError(ResilienceError):
    """The tool ran and answered an error (``isError``); ``result`` is its whole answer."""

    def __init__(self, provider: str, tool: str, message: str, result: Any = None) -> None:
        self.provider = provider
        self.tool = tool
        self.result = result
        super().__init__(f"{provider}: tool {tool!r} answered an error: {message}")


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def _answer(name: str, tool: str, result: CallToolResult, returns: Returns) -> Any:
    if result.is_error:
        raise MCPToolError(name, tool, _text(result) or "no message", result)
    if returns == "result":
        return result
    if returns == "structured":
        if result.structured_content is None:
            raise MCPToolError(name, tool, "the tool answered no structured content", result)
        return result.structured_content
    return _text(result)


def _first_leaf(error: BaseException) -> BaseException:
    """The SDK runs its transport in task groups: the error that ended the call, unwrapped."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _call(
    name: str, url: str, tool: str, arguments: dict[str, Any], timeout: float, returns: Returns
) -> Any:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    limited: list[httpx2.Response] = []

    async def note_429(response: httpx2.Response) -> None:
        if response.status_code == 429:  # the SDK answers any 4xx as a bare error: keep it
            limited.append(response)

    # The call's deadline is fail_after's; the client's own timeouts only back it up, so a hang
    # is always the same TimeoutError.
    http = httpx2.AsyncClient(timeout=timeout + 5, event_hooks={"response": [note_429]})
    try:
        with anyio.fail_after(timeout):
            async with (
                http,
                Client(
                    streamable_http_client(url, http_client=http),
                    read_timeout_seconds=timeout,
                    cache=None,
                ) as client,
            ):
                result = await client.call_tool(tool, arguments)
    except TimeoutError as error:
        raise TimeoutError(f"{name}: no answer from {url} within {timeout:g}s") from error
    except Exception as error:
        if limited:
            headers = dict(limited[-1].headers)
            message = f"{name}: HTTP 429 from {url}"
            raise RateLimitedError(message, parse_retry_after(headers), headers) from error
        leaf = _first_leaf(error)
        if leaf is error:
            raise
        raise leaf from None
    return _answer(name, tool, result, returns)


def mcp_tool(
    name: str,
    *,
    url: str,
    tool: str,
    timeout: float = 30.0,
    cost: float = 0.0,
    quality: int = 0,
    degraded: bool = False,
    asynchronous: bool = False,
    returns: Returns = "text",
    **provider_options: Any,
) -> Provider:
    """A ``Provider`` whose ``fn(**arguments)`` calls ``tool`` on the MCP server at ``url``.

    ``returns``: ``"text"`` (the text blocks joined by newlines), ``"structured"`` (the
    structured content) or ``"result"`` (the SDK's ``CallToolResult``). ``provider_options``
    are ``Provider`` fields (``prices``, ``breaker``, ``rate_limit``...).
    """
    try:
        import mcp  # noqa: F401
    except ImportError as error:
        raise ConfigurationError(INSTALL_HINT) from error
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"mcp_tool({name!r}).url must be an http(s) URL, got {url!r}")
    if not isinstance(tool, str) or not tool:
        raise ConfigurationError(f"mcp_tool({name!r}).tool must be a tool name, got {tool!r}")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(f"mcp_tool({name!r}).timeout must be seconds > 0, got {timeout!r}")
    if returns not in ("text", "structured", "result"):
        raise ConfigurationError(
            f"mcp_tool({name!r}).returns must be 'text', 'structured' or 'result', got {returns!r}"
        )
    options = {"cost": cost, "quality": quality, "degraded": degraded, **provider_options}

    if asynchronous:

        async def call_async(**arguments: Any) -> Any:
            return await _call(name, url, tool, arguments, timeout, returns)

        return Provider(name, call_async, **options)

    def call(**arguments: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_call(name, url, tool, arguments, timeout, returns))
        raise ConfigurationError(
            f"mcp_tool({name!r}) is synchronous and was called inside an event loop; "
            "build it with asynchronous=True and await it"
        )

    return Provider(name, call, **options)


def mcp_tool_chain(
    prefix: str,
    *,
    urls: Sequence[str],
    tool: str,
    names: Sequence[str] | None = None,
    **options: Any,
) -> list[Provider]:
    """One ``mcp_tool`` provider per server, in fallback order, for ``manager.providers``.

    Providers are named ``names`` when given, else ``<prefix>-1``, ``<prefix>-2``...; each is
    a resource of its own (breaker, rate limit, cool-down). ``options`` go to every
    ``mcp_tool`` (``timeout``, ``cost``, ``asynchronous``, ``breaker``...).
    """
    if isinstance(urls, str) or not urls:
        raise ConfigurationError(
            f"mcp_tool_chain({prefix!r}).urls must be a non-empty list of URLs, got {urls!r}"
        )
    if names is None:
        names = [f"{prefix}-{index}" for index in range(1, len(urls) + 1)]
    elif isinstance(names, str) or len(names) != len(urls) or len(set(names)) != len(names):
        raise ConfigurationError(
            f"mcp_tool_chain({prefix!r}).names must be {len(urls)} distinct names, got {names!r}"
        )
    return [
        mcp_tool(name, url=url, tool=tool, **options) for name, url in zip(names, urls, strict=True)
    ]
