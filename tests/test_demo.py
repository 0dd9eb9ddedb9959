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
#: outage, 1 that waits past max_defer_age, 40 under the rate limit; then 14 chain calls: 1 the
#: primary answers, 5 the backup, 3 the degraded model, 1 the stale cache, 1 that waits for the
#: primary and 3 more it answers.
ACCOUNT = {
    "sent": 81,
    "returned": 79,
    "of them by a backup provider": 5,
    "of them degraded": 3,
    "of them stale, from the cache": 1,
    "failed as their retry policy says": 1,
    "dead-lettered": 1,
    "left waiting in the deferred store": 0,
    "lost": 0,
}

#: The account of a demo that skips the chain chapter (its packages are missing).
ACCOUNT_WITHOUT_CHAINS = {
    "sent": 67,
    "returned": 65,
    "failed as their retry policy says": 1,
    "dead-lettered": 1,
    "left waiting in the deferred store": 0,
    "lost": 0,
}

#: Hides the chain chapter's packages from a Python that has this directory on its path.
HIDE_PACKAGES = """
import sys

class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("mcp", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hidden())
"""

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
        for match in re.finditer(r"^ {2}(?: {2})?([a-z][a-z ,-]+): (\d+)$", tail, re.MULTILINE)
    }


def check_account(
    result: subprocess.CompletedProcess[str], expected: dict[str, int] = ACCOUNT
) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    numbers = account(result.stdout)
    assert numbers == expected, result.stdout[-3000:]
    accounted = (
        numbers["returned"]
        + numbers["failed as their retry policy says"]
        + numbers["dead-lettered"]
    )
    assert numbers["sent"] - accounted == numbers["lost"]


def check_chain_chapter(stdout: str, degraded_queue: str) -> None:
    """The provider-chain chapter's lines: who answered each step, and how."""
    assert "   healthy: 1/1 by primary (call)\n" in stdout
    reached = re.search(
        r"^   primary answers 503: 5/5 by backup \(switch_provider\); requests that reached "
        r"the primary: (\d+) \(fail_max 2\)$",
        stdout,
        re.MULTILINE,
    )
    assert reached is not None, stdout[-3000:]
    # The breaker's trips, plus one trial per reset timeout if the machine is slow.
    assert int(reached.group(1)) >= 2
    assert (
        f"   backup down too: 3/3 by local (call; degraded); 3/3 run from {degraded_queue} "
        f"under their own task ids\n"
    ) in stdout
    assert re.search(
        r"^   everything down: the first question again: 1/1 by primary \(cache; degraded, "
        r"stale, \d+s old\); a new one: DEFERRED \(deferred depth 1\)$",
        stdout,
        re.MULTILINE,
    ), stdout[-3000:]
    assert re.search(
        r"^   primary back: the waiting task resolves under its id in [\d.]+s: 1/1 by primary "
        r"\(call\); the next 3: 3/3 by primary \(call\)$",
        stdout,
        re.MULTILINE,
    ), stdout[-3000:]


def providers_stopped(stdout: str) -> None:
    """The demo's fault servers are gone: their service ports refuse connections."""
    line = re.search(r"^providers: (.+)$", stdout, re.MULTILINE)
    assert line is not None, stdout[:1000]
    ports = [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)/v1", line.group(1))]
    assert len(ports) == 3
    for port in ports:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass


def test_embedded_demo_accounts_for_every_task() -> None:
    result = demo("--embedded")
    check_account(result)
    assert "embedded: in-memory broker" in result.stdout
    assert "task 100 failed as its policy says: ServiceUnavailable" in result.stdout
    assert "20/20 returned" in result.stdout
    assert "40/40 returned" in result.stdout
    check_chain_chapter(result.stdout, "demo.chat.degraded")
    providers_stopped(result.stdout)


def test_without_the_chain_packages_the_chapter_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(HIDE_PACKAGES)
    result = demo("--embedded", env={"PYTHONPATH": str(tmp_path)})
    check_account(result, ACCOUNT_WITHOUT_CHAINS)
    skipped = [line for line in result.stdout.splitlines() if line.startswith("7.")]
    assert skipped == [
        "7. Provider chains: skipped, they need mcp, uvicorn: pip install 'resilience-tasks[demo]'"
    ]
    assert "providers:" not in result.stdout


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
    check_chain_chapter(result.stdout, f"demo.chat.{run.group(1)}.degraded")
    providers_stopped(result.stdout)
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
