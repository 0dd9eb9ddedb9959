"""Real providers for chains: each factory builds a ``Provider`` on an official client.

Optional integrations, installed as extras and imported only when a factory is called, so
``import resilience_tasks.providers`` costs nothing without them; a missing package is a
``ConfigurationError`` that names the extra to install::

    openai_chat      an OpenAI-compatible chat API (``openai`` extra)
    mcp_tool         one tool of an MCP server over streamable HTTP (``mcp`` extra)
    mcp_tool_chain   the same tool on a list of fallback servers, one provider each

The clients' own retries are off: retrying and falling back belong to the chain, which sees a
429 as ``RateLimitedError`` (with the server's ``Retry-After``) and anything else as a failure.
"""

from resilience_tasks.providers.mcp_tools import MCPToolError, mcp_tool, mcp_tool_chain
from resilience_tasks.providers.openai_chat import EmptyCompletionError, openai_chat

__all__ = [
    "EmptyCompletionError",
    "MCPToolError",
    "mcp_tool",
    "mcp_tool_chain",
    "openai_chat",
]
