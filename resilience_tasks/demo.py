"""A tour of the resilience protocols, runnable on a bare machine: ``resilience-demo``.

It starts a small HTTP dependency on loopback, a Celery worker in this process and the deferred
pump, then walks through an outage: healthy calls, in-process retries, the breaker tripping,
work deferred instead of failed or blocking, half-open trials, recovery with every caller's
``AsyncResult`` resolving, a task that waited too long ending in the dead-letter store, a
fleet rate limit, and a provider chain over three OpenAI-compatible servers (its own
subprocesses, called with the official ``openai`` client) failing over to a backup, to a
degraded model and to a stale answer, and back. It then accounts for every task it sent from
the outcomes it collected, and exits non-zero if any is unaccounted for: the closing line is a
measurement, not a slogan.

With ``--redis-url`` (or ``RESILIENCE_REDIS_URL``) it runs on that Redis for broker, results
and state, under a key prefix and queue names of its own run, and removes them afterwards.
Otherwise it runs embedded: Celery's in-memory broker and an in-process Redis emulation
(fakeredis, from the ``demo`` extra) for the state, so nothing needs to be installed or
running. The tests never use the emulation; they run against a real Redis and real workers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from resilience_tasks import (
    BreakerPolicy,
    ConfigurationError,
    DeadLetteredError,
    RateLimit,
    RateLimitedError,
    ResilienceManager,
    ResourceType,
    RetryPolicy,
    Served,
    StateUnavailableError,
    __version__,
    served,
)
from resilience_tasks.adapter.task import DEFERRED, degraded_queue
from resilience_tasks.deferred import PumpThread
from resilience_tasks.state import connection
from resilience_tasks.state.connection import STATE_URL_ENV
from resilience_tasks.testing.polling import wait_until

#: Exit statuses, also listed in ``--help``.
EXIT_OK, EXIT_LOST, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

#: How long the demo waits for any one task's outcome before counting it as lost.
OUTCOME_TIMEOUT = 60.0

PROG = "resilience-demo"


class ServiceUnavailable(Exception):
    """The dependency answered 5xx: its fault, so the breaker counts it and retries apply."""


class Dependency:
    """An HTTP service on loopback that can be healthy or down, counting every request."""

    def __init__(self) -> None:
        self.healthy = True
        self.hits = 0
        self._lock = threading.Lock()
        dependency = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with dependency._lock:
                    dependency.hits += 1
                status = 200 if dependency.healthy else 503
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"down")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- accounting ----------------------------------------------------------------------------------

RETURNED, FAILED_BY_POLICY, DEAD_LETTERED = "returned", "failed as its policy says", "dead-lettered"
ACCOUNTED = (RETURNED, FAILED_BY_POLICY, DEAD_LETTERED)

#: How a returned task's chain call was answered, when not by the provider it asked first.
BY_BACKUP, DEGRADED, STALE = "by a backup provider", "degraded", "stale, from the cache"
PROVENANCE = (BY_BACKUP, DEGRADED, STALE)


def provenance(record: Served) -> str | None:
    """The account's name for how ``record`` was answered; None for the first provider."""
    if record.stale:
        return STALE
    if record.degraded:
        return DEGRADED
    return BY_BACKUP if record.protocol in ("switch_provider", "hedge") else None


@dataclass
class Sent:
    """One task the demo sent, what its policy says may end it, and how it did end."""

    label: str
    result: AsyncResult
    policy_failure: type[BaseException] | None = None
    outcome: str | None = None
    detail: str = ""
    value: Any = None
    #: What served the task's last chain call (tasks that call no chain have none).
    served: Served | None = None


