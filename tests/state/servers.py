"""Private Redis servers for tests that need a topology of their own: a server with a
password, a 3-node Redis Cluster, a Sentinel. Each runs the machine's ``redis-server`` on free
loopback ports in a temporary directory, and is killed by the test that started it; the shared
Redis on 6379 is never touched.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_for

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A free loopback port (and, for a cluster node, its bus port + 10000 free too)."""
    for _ in range(200):
        port = random.randint(20_000, 30_000)
        if _free(port) and (not bus or _free(port + 10_000)):
            return port
    raise RuntimeError("no free loopback port found")


def _require_binaries() -> None:
    if REDIS_SERVER is None or REDIS_CLI is None:  # an incomplete machine is a failure
        pytest.fail("these tests need redis-server and redis-cli on PATH")


@contextmanager
def redis_server(
    directory: Path, *args: str, config: Path | None = None, bus: bool = False
) -> Iterator[int]:
    """Run ``redis-server [config]`` with ``args`` on a free port until the block ends; yields
    the port."""
    _require_binaries()
    port = free_port(bus)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{port}.log"
    process = subprocess.Popen(
        [
            str(REDIS_SERVER),
            *([str(config)] if config is not None else []),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(log),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process, log)
        yield port
    finally:
        process.kill()
        process.wait(10)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"redis-server on {port} exited: {text[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not listen in time")


@contextmanager
def redis_cluster(directory: Path, nodes: int = 3) -> Iterator[list[int]]:
    """A Redis Cluster of ``nodes`` primaries (no replicas); yields their ports once
    ``cluster_state:ok`` holds on every node."""
    with ExitStack() as stack:
        ports = [
            stack.enter_context(
                redis_server(
                    directory / f"node{i}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / f"node{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "5000",
                    bus=True,
                )
            )
            for i in range(nodes)
        ]
        subprocess.run(
            [
                str(REDIS_CLI),
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

        def ready() -> bool:
            for port in ports:
                info = redis.Redis(port=port, decode_responses=True).cluster("INFO")
                if info.get("cluster_state") != "ok":  # redis-py parses CLUSTER INFO
                    return False
            return True

        wait_for(ready, timeout=60)
        yield ports


@contextmanager
def sentinel(
    directory: Path, primary_port: int, service: str, auth_pass: str | None = None
) -> Iterator[int]:
    """A Sentinel monitoring the primary on ``primary_port`` as ``service`` (with the primary's
    password ``auth_pass``); yields its port once it names the primary."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {service} 60000\n"
        + (f"sentinel auth-pass {service} {auth_pass}\n" if auth_pass else "")
    )
    with redis_server(directory, "--sentinel", config=config) as port:
        client = redis.Redis(port=port)
        wait_for(
            lambda: client.sentinel_get_master_addr_by_name(service) is not None,
            timeout=30,
        )
        yield port
