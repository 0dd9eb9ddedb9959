"""One port served by uvicorn, that closes (refusing connections) and reopens on the same port."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from resilience_tasks.testing.faults.asgi import ASGIApp

if TYPE_CHECKING:
    import uvicorn


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