class Tally:
    """Every task sent, settled one by one from what its ``AsyncResult`` actually reports.

    A task is accounted for when it returned, failed with the error its retry policy ends in,
    or was dead-lettered (its caller got ``DeadLetteredError`` and the dead-letter store holds
    its record). Anything else (no outcome in time, an unexpected error, a dead-letter error
    with no record) is lost, and the demo says which and why.
    """

    def __init__(self, manager: ResilienceManager) -> None:
        self.manager = manager
        self.sent: list[Sent] = []
        #: Seconds to wait for one outcome. Once a task has timed out the demo has waited long
        #: enough for everything sent before it, so the rest get a short wait each.
        self.patience = OUTCOME_TIMEOUT

    def send(
        self,
        task: Any,
        *args: Any,
        label: str,
        policy_failure: type[BaseException] | None = None,
    ) -> Sent:
        entry = Sent(label, task.delay(*args), policy_failure)
        self.sent.append(entry)
        return entry

    def settle(self, entry: Sent) -> Sent:
        """Wait for ``entry``'s outcome (once) and classify it."""
        if entry.outcome is not None:
            return entry
        timeout = self.patience
        try:
            entry.value = entry.result.get(timeout=timeout, interval=0.02)
            entry.detail, entry.outcome = str(entry.value), RETURNED
            records = self.manager.served(entry.result.id)
            entry.served = records[-1] if records else None
        except DeadLetteredError as error:
            record = self.manager.dead_letter(entry.result.id)
            if record is None:
                entry.outcome, entry.detail = "lost", f"DeadLetteredError but no record: {error}"
            else:
                entry.outcome, entry.detail = DEAD_LETTERED, record.reason
        except ResultTimeout:
            self.patience = 2.0
            entry.outcome = "lost"
            entry.detail = f"no outcome after {timeout:.0f}s (state {entry.result.state})"
        except Exception as error:
            if entry.policy_failure is not None and isinstance(error, entry.policy_failure):
                entry.outcome = FAILED_BY_POLICY
            else:
                entry.outcome = "lost"
            entry.detail = f"{type(error).__name__}: {error}"
        return entry

    def settle_all(self) -> None:
        for entry in self.sent:
            self.settle(entry)

    def count(self, outcome: str) -> int:
        return sum(1 for entry in self.sent if entry.outcome == outcome)

    def answered(self, how: str) -> int:
        """Returned tasks whose chain call was answered ``how`` (``PROVENANCE``)."""
        return sum(
            1
            for entry in self.sent
            if entry.outcome == RETURNED and entry.served and provenance(entry.served) == how
        )

    @property
    def lost(self) -> list[Sent]:
        return [entry for entry in self.sent if entry.outcome not in ACCOUNTED]


# -- the app ---------------------------------------------------------------------------------------


@dataclass
class Setup:
    app: Celery
    manager: ResilienceManager
    where: str
    queue: Callable[[str], str]
    cleanup: Callable[[Sequence[str]], None]
    run: str


