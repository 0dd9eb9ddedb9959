"""``resilience-demo`` as a new user runs it: a subprocess, its output and its exit status.

The embedded run is the one place the project runs on the in-process Redis emulation: that is
the demo's own mode, which is what is tested here. The same tour also runs on the real Redis.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL

#: The tour's tasks: 5 healthy calls, 1 that fails by its retry policy, 20 deferred through the
#: outage, 1 that waits past max_defer_age, 40 under the rate limit.
ACCOUNT = {
    "sent": 67,
    "returned": 65,
    "failed as their retry policy says": 1,
    "dead-lettered": 1,
    "left waiting in the deferred store": 0,
    "lost": 0,
}

SCRIPT = Path(sys.executable).parent / "resilience-demo"


def demo(
    *args: str, env: dict[str, str] | None = None, timeout: float = 170.0
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``resilience-demo`` command, with ``RESILIENCE_REDIS_URL`` unset
    unless ``env`` sets it."""
    environment = {k: v for k, v in os.environ.items() if k != "RESILIENCE_REDIS_URL"}
    environment.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def account(stdout: str) -> dict[str, int]:
    """The closing account's ``name: number`` lines."""
    _, _, tail = stdout.partition("Every task sent, accounted for from its outcome:")
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^  ([a-z][a-z -]+): (\d+)$", tail, re.MULTILINE)
    }


def check_account(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    numbers = account(result.stdout)
    assert numbers == ACCOUNT, result.stdout[-3000:]
    accounted = (
        numbers["returned"]
        + numbers["failed as their retry policy says"]
        + numbers["dead-lettered"]
    )
    assert numbers["sent"] - accounted == numbers["lost"]


def test_embedded_demo_accounts_for_every_task() -> None:
    result = demo("--embedded")
    check_account(result)
    assert "embedded: in-memory broker" in result.stdout
    assert "task 100 failed as its policy says: ServiceUnavailable" in result.stdout
    assert "20/20 returned" in result.stdout
    assert "40/40 returned" in result.stdout


def test_quiet_prints_only_the_account() -> None:
    result = demo("--quiet")
    check_account(result)
    assert result.stdout.splitlines()[0] == "Every task sent, accounted for from its outcome:"
    assert len(result.stdout.splitlines()) == 1 + len(ACCOUNT)


def test_demo_on_the_real_redis_leaves_nothing_behind(redis_client: redis.Redis) -> None:
    result = demo("--redis-url", REDIS_URL)
    check_account(result)
    run = re.search(r"run ([0-9a-f]{8})\)", result.stdout)
    assert run is not None, result.stdout[:500]
    assert list(redis_client.scan_iter(f"*{run.group(1)}*", count=1000)) == []


def test_help_describes_the_options_and_runs_nothing() -> None:
    result = demo("--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: resilience-demo")
    text = " ".join(result.stdout.split())
    for option in ("--redis-url", "--embedded", "--quiet", "Exit status: 0 every task"):
        assert option in text
    assert "dependency:" not in result.stdout
    assert result.stderr == ""


def test_an_unknown_flag_is_refused() -> None:
    result = demo("--bogus", timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "resilience-demo: error: unrecognized arguments: --bogus" in result.stderr


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused, and no other
    process can take it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("given_by", ["--redis-url", "RESILIENCE_REDIS_URL"])
def test_unreachable_redis_is_one_line(refusing_port: int, given_by: str) -> None:
    url = f"redis://:s3cret@127.0.0.1:{refusing_port}/0"
    args: Sequence[str] = ("--redis-url", url) if given_by == "--redis-url" else ()
    env = {"RESILIENCE_REDIS_URL": url} if given_by != "--redis-url" else None
    line = one_line(demo(*args, env=env, timeout=60))
    assert line.startswith("resilience-demo: cannot reach")
    assert f"127.0.0.1:{refusing_port}" in line
    assert "refused" in line
    assert given_by in line
    assert "s3cret" not in line


def test_a_url_that_is_not_redis_is_a_usage_error() -> None:
    result = demo("--redis-url", "http://127.0.0.1:6379/0", timeout=60)
    assert result.returncode == 2
    assert "--redis-url must be a redis:// or rediss:// URL" in result.stderr
