"""A fault target: an OpenAI-compatible chat API and an MCP server whose health is switched live.

One process is one target (a primary, a backup...). Its service port serves
``POST /v1/chat/completions``, ``GET /v1/models`` and MCP (streamable HTTP) at ``/mcp``; its
control port serves ``GET|POST /mode``, ``GET /stats``, ``POST /reset`` and ``GET /health``, and
keeps answering whatever the service does. The modes, and the parameters each takes::

    healthy                           answer at once
    latency       delay=1.0           answer every call after ``delay`` seconds
    slow_tail     fraction=0.1 delay=5.0   that share of the calls, spread evenly (0.1: every
                                      10th), answers after ``delay``; the rest at once
    errors        rate=1.0 status=500 that share of the calls answers ``status`` (a 5xx) with an
                                      OpenAI error body
    rate_limited  rate=1.0 retry_after=1.0   that share answers 429 with ``Retry-After``
    hang          -                   hold every call, answering nothing, until its client gives
                                      up (or the mode changes: then it is served by the new mode)
    down          -                   the service port refuses connections and resets open ones;
                                      any other mode reopens it on the same port

Faults apply to every service request, MCP included, and are decided in order of arrival, so
shares are exact and runs repeat. Tests, benchmarks and the demo reach a target only through
real HTTP: ``FaultServer`` runs it as a subprocess; the command is
``resilience-fault-server --port 0``, which prints its addresses as one JSON line once it listens.
The server needs the ``mcp`` extra (the MCP SDK brings uvicorn); importing this module does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self

from resilience_tasks.testing.polling import wait_until
from resilience_tasks.testing.processes import kill_group

if TYPE_CHECKING:
    import uvicorn

__all__ = ["MODES", "Fault", "FaultServer", "FaultStats", "main"]

#: Every mode with the parameters it takes and their defaults.
MODES: Mapping[str, Mapping[str, float]] = {
    "healthy": {},
    "latency": {"delay": 1.0},
    "slow_tail": {"fraction": 0.1, "delay": 5.0},
    "errors": {"rate": 1.0, "status": 500},
    "rate_limited": {"rate": 1.0, "retry_after": 1.0},
    "hang": {},
    "down": {},
}

#: The model ``GET /v1/models`` lists (any model name is answered).
MODEL = "fault-chat"


@dataclass(frozen=True)
class Fault:
    """A mode and its parameters, validated (``Fault.of``) on both sides of the control port."""

    mode: str = "healthy"
    params: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, mode: str, **params: Any) -> Fault:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        unknown = sorted(set(params) - set(MODES[mode]))
        if unknown:
            takes = ", ".join(MODES[mode]) or "no parameters"
            raise ValueError(f"mode {mode!r} takes {takes}; got {', '.join(unknown)}")
        values = {**MODES[mode], **params}
        for key, value in values.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{mode}.{key} must be a number >= 0, got {value!r}")
            if key in ("rate", "fraction") and value > 1:
                raise ValueError(f"{mode}.{key} must be between 0 and 1, got {value!r}")
        if "status" in values and values["status"] not in range(500, 600):
            raise ValueError(f"{mode}.status must be an HTTP 5xx status, got {values['status']!r}")
        return cls(mode, {key: float(value) for key, value in values.items()})

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.params}


def picked(share: float, index: int) -> bool:
    """Whether call ``index`` (from 0) is in an evenly spread ``share`` of the calls.

    0.1 picks calls 9, 19, 29... (every 10th), 0.5 every other one, 1 all, 0 none: a benchmark
    reading a p99 gets the same tail on every run.
    """
    return math.floor((index + 1) * share + 1e-9) > math.floor(index * share + 1e-9)


# --- the target process -----------------------------------------------------------------------

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def _duration(seconds: float) -> str:
    """OpenAI's spelling of a reset delay: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


@dataclass
class Quota:
    """A one-minute window of requests and tokens, told in OpenAI's ``x-ratelimit-*`` headers."""

    requests: int
    tokens: int
    window: float = 60.0
    started: float = field(default_factory=time.monotonic)
    used_requests: int = 0
    used_tokens: int = 0

    def _roll(self) -> float:
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started, self.used_requests, self.used_tokens = now, 0, 0
        return self.window - (now - self.started)

    def spend(self, tokens: int) -> None:
        self._roll()
        self.used_requests += 1
        self.used_tokens += tokens

    def headers(self, exhausted: bool = False) -> list[tuple[str, str]]:
        reset = _duration(self._roll())
        left_requests = 0 if exhausted else max(0, self.requests - self.used_requests)
        left_tokens = max(0, self.tokens - self.used_tokens)
        return [
            ("x-ratelimit-limit-requests", str(self.requests)),
            ("x-ratelimit-remaining-requests", str(left_requests)),
            ("x-ratelimit-reset-requests", reset),
            ("x-ratelimit-limit-tokens", str(self.tokens)),
            ("x-ratelimit-remaining-tokens", str(left_tokens)),
            ("x-ratelimit-reset-tokens", reset),
        ]