def embedded_setup(run: str) -> Setup:
    try:
        import fakeredis
    except ImportError:
        print(
            f"{PROG}: the embedded demo needs the demo extra: "
            f"pip install 'resilience-tasks[demo]' (or give --redis-url)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE) from None
    app = Celery("resilience-demo", broker="memory://", backend="cache+memory://")
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    manager = ResilienceManager(
        f"demo-{run}", app=app, redis_client=fakeredis.FakeRedis(), pump_interval=0.2
    )
    where = "embedded: in-memory broker, in-process Redis emulation"
    return Setup(app, manager, where, queue=lambda name: name, cleanup=lambda ids: None, run=run)


def redis_setup(url: str, run: str) -> Setup:
    """Broker, results and state on ``url``, under names of this run only.

    A user's Redis may hold a real deployment's queues: the demo's worker must consume none of
    them, and two demos running at once must not take each other's tasks.
    """
    app = Celery("resilience-demo", broker=url, backend=url)
    app.conf.update(task_default_queue=f"resilience-demo.{run}", result_expires=3600)
    prefix = f"rt-demo-{run}"
    manager = ResilienceManager(
        f"demo-{run}", app=app, redis_url=url, key_prefix=prefix, pump_interval=0.2
    )

    def cleanup(task_ids: Sequence[str]) -> None:
        """Delete the run's state, queues and results: a demo leaves nothing behind."""
        client = connection.connect(url)
        try:
            keys: list[Any] = list(client.scan_iter(f"*{prefix}*", count=1000))
            for queue in app.conf.task_queues or ():
                name = queue.name
                keys += [name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"]
            keys += [f"celery-task-meta-{task_id}" for task_id in task_ids]
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()

    return Setup(
        app,
        manager,
        f"Redis at {connection.redact(url)}, run {run}",
        lambda name: f"{name}.{run}",
        cleanup,
        run,
    )


@contextmanager
def running(app: Celery, manager: ResilienceManager) -> Iterator[None]:
    """A worker in this process, plus the pump that beat would drive in a deployment."""
    from celery.contrib.testing.worker import start_worker

    with (
        start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="CRITICAL"
        ),
        PumpThread(manager.pump, 0.2),
    ):
        yield


# -- provider chains -------------------------------------------------------------------------------

#: What the provider-chain chapter needs beyond the core: the fault servers run on the MCP SDK
#: and uvicorn, and the chain calls them with the official openai client (the demo extra).
CHAIN_PACKAGES = ("openai", "mcp", "uvicorn")

#: The chain's providers: who, dollars per call, and whether their answers are degraded.
CHAIN_PROVIDERS = (("primary", 0.01, False), ("backup", 0.02, False), ("local", 0.0, True))

#: Small breakers, so that the walk-through trips and recovers in seconds.
CHAIN_BREAKER = BreakerPolicy(fail_max=2, reset_timeout=1.5)

#: The question asked while everything is healthy, and again once everything is down.
KNOWN_QUESTION = "what does a circuit breaker do?"


def chain_packages_missing() -> list[str]:
    """The packages of ``CHAIN_PACKAGES`` this Python cannot import."""
    missing = []
    for name in CHAIN_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


class ChainChapter:
    """A provider chain over three fault servers (real HTTP, the official openai client),
    walked through its providers failing one by one and coming back.

    Declared before the worker starts, so that the worker consumes the chain task's queue and
    its degraded queue; a deployment runs separate degraded workers beside the degraded
    provider (``-Q <queue>.degraded``).
    """

    def __init__(self, setup: Setup, tally: Tally, say: Callable[[str], None]) -> None:
        from resilience_tasks.testing.fault_server import FaultServer

        self.setup, self.tally, self.say = setup, tally, say
        self.servers = {name: FaultServer(name) for name, _, _ in CHAIN_PROVIDERS}
        self.queue = setup.queue("demo.chat")
        self.name = f"chat-{setup.run}"

    def start(self) -> None:
        """Start the fault servers (side by side: each is a process that takes a second to
        listen), then declare the chain and its task on their addresses."""
        from resilience_tasks.providers import openai_chat
        from resilience_tasks.testing.fault_server import MODEL

        with ThreadPoolExecutor(len(self.servers)) as pool:
            for started in [pool.submit(server.start) for server in self.servers.values()]:
                started.result()
        self.chat = self.setup.manager.providers(
            self.name,
            [
                openai_chat(
                    name,
                    model=MODEL,
                    base_url=self.servers[name].openai_base_url,
                    api_key="demo",
                    timeout=5.0,
                    cost=cost,
                    degraded=degraded,
                    breaker=CHAIN_BREAKER,
                )
                for name, cost, degraded in CHAIN_PROVIDERS
            ],
            resource_type=ResourceType.API_QUOTA,
            cache_ttl=600,
            queue_delay=1.0,
        )
        chat = self.chat

        @self.setup.manager.task(resource=self.name, queue=self.queue, bind=True)
        def answer(task: Any, question: str) -> dict[str, Any]:
            text = chat(question)
            record = served()  # what answered the chain call just made
            return {
                "text": text,
                **(record.as_dict() if record is not None else {}),
                "queue": (task.request.delivery_info or {}).get("routing_key"),
            }

        self.task = answer

    @property
    def addresses(self) -> str:
        return ", ".join(
            f"{name} {server.openai_base_url}" for name, server in self.servers.items()
        )

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            for server in self.servers.values():
                pool.submit(server.stop)

    def ask(self, question: str, step: str) -> Sent:
        return self.tally.settle(self.tally.send(self.task, question, label=f"{step}: {question}"))

    def walk(self) -> None:
        say, servers, manager = self.say, self.servers, self.setup.manager
        degraded = degraded_queue(self.queue)
        say(
            f"7. A provider chain, {self.name}: three OpenAI-compatible servers on loopback, "
            f"called with the"
        )
        say(
            "   official openai client, cheapest first: primary ($0.01 a call), backup ($0.02) "
            "and a free local"
        )
        say(
            f"   model whose answers are degraded. Degraded work moves to queue {degraded}; "
            f"this worker"
        )
        say(
            "   consumes it too (a deployment runs separate degraded workers). Who answered, "
            "and how:"
        )

        first = self.ask(KNOWN_QUESTION, "healthy")
        say(f"   healthy: {answered([first])}")

        servers["primary"].set("errors", rate=1.0, status=503)
        servers["primary"].reset()
        failover = [self.ask(f"question {n}", "primary 503") for n in range(5)]
        say(
            f"   primary answers 503: {answered(failover)}; requests that reached the primary: "
            f"{servers['primary'].stats().requests} (fail_max {CHAIN_BREAKER.fail_max})"
        )

        servers["backup"].set("down")
        moved = [self.ask(f"question {n}", "backup down") for n in range(5, 8)]
        there = sum(1 for entry in moved if value(entry, "queue") == degraded)
        say(
            f"   backup down too: {answered(moved)}; {there}/{len(moved)} run from {degraded} "
            f"under their own task ids"
        )

        servers["local"].set("down")
        stale = self.ask(KNOWN_QUESTION, "all down")
        waiting = self.tally.send(self.task, "a new question", label="all down: a new question")
        wait_until(lambda: waiting.result.state == DEFERRED, OUTCOME_TIMEOUT, interval=0.02)
        say(
            f"   everything down: the first question again: {answered([stale])}; a new one: "
            f"{waiting.result.state} (deferred depth {manager.deferred_count()})"
        )

        # The new question waits parked on the primary's breaker: its first trial serves it.
        recovered = time.monotonic()
        servers["primary"].set("healthy")
        self.tally.settle(waiting)
        took = time.monotonic() - recovered
        back = [self.ask(f"question {n}", "recovery") for n in range(8, 11)]
        say(
            f"   primary back: the waiting task resolves under its id in {took:.1f}s: "
            f"{answered([waiting])}; the next {len(back)}: {answered(back)}"
        )


def value(entry: Sent, field: str) -> Any:
    """A field of what a chain task returned (None for a task that did not return)."""
    return entry.value.get(field) if isinstance(entry.value, dict) else None


def answered(entries: Sequence[Sent]) -> str:
    """Who answered ``entries`` and how, from what each task returned:
    ``5/5 by backup (switch_provider)``, ``1/1 by primary (cache; stale, 3s old)``."""
    kinds: dict[str, int] = {}
    for entry in entries:
        if entry.outcome != RETURNED:
            kind = entry.outcome or "no outcome"
        else:
            flags = [name for name in ("degraded", "stale") if value(entry, name)]
            if value(entry, "stale"):
                flags.append(f"{value(entry, 'age') or 0:.0f}s old")
            how = str(value(entry, "protocol")) + (f"; {', '.join(flags)}" if flags else "")
            kind = f"by {value(entry, 'provider')} ({how})"
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; ".join(f"{count}/{len(entries)} {kind}" for kind, count in kinds.items())


# -- the tour --------------------------------------------------------------------------------------


def tour(setup: Setup, tally: Tally, say: Callable[[str], None]) -> None:
    """Walk through the outage, sending every task through ``tally``."""
    app, manager, queue = setup.app, setup.manager, setup.queue
    dependency = Dependency()
    breaker_policy = BreakerPolicy(fail_max=3, reset_timeout=2.0)
    retry_policy = RetryPolicy.exponential(
        max_attempts=3, initial=0.1, maximum=0.4, jitter=0.05, retry_on=(ServiceUnavailable,)
    )

    @manager.task(
        resource="demo.search-api",
        breaker=breaker_policy,
        retry=retry_policy,
        queue=queue("demo.search-api"),
    )
    def fetch(url: str, n: int) -> str:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return f"call {n}: {response.status}"
        except urllib.error.HTTPError as error:
            raise ServiceUnavailable(f"{error.code} from the dependency") from None

    @manager.task(
        resource="demo.archive",
        breaker=BreakerPolicy(reset_timeout=60.0),
        max_defer_age=1.5,
        queue=queue("demo.archive"),
    )
    def archive(item: str) -> str:
        raise ServiceUnavailable(f"the archive service is down; {item} not stored")

    started_at: list[float] = []

    @manager.task(resource="demo.llm", rate_limit=RateLimit("10/second"), queue=queue("demo.llm"))
    def complete(n: int) -> int:
        started_at.append(time.time())
        if n == 0 and len(started_at) == 1:
            raise RateLimitedError("429 from the provider", retry_after=1.0)
        return n

    breaker = manager.breaker("demo.search-api")
    with ExitStack() as stack:
        stack.callback(dependency.close)
        chapter = chain_chapter(setup, tally, say, stack)
        say(f"resilience-tasks demo ({setup.where})\ndependency: {dependency.url}")
        say(f"providers: {chapter.addresses}\n" if chapter is not None else "")
        with running(app, manager):
            say("1. Healthy dependency: five tasks through the breaker.")
            for n in range(5):
                entry = tally.settle(tally.send(fetch, dependency.url, n, label=f"call {n}"))
                say(f"   {entry.detail}")
            say(f"   breaker: {breaker.current_state}; dependency hits: {dependency.hits}\n")

            say(
                "2. The dependency goes down (503). A task retries inside the worker "
                "(waits of ~0.1 s and ~0.2 s);"
            )
            say(
                f"   every attempt is a failure to the breaker, which opens after "
                f"{breaker_policy.fail_max} of them, for the whole fleet."
            )
            dependency.healthy = False
            hits_before = dependency.hits
            entry = tally.settle(
                tally.send(
                    fetch, dependency.url, 100, label="call 100", policy_failure=ServiceUnavailable
                )
            )
            say(f"   task 100 {entry.outcome}: {entry.detail}")
            say(
                f"   breaker: {breaker.current_state}; dependency hits during the outage so far: "
                f"{dependency.hits - hits_before}\n"
            )

            say(
                "3. Twenty more tasks arrive during the outage. None calls the dependency and "
                "none holds a worker:"
            )
            say(
                "   they wait in the deferred store, and each half-open period sends exactly "
                "one trial."
            )
            hits_before_trials = dependency.hits
            sent_at = time.monotonic()
            waiting = [
                tally.send(fetch, dependency.url, 200 + n, label=f"call {200 + n}")
                for n in range(20)
            ]
            time.sleep(1.0)
            states = sorted({entry.result.state for entry in waiting})
            say(f"   states: {states}; deferred depth: {manager.deferred_count()}")
            time.sleep(2.5 * breaker_policy.reset_timeout)
            say(
                f"   {time.monotonic() - sent_at:.1f}s later (reset_timeout "
                f"{breaker_policy.reset_timeout:g}s): breaker {breaker.current_state}; trials "
                f"that reached the dead dependency: {dependency.hits - hits_before_trials}\n"
            )

            say(
                "4. The dependency recovers. The next trial succeeds, the breaker closes, and "
                "every caller's"
            )
            say("   AsyncResult resolves under its task id:")
            outage_hits = dependency.hits - hits_before
            dependency.healthy = True
            started = time.monotonic()
            for entry in waiting:
                tally.settle(entry)
            returned = sum(1 for entry in waiting if entry.outcome == RETURNED)
            say(
                f"   {returned}/{len(waiting)} returned in {time.monotonic() - started:.1f}s; "
                f"breaker: {breaker.current_state}\n"
            )

            say(
                "5. Work that cannot run is never dropped silently. An operator holds the "
                "archive's breaker open;"
            )
            say(
                "   a task that may wait 1.5 s at most (max_defer_age) ends in the dead-letter "
                "store with its reason,"
            )
            say("   and its caller gets DeadLetteredError.")
            manager.breaker("demo.archive").open()
            entry = tally.settle(tally.send(archive, "report.pdf", label="archive report.pdf"))
            say(f"   {entry.outcome}: {entry.detail}\n")

            say(
                "6. A rate limit holds for the whole fleet: 40 calls to an LLM limited to "
                "10/second. The first"
            )
            say(
                "   answers 429 with Retry-After: 1, which pauses every call to that resource "
                "for 1 s; none fails."
            )
            calls = [tally.send(complete, n, label=f"completion {n}") for n in range(40)]
            for entry in calls:
                tally.settle(entry)
            returned = sum(1 for entry in calls if entry.outcome == RETURNED)
            span = max(started_at) - min(started_at) if started_at else 0.0
            say(
                f"   {returned}/40 returned over {span:.1f}s (at 10/second, 40 calls need 3 s "
                f"after the first ten; the pause overlaps that wait)\n"
            )
            tally.settle_all()
            say(
                f"During the outage {1 + len(waiting)} tasks were sent and {outage_hits} calls "
                f"reached the dead dependency.\n"
            )
            if chapter is None:
                say(
                    f"7. Provider chains: skipped, they need {', '.join(chain_packages_missing())}"
                    f": pip install 'resilience-tasks[demo]'\n"
                )
            else:
                chapter.walk()
                tally.settle_all()
                say("")


def chain_chapter(
    setup: Setup, tally: Tally, say: Callable[[str], None], stack: ExitStack
) -> ChainChapter | None:
    """The provider-chain chapter, its fault servers started (and stopped with ``stack``), or
    None when its packages are missing."""
    if chain_packages_missing():
        return None
    chapter = ChainChapter(setup, tally, say)
    stack.callback(chapter.stop)
    chapter.start()
    return chapter


def account(tally: Tally, left_waiting: int) -> list[str]:
    """The closing lines, computed from the outcomes collected."""
    lost = tally.lost
    lines = [
        f"sent: {len(tally.sent)}",
        f"returned: {tally.count(RETURNED)}",
        *(f"  of them {how}: {tally.answered(how)}" for how in PROVENANCE if tally.answered(how)),
        f"failed as their retry policy says: {tally.count(FAILED_BY_POLICY)}",
        f"dead-lettered: {tally.count(DEAD_LETTERED)}",
        f"left waiting in the deferred store: {left_waiting}",
        f"lost: {len(lost)}",
    ]
    lines += [f"  lost {entry.label} ({entry.result.id}): {entry.detail}" for entry in lost[:10]]
    if len(lost) > 10:
        lines.append(f"  ... and {len(lost) - 10} more")
    return lines


# -- the command -----------------------------------------------------------------------------------


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


if __name__ == "__main__":
    sys.exit(main())
