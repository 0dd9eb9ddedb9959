"""The target process (``resilience-fault-server``): its ports, its signals, its one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from resilience_tasks.testing.faults.control import control_app
from resilience_tasks.testing.faults.layer import FaultLayer
from resilience_tasks.testing.faults.listener import Listener
from resilience_tasks.testing.faults.service import service_app
from resilience_tasks.testing.faults.spec import MODES, Fault, base_url
from resilience_tasks.testing.faults.state import Quota, Target


async def serve(options: argparse.Namespace, fault: Fault) -> None:
    """Run one target until SIGTERM or SIGINT; print its addresses once it listens."""
    from resilience_tasks.testing.faults.mcp_server import mcp_app

    target = Target(options.name, fault, Quota(options.requests_limit, options.tokens_limit))
    mcp, mcp_running = mcp_app(options.name, target.tool_calls, options.host)
    service = Listener(FaultLayer(target, service_app(target, mcp)), options.host, options.port)
    lock = asyncio.Lock()

    async def switch(fault: Fault) -> None:
        async with lock:
            if fault.mode == "down":
                target.switch(fault)
                await service.close()
            else:
                await service.open()
                target.switch(fault)

    control = Listener(control_app(target, switch), options.host, options.control_port)
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(number, stop.set)
    async with mcp_running:
        await control.open()
        if fault.mode != "down":
            await service.open()
        base = base_url(options.host, service.port)
        addresses = {
            "name": options.name,
            "pid": os.getpid(),
            "port": service.port,
            "control_port": control.port,
            "openai_base_url": f"{base}/v1",
            "mcp_url": f"{base}/mcp",
            "control_url": base_url(options.host, control.port),
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


if __name__ == "__main__":
    main()