class Target:
    """The target's state: its fault, its quota and what reached it (one event loop, no locks)."""

    def __init__(self, name: str, fault: Fault, quota: Quota) -> None:
        self.name = name
        self.fault = fault
        self.quota = quota
        self.tool_calls: Counter[str] = Counter()
        self.held = 0  # a gauge: requests held right now; reset leaves it
        self.reset()
        self._index = 0  # calls decided under the current fault
        self._changed = asyncio.Event()

    def reset(self) -> None:
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.endpoints: Counter[str] = Counter()
        self.tool_calls.clear()
        self.completions = 0

    def next_index(self) -> int:
        self._index += 1
        return self._index - 1

    def switch(self, fault: Fault) -> None:
        """Take ``fault`` from the next decision on, and wake the held requests."""
        self.fault, self._index = fault, 0
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.fault.mode,
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "endpoints": dict(self.endpoints),
            "tool_calls": dict(self.tool_calls),
            "held": self.held,
        }


async def _respond(
    send: Send, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()
) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(key.encode(), value.encode()) for key, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


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


def _endpoint(path: str) -> str:
    path = path.rstrip("/")
    names = {"/v1/chat/completions": "chat", "/v1/models": "models", "/mcp": "mcp"}
    return names.get(path, "other")


class FaultLayer:
    """Applies the target's fault to each service request, then hands it to ``app``."""

    def __init__(self, target: Target, app: ASGIApp) -> None:
        self.target = target
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return
        target = self.target
        target.requests += 1
        target.endpoints[_endpoint(scope["path"])] += 1
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
                await _respond(send, int(params["status"]), _error(message, "server_error"))
                return
            if fault.mode == "rate_limited" and picked(params["rate"], index):
                target.outcomes["rate_limited"] += 1
                wait = params["retry_after"]
                headers = [
                    ("retry-after", f"{wait:g}"),
                    ("retry-after-ms", str(round(wait * 1000))),
                ]
                message = f"Rate limit reached for requests on {target.name}. Please try again."
                await _respond(
                    send,
                    429,
                    _error(message, "requests", "rate_limit_exceeded"),
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


def _text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


async def _chat(target: Target, receive: Receive, send: Send) -> None:
    try:
        payload = json.loads((await receive())["body"])
        model, messages = payload["model"], payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
    except (ValueError, KeyError, TypeError) as error:
        await _respond(send, 400, _error(f"invalid request: {error}", "invalid_request_error"))
        return
    if payload.get("stream"):
        message = "stream is not supported by the fault server"
        await _respond(send, 400, _error(message, "invalid_request_error"))
        return
    said = [(m.get("role"), _text(m.get("content"))) for m in messages if isinstance(m, dict)]
    asked = [text for _, text in said]
    users = [text for role, text in said if role == "user"]
    answer = f"{target.name}: {(users or asked or [''])[-1]}"
    prompt_tokens = sum(max(1, len(text.split())) for text in asked)
    completion_tokens = len(answer.split())
    target.quota.spend(prompt_tokens + completion_tokens)
    target.completions += 1
    number = target.completions
    body = {
        "id": f"chatcmpl-{target.name}-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    headers = [*target.quota.headers(), ("x-request-id", f"req_{target.name}_{number}")]
    await _respond(send, 200, body, headers)


def _service(target: Target, mcp: ASGIApp) -> ASGIApp:
    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        endpoint, method = _endpoint(scope["path"]), scope["method"]
        if endpoint == "mcp":
            await mcp(scope, receive, send)
        elif (endpoint, method) == ("chat", "POST"):
            await _chat(target, receive, send)
        elif (endpoint, method) == ("models", "GET"):
            model = {"id": MODEL, "object": "model", "created": 0, "owned_by": target.name}
            await _respond(send, 200, {"object": "list", "data": [model]})
        else:
            message = f"Unknown request URL: {method} {scope['path']}"
            await _respond(send, 404, _error(message, "invalid_request_error", "unknown_url"))

    return app


def _control(target: Target, switch: Callable[[Fault], Awaitable[None]]) -> ASGIApp:
    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return
        route = (scope["method"], scope["path"].rstrip("/"))
        if route == ("GET", "/health"):
            await _respond(send, 200, {"name": target.name, "mode": target.fault.mode})
        elif route == ("GET", "/mode"):
            await _respond(send, 200, target.fault.as_json())
        elif route in (("POST", "/mode"), ("PUT", "/mode")):
            try:
                request = json.loads(body or b"{}")
                if not isinstance(request, dict) or "mode" not in request:
                    raise ValueError('the body must be a JSON object with a "mode"')
                fault = Fault.of(**request)
            except (ValueError, TypeError) as error:
                await _respond(send, 400, {"error": str(error)})
                return
            await switch(fault)
            await _respond(send, 200, fault.as_json())
        elif route == ("GET", "/stats"):
            await _respond(send, 200, target.stats())
        elif route == ("POST", "/reset"):
            target.reset()
            await _respond(send, 200, target.stats())
        else:
            await _respond(send, 404, {"error": f"no route {route[0]} {route[1]}"})

    return app


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to the port and not listening: connections to it are refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _uvicorn(app: ASGIApp) -> uvicorn.Server:
    import uvicorn

    class Server(uvicorn.Server):
        def capture_signals(self) -> Any:  # the process handles its own signals
            import contextlib

            return contextlib.nullcontext()

    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, http="h11", ws="none"
    )
    return Server(config)


class Listener:
    """One port, served by uvicorn while open; bound but not listening while closed.

    Holding the port while closed keeps it ours (no other process is handed it), and makes
    clients meet a refused connection, as with a provider that is down.
    """

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.app, self.host = app, host
        self._socket: socket.socket | None = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._server is not None:
            return
        server = _uvicorn(self.app)
        sock, self._socket = self._socket or _bind(self.host, self.port), None
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"port {self.port} stopped while starting")
            await asyncio.sleep(0.005)
        self._server, self._task = server, task

    async def close(self, hold_port: bool = True) -> None:
        """Stop accepting, reset open connections (their requests see a disconnect), stop."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        for listening in server.servers:
            listening.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        server.should_exit = server.force_exit = True
        await task
        if hold_port:
            self._socket = _bind(self.host, self.port)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(options: argparse.Namespace, fault: Fault) -> None:
    """Run one target until SIGTERM or SIGINT; print its addresses once it listens."""
    from resilience_tasks.testing.fault_mcp import mcp_app

    target = Target(options.name, fault, Quota(options.requests_limit, options.tokens_limit))
    mcp, mcp_running = mcp_app(options.name, target.tool_calls, options.host)
    service = Listener(FaultLayer(target, _service(target, mcp)), options.host, options.port)
    lock = asyncio.Lock()

    async def switch(fault: Fault) -> None:
        async with lock:
            if fault.mode == "down":
                target.switch(fault)
                await service.close()
            else:
                await service.open()
                target.switch(fault)

    control = Listener(_control(target, switch), options.host, options.control_port)
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(number, stop.set)
    async with mcp_running:
        await control.open()
        if fault.mode != "down":
            await service.open()
        base = _url(options.host, service.port)
        addresses = {
            "name": options.name,
            "pid": os.getpid(),
            "port": service.port,
            "control_port": control.port,
            "openai_base_url": f"{base}/v1",
            "mcp_url": f"{base}/mcp",
            "control_url": _url(options.host, control.port),
        }
        print(json.dumps(addresses), flush=True)
        sys.stdout = sys.stderr  # the one line is the parent's; anything else goes to the log
        await stop.wait()
        await service.close(hold_port=False)
        await control.close(hold_port=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilience-fault-server",
        description="An OpenAI-compatible chat API and an MCP server whose faults are switched "
        "at run time through a control port.",
    )
    parser.add_argument("--name", default="fault", help="the target's name, in its answers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="service port (0: a free one)")
    parser.add_argument("--control-port", type=int, default=0, help="control port (0: free)")
    parser.add_argument("--mode", default="healthy", choices=list(MODES))
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a mode parameter"
    )
    parser.add_argument("--requests-limit", type=int, default=10_000, help="per minute")
    parser.add_argument("--tokens-limit", type=int, default=1_000_000, help="per minute")
    return parser


def main(argv: list[str] | None = None) -> None:
    """``resilience-fault-server``: run one target until SIGTERM or Ctrl-C."""
    parser = _parser()
    options = parser.parse_args(argv)
    try:
        params = {}
        for pair in options.param:
            key, _, value = pair.partition("=")
            params[key] = float(value)
        fault = Fault.of(options.mode, **params)
    except ValueError as error:
        parser.error(str(error))
    try:
        import mcp  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        parser.error("the fault server needs the MCP SDK: pip install 'resilience-tasks[mcp]'")
    asyncio.run(serve(options, fault))


# --- the handle tests use ---------------------------------------------------------------------


@dataclass(frozen=True)
class FaultStats:
    """What reached a target since it started or was last reset."""

    #: HTTP requests that reached the service port (none do while it is down).
    requests: int
    #: What the fault did with them: ``ok``, ``delayed``, ``error``, ``rate_limited``, ``hung``.
    outcomes: Mapping[str, int]
    #: Requests by endpoint: ``chat``, ``models``, ``mcp``, ``other``.
    endpoints: Mapping[str, int]
    #: MCP tool calls that ran, by tool (a call refused by a fault never runs).
    tool_calls: Mapping[str, int]
    #: Requests held right now (``hang``).
    held: int
    mode: str


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
        return _url(self.host, self.port)

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
        return _url(self.host, self.control_port)

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
        argv = [sys.executable, "-m", "resilience_tasks.testing.fault_server"]
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


if __name__ == "__main__":
    main()
