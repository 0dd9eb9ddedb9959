"""``resilience-demo``: its arguments, the Redis it may use, the run and the closing account."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import NoReturn

import redis
from kombu.exceptions import OperationalError

from resilience_tasks import ConfigurationError, StateUnavailableError, __version__
from resilience_tasks.demo.outage import tour
from resilience_tasks.demo.setup import embedded_setup, redis_setup
from resilience_tasks.demo.status import EXIT_LOST, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, PROG
from resilience_tasks.demo.tally import Tally, account
from resilience_tasks.state import connection
from resilience_tasks.state.connection import STATE_URL_ENV


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Walk through an outage of a local HTTP dependency with resilient Celery tasks: "
            "retries, the fleet breaker, deferred work, recovery, the dead-letter store, a "
            "fleet rate limit and a provider chain failing over; then account for every task "
            "sent."
        ),
        epilog=(
            f"Without --redis-url or {STATE_URL_ENV} the demo runs embedded (in-memory broker, "
            "in-process Redis emulation; needs the demo extra). On a real Redis it uses a key "
            "prefix and queues of its own run and deletes them afterwards. Exit status: "
            f"{EXIT_OK} every task accounted for, {EXIT_LOST} some task lost, {EXIT_USAGE} bad "
            f"arguments, {EXIT_UNREACHABLE} Redis unreachable."
        ),
    )
    where = cli.add_mutually_exclusive_group()
    where.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"run on this Redis (broker, results and state); default: ${STATE_URL_ENV}",
    )
    where.add_argument(
        "--embedded",
        action="store_true",
        help=f"run embedded even if {STATE_URL_ENV} is set",
    )
    cli.add_argument("-q", "--quiet", action="store_true", help="print only the closing account")
    cli.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    options = cli.parse_args(argv)
    source = "--redis-url" if options.redis_url else STATE_URL_ENV
    url: str | None = (
        None if options.embedded else (options.redis_url or os.environ.get(STATE_URL_ENV) or None)
    )
    if url is not None and not url.startswith(("redis://", "rediss://")):
        cli.error(f"{source} must be a redis:// or rediss:// URL, got {connection.redact(url)}")
    run = uuid.uuid4().hex[:8]

    def say(text: str) -> None:
        if not options.quiet:
            print(text, flush=True)

    if url is not None:
        problem = unusable(url, source)
        if problem is not None:
            print(f"{PROG}: {problem[1]}", file=sys.stderr)
            return problem[0]
    setup = redis_setup(url, run) if url is not None else embedded_setup(run)
    tally = Tally(setup.manager)
    if threading.current_thread() is threading.main_thread():
        # A terminated demo unwinds like an interrupted one: its servers stop, its keys go.
        signal.signal(signal.SIGTERM, terminated)
    try:
        tour(setup, tally, say)
        left_waiting = setup.manager.deferred_count()
    except (redis.RedisError, OperationalError, OSError) as error:
        print(f"{PROG}: lost the connection to Redis mid-run: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        with suppress(redis.RedisError):
            setup.cleanup([entry.result.id for entry in tally.sent])
    lines = account(tally, left_waiting)
    print("Every task sent, accounted for from its outcome:", flush=True)
    for line in lines:
        print(f"  {line}", flush=True)
    return EXIT_OK if not tally.lost and left_waiting == 0 else EXIT_LOST


def terminated(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def unusable(url: str, origin: str) -> tuple[int, str] | None:
    """Why Redis at ``url`` cannot be used (exit status, the library's one line), or None."""
    source = connection.StateURL(url, origin)
    try:
        client = connection.connect(source, socket_connect_timeout=3.0, socket_timeout=5.0)
        try:
            connection.ensure_reachable(client, source)
        finally:
            client.close()
    except ConfigurationError as error:
        return EXIT_USAGE, str(error)
    except StateUnavailableError as error:
        return EXIT_UNREACHABLE, str(error)
    return None
