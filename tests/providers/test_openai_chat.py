"""The OpenAI chat provider against a real fault server, through the official client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest

from resilience_tasks.errors import ConfigurationError, RateLimitedError
from resilience_tasks.providers import openai_chat
from resilience_tasks.quota.provider import openai_quota
from resilience_tasks.quota.report import collecting
from resilience_tasks.testing import wait_until
from resilience_tasks.testing.fault_server import FaultServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer("primary") as fault_server:
        yield fault_server


@pytest.fixture
def target(server: FaultServer) -> FaultServer:
    server.set("healthy")
    server.reset()
    return server


def test_a_call_returns_the_text_and_reports_usage_and_quota(target: FaultServer) -> None:
    provider = openai_chat(
        "primary", model="fault-chat", base_url=target.openai_base_url, cost=0.01, quality=2
    )
    assert (provider.name, provider.cost, provider.quality, provider.is_async) == (
        "primary",
        0.01,
        2,
        False,
    )
    with collecting() as report:
        assert provider.fn("hello there") == "primary: hello there"
    assert report.units == {"tokens_in": 2.0, "tokens_out": 3.0}
    (headers,) = report.quota_headers
    quota = openai_quota(headers)
    assert quota["limit_requests"] == 10_000 and quota["remaining_requests"] < 10_000
    # outside a resilient call nothing is reported, and the call still works
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "again"},
    ]
    assert provider.fn(messages, temperature=0.0) == "primary: again"


def test_429_is_a_rate_limit_with_the_servers_retry_after(target: FaultServer) -> None:
    provider = openai_chat("primary", model="m", base_url=target.openai_base_url)
    target.set("rate_limited", retry_after=2.5)
    with pytest.raises(RateLimitedError) as raised:
        provider.fn("hello")
    assert raised.value.retry_after == 2.5
    assert openai_quota(raised.value.headers)["remaining_requests"] == 0
    assert isinstance(raised.value.__cause__, openai.RateLimitError)
    assert target.stats().requests == 1  # the client retried nothing


def test_server_errors_propagate_as_the_clients_own(target: FaultServer) -> None:
    provider = openai_chat("primary", model="m", base_url=target.openai_base_url)
    target.set("errors", status=503)
    with pytest.raises(openai.InternalServerError):
        provider.fn("hello")
    target.set("errors", status=500)
    with pytest.raises(openai.APIStatusError) as raised:
        provider.fn("hello")
    assert raised.value.status_code == 500
    assert target.stats().requests == 2  # one request per call: retries are ours


def test_a_hang_times_out_within_the_timeout(target: FaultServer) -> None:
    provider = openai_chat("primary", model="m", base_url=target.openai_base_url, timeout=1.0)
    target.set("hang")
    with pytest.raises(openai.APITimeoutError):
        provider.fn("hello")
    assert wait_until(lambda: target.stats().held == 0, 60)  # it let the request go
    target.set("healthy")
    assert provider.fn("after") == "primary: after"


def test_down_is_a_connection_error_until_it_is_back(target: FaultServer) -> None:
    provider = openai_chat("primary", model="m", base_url=target.openai_base_url)
    assert provider.fn("before") == "primary: before"  # a pooled connection to lose
    target.set("down")
    for _ in range(2):
        with pytest.raises(openai.APIConnectionError):
            provider.fn("hello")
    target.set("healthy")
    assert provider.fn("back") == "primary: back"


def test_asynchronous_calls_from_one_loop_after_another(target: FaultServer) -> None:
    provider = openai_chat("primary", model="m", base_url=target.openai_base_url, asynchronous=True)
    assert provider.is_async

    async def call(text: str) -> tuple[str, dict[str, float]]:
        with collecting() as report:
            answer = await provider.fn(text)
        return answer, report.units

    assert asyncio.run(call("one")) == ("primary: one", {"tokens_in": 1.0, "tokens_out": 2.0})
    assert asyncio.run(call("two"))[0] == "primary: two"  # a new loop, a new client
    target.set("rate_limited", retry_after=4)
    with pytest.raises(RateLimitedError) as raised:
        asyncio.run(call("three"))
    assert raised.value.retry_after == 4


def test_a_given_client_is_used_with_its_retries_off(target: FaultServer) -> None:
    client = openai.OpenAI(base_url=target.openai_base_url, api_key="k", max_retries=5)
    provider = openai_chat("primary", model="m", client=client)
    target.set("errors")
    with pytest.raises(openai.InternalServerError):
        provider.fn("hello")
    assert target.stats().requests == 1
    given = openai.AsyncOpenAI(base_url=target.openai_base_url, api_key="k")
    assert openai_chat("primary", model="m", client=given).is_async


def test_configuration_is_checked_when_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="api_key"):
        openai_chat("openai", model="gpt-4o-mini")
    with pytest.raises(ConfigurationError, match="timeout"):
        openai_chat("local", model="m", base_url="http://127.0.0.1:1/v1", timeout=0)
    with pytest.raises(ConfigurationError, match="model"):
        openai_chat("local", model="", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigurationError, match="client"):
        openai_chat("local", model="m", client=object())  # type: ignore[arg-type]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_packages_are_imported_only_when_a_factory_is_called() -> None:
    done = run_python(
        "import sys\n"
        "import resilience_tasks.providers\n"
        "print(sorted(m for m in ('openai', 'mcp', 'httpx2') if m in sys.modules))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_package_the_factory_names_the_extra() -> None:
    done = run_python(
        "import sys\n"
        "sys.modules['openai'] = None\n"
        "from resilience_tasks.errors import ConfigurationError\n"
        "from resilience_tasks.providers import openai_chat\n"
        "try:\n"
        "    openai_chat('p', model='m', base_url='http://127.0.0.1:1/v1')\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'resilience-tasks[openai]'" in done.stdout
