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

from resilience_tasks.testing.faults.handle import FaultServer
from resilience_tasks.testing.faults.spec import MODEL as MODEL
from resilience_tasks.testing.faults.spec import MODES, Fault, FaultStats
from resilience_tasks.testing.faults.spec import picked as picked

__all__ = ["MODES", "Fault", "FaultServer", "FaultStats", "main"]


def main() -> None:
    """``resilience-fault-server``: run one fault target (imported here only when it runs, so
    ``python -m resilience_tasks.testing.faults.target`` finds the module not yet loaded)."""
    from resilience_tasks.testing.faults.target import main as run

    run()


if __name__ == "__main__":
    main()
