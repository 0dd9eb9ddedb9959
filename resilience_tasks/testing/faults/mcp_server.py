"""The MCP side of a fault target: a real MCP server over streamable HTTP, built on the SDK.

Stateless and answering in JSON, so every tool call stands on its own HTTP requests: a target
that goes down and comes back serves the next call with no session to re-establish, and the
fault layer in front of it sees each request whole. The tools answer deterministically and name
the target, so a test can tell which server of a fallback chain served a call.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

#: The tools every target serves.
TOOLS = ("echo", "add", "fail")


def mcp_app(
    name: str, tool_calls: Counter[str], host: str
) -> tuple[Any, AbstractAsyncContextManager[None]]:
    """The ASGI app serving ``/mcp`` and the context that must be entered around serving it.

    ``tool_calls`` counts the calls each tool actually ran (a call refused by a fault never
    does). The context runs the SDK's session manager once for the process, so the HTTP
    listener may be closed and reopened underneath without restarting it.
    """
    server: MCPServer[Any] = MCPServer(name, log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Answer ``"<target>: <text>"``."""
        tool_calls["echo"] += 1
        return f"{name}: {text}"

    @server.tool()
    def add(a: float, b: float) -> float:
        """Answer ``a + b``."""
        tool_calls["add"] += 1
        return a + b

    @server.tool()
    def fail(message: str) -> str:
        """Answer a tool error (``isError``) carrying ``message``."""
        tool_calls["fail"] += 1
        raise ToolError(f"{name}: {message}")

    loopback = host in ("127.0.0.1", "localhost", "::1")
    # On loopback the SDK's DNS-rebinding guard stays on; bound elsewhere (a container) the
    # clients' Host header is not known in advance.
    security = (
        None if loopback else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    app = server.streamable_http_app(
        stateless_http=True, json_response=True, host=host, transport_security=security
    )
    return app, server.session_manager.run()
