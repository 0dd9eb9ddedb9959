"""The outage tour: an HTTP dependency on loopback failing and recovering, chapter by chapter."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from resilience_tasks import BreakerPolicy, RateLimit, RateLimitedError, RetryPolicy
from resilience_tasks.demo.chains import chain_chapter, chain_packages_missing
from resilience_tasks.demo.setup import Setup, running
from resilience_tasks.demo.tally import RETURNED, Tally


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
