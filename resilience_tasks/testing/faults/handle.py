"""``FaultServer``: one fault target in a subprocess, switched and read over its control port."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn, Self

from resilience_tasks.testing.faults.spec import Fault, FaultStats, base_url
from resilience_tasks.testing.polling import wait_until
from resilience_tasks.testing.processes import kill_group


class FaultServer:
    """One fault target in a subprocess of its own, stopped when its ``with`` block ends.

    ``mode`` and ``params`` are the mode it starts in. ``port=0`` and ``control_port=0`` take
    free ports; once started, a stopped or killed target starts again on the same ones, so a
    provider that restarts comes back at its address.
    """

    def __init__(
        self,
        name: str = "fault",
        *,
        mode: str = "healthy",
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        requests_limit: int = 10_000,
        tokens_limit: int = 1_000_000,
        startup_timeout: float = 60.0,
        **params: float,
    ) -> None:
        self.fault = Fault.of(mode, **params)
        self.name, self.host = name, host
        self.port, self.control_port = port, control_port
        self.requests_limit, self.tokens_limit = requests_limit, tokens_limit
        self.startup_timeout = startup_timeout
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # addresses
    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def openai_base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return f"{self.url}/v1"

    @property
    def mcp_url(self) -> str:
        """The MCP streamable HTTP endpoint."""
        return f"{self.url}/mcp"

    @property
    def control_url(self) -> str:
        return base_url(self.host, self.control_port)

    # life
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> Self:
        """Start the process and return once both of its ports answer."""
        if self.alive:
            return self
        argv = [sys.executable, "-m", "resilience_tasks.testing.faults.target"]
        argv += ["--name", self.name, "--host", self.host, "--mode", self.fault.mode]
        argv += ["--port", str(self.port), "--control-port", str(self.control_port)]
        argv += ["--requests-limit", str(self.requests_limit)]
        argv += ["--tokens-limit", str(self.tokens_limit)]
        for key, value in self.fault.params.items():
            argv += ["--param", f"{key}={value!r}"]
        handle, path = tempfile.mkstemp(prefix=f"rt-fault-{self.name}-", suffix=".log")
        self._log = Path(path)
        with open(handle, "ab") as log:
            self._popen = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        addresses = json.loads(self._ready_line())
        self.port, self.control_port = addresses["port"], addresses["control_port"]
        if not wait_until(self._answers, self.startup_timeout):
            self._fail("does not answer")
        return self

    def _fail(self, what: str) -> NoReturn:
        log = self.log()
        self.kill()
        raise RuntimeError(f"fault server {self.name} {what}:\n{log}")

    def _ready_line(self) -> str:
        assert self._popen is not None and self._popen.stdout is not None
        fd, data = self._popen.stdout.fileno(), b""
        deadline = time.monotonic() + self.startup_timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail("is not ready in time")
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self._fail("exited")
                data += chunk
        return data.split(b"\n", 1)[0].decode()

    def _answers(self) -> bool:
        try:
            self._call("GET", "/health")
            with socket.create_connection((self.host, self.port), timeout=5):
                return True
        except OSError:
            return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, up to ``grace`` seconds to close its ports, then SIGKILL."""
        if self._popen is not None:
            kill_group(self._popen, grace)
            if self._popen.stdout is not None:
                self._popen.stdout.close()
            self._popen = None
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def kill(self) -> None:
        """SIGKILL at once: the target vanishes mid-call, as a crashed provider does."""
        self.stop(grace=0.0)

    def log(self, lines: int = 40) -> str:
        """The last lines the running process wrote to stderr."""
        try:
            text = self._log.read_text(errors="replace") if self._log is not None else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # control
    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.control_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ValueError(f"fault server {self.name}: {error.read().decode()}") from error

    def set(self, mode: str, **params: float) -> Fault:
        """Switch the mode; returns once it holds (a ``down`` port is closed, others open)."""
        fault = Fault.of(mode, **params)
        self._call("POST", "/mode", fault.as_json())
        self.fault = fault
        return fault

    def stats(self) -> FaultStats:
        data = self._call("GET", "/stats")
        return FaultStats(
            requests=data["requests"],
            outcomes=data["outcomes"],
            endpoints=data["endpoints"],
            tool_calls=data["tool_calls"],
            held=data["held"],
            mode=data["mode"],
        )

    def reset(self) -> None:
        """Zero the counts (the mode and the quota window stay)."""
        self._call("POST", "/reset")
