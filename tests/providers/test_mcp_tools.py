"""MCP tool providers against real fault servers, through the MCP SDK over streamable HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import httpx2
import mcp
import pytest

from resilience_tasks.errors import ConfigurationError, RateLimitedError
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.providers import MCPToolError, mcp_tool, mcp_tool_chain
from resilience_tasks.testing.fault_server import FaultServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    with FaultServer("primary") as primary, FaultServer("backup") as backup:
        yield primary, backup


@pytest.fixture
def primary(servers: tuple[FaultServer, FaultServer]) -> FaultServer:
    for server in servers:
        server.set("healthy")
        server.reset()
    return servers[0]


def first_answer(chain: list[Provider], **arguments: object) -> tuple[str, object]:
    """What a chain does, reduced to its bones: the first provider that answers."""
    errors = []
    for provider in chain:
        try:
            return provider.name, provider.fn(**arguments)
        except Exception as error:
            errors.append(error)
    raise AssertionError(f"no provider answered: {errors}")


def test_tools_answer_text_structured_or_whole(primary: FaultServer) -> None:
    echo = mcp_tool("search", url=primary.mcp_url, tool="echo", cost=0.002, quality=1)
    assert (echo.name, echo.cost, echo.quality, echo.is_async) == ("search", 0.002, 1, False)
    assert echo.fn(text="hi") == "primary: hi"
    add = mcp_tool("adder", url=primary.mcp_url, tool="add", returns="structured")
    assert add.fn(a=1, b=2) == {"result": 3.0}
    whole = mcp_tool("adder", url=primary.mcp_url, tool="add", returns="result")
    assert not whole.fn(a=2, b=2).is_error
    assert primary.stats().tool_calls == {"echo": 1, "add": 2}


def test_a_tool_error_is_raised_with_its_message(primary: FaultServer) -> None:
    failing = mcp_tool("search", url=primary.mcp_url, tool="fail")
    with pytest.raises(MCPToolError, match="primary: boom") as raised:
        failing.fn(message="boom")
    assert (raised.value.provider, raised.value.tool) == ("search", "fail")
    with pytest.raises(MCPToolError, match="nope"):
        mcp_tool("search", url=primary.mcp_url, tool="nope").fn()


def test_faults_surface_as_plain_exceptions(primary: FaultServer) -> None:
    echo = mcp_tool("search", url=primary.mcp_url, tool="echo", timeout=1.0)
    primary.set("rate_limited", retry_after=3)
    with pytest.raises(RateLimitedError) as raised:
        echo.fn(text="hi")
    assert raised.value.retry_after == 3
    primary.set("errors", status=503)
    with pytest.raises(mcp.MCPError):
        echo.fn(text="hi")
    primary.set("hang")
    with pytest.raises(TimeoutError, match="within 1s"):
        echo.fn(text="hi")
    primary.set("down")
    with pytest.raises(httpx2.ConnectError):
        echo.fn(text="hi")
    primary.set("healthy")
    assert echo.fn(text="back") == "primary: back"
    assert primary.stats().tool_calls == {"echo": 1}


def test_a_chain_of_servers_in_fallback_order(servers: tuple[FaultServer, FaultServer]) -> None:
    primary, backup = servers
    primary.set("healthy")
    chain = mcp_tool_chain("search", urls=[primary.mcp_url, backup.mcp_url], tool="echo")
    assert [provider.name for provider in chain] == ["search-1", "search-2"]
    assert first_answer(chain, text="hi") == ("search-1", "primary: hi")
    primary.set("down")
    primary.reset()
    backup.reset()
    assert first_answer(chain, text="hi") == ("search-2", "backup: hi")
    assert primary.stats().requests == 0 and backup.stats().tool_calls == {"echo": 1}
    named = mcp_tool_chain(
        "search", urls=[primary.mcp_url, backup.mcp_url], tool="echo", names=["main", "spare"]
    )
    assert [provider.name for provider in named] == ["main", "spare"]


def test_asynchronous_calls_and_the_sync_fn_inside_a_loop(primary: FaultServer) -> None:
    echo = mcp_tool("search", url=primary.mcp_url, tool="echo", asynchronous=True)
    assert echo.is_async
    assert asyncio.run(echo.fn(text="one")) == "primary: one"
    assert asyncio.run(echo.fn(text="two")) == "primary: two"
    primary.set("rate_limited", retry_after=2)
    with pytest.raises(RateLimitedError):
        asyncio.run(echo.fn(text="three"))
    sync = mcp_tool("search", url=primary.mcp_url, tool="echo")

    async def inside_a_loop() -> object:
        return sync.fn(text="four")

    with pytest.raises(ConfigurationError, match="asynchronous=True"):
        asyncio.run(inside_a_loop())


def test_configuration_is_checked_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="url"):
        mcp_tool("search", url="stdio:server", tool="echo")
    with pytest.raises(ConfigurationError, match="tool"):
        mcp_tool("search", url="http://127.0.0.1:1/mcp", tool="")
    with pytest.raises(ConfigurationError, match="timeout"):
        mcp_tool("search", url="http://127.0.0.1:1/mcp", tool="echo", timeout=-1)
    with pytest.raises(ConfigurationError, match="returns"):
        mcp_tool("search", url="http://127.0.0.1:1/mcp", tool="echo", returns="json")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="urls"):
        mcp_tool_chain("search", urls=[], tool="echo")
    with pytest.raises(ConfigurationError, match="names"):
        mcp_tool_chain("search", urls=["http://a/mcp", "http://b/mcp"], tool="echo", names=["x"])


def test_without_the_package_the_factory_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['mcp'] = None\n"
        "from resilience_tasks.errors import ConfigurationError\n"
        "from resilience_tasks.providers import mcp_tool\n"
        "try:\n"
        "    mcp_tool('p', url='http://127.0.0.1:1/mcp', tool='echo')\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'resilience-tasks[mcp]'" in done.stdout
