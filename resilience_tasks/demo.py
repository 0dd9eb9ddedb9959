"""A five-minute tour of the resilience protocols, runnable on a bare machine.

``resilience-demo`` (or ``python -m resilience_tasks.demo``) starts a small HTTP dependency on
loopback, a Celery worker in this process and the deferred pump, then walks through an outage:
healthy calls, in-process retries, the breaker tripping, work deferred instead of failed or
blocking, half-open trials, recovery with every caller's ``AsyncResult`` resolving, and a task
that waited too long ending in the dead-letter store with its reason.

Where ``RESILIENCE_REDIS_URL`` is set the demo uses that Redis for broker, results and state.
Otherwise it runs embedded: Celery's in-memory broker and an in-process Redis emulation
(fakeredis, from the ``demo`` extra) for the state, so nothing needs to be installed or
running. The tests never use the emulation; they run against a real Redis and real workers.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import Celery

from resilience_tasks import (
    BreakerPolicy,
    DeadLetteredError,
    RateLimit,
    RateLimitedError,
    ResilienceManager,
    RetryPolicy,
)
from resilience_tasks.deferred import PumpThread
from resilience_tasks.state.connection import STATE_URL_ENV


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


def build_app() -> tuple[Celery, ResilienceManager, str]:
    url = os.environ.get(STATE_URL_ENV)
    if url:
        app = Celery("resilience-demo", broker=url, backend=url)
        manager = ResilienceManager("demo", app=app, key_prefix="rt-demo", pump_interval=0.2)
        return app, manager, f"Redis at {url}"
    try:
        import fakeredis
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise SystemExit(
            "the embedded demo needs the demo extra: pip install 'resilience-tasks[demo]' "
            f"(or set {STATE_URL_ENV} to a running Redis)"
        ) from None
    app = Celery("resilience-demo", broker="memory://", backend="cache+memory://")
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    manager = ResilienceManager(
        "demo", app=app, redis_client=fakeredis.FakeRedis(), pump_interval=0.2
    )
    return app, manager, "embedded: in-memory broker, in-process Redis emulation"


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


def say(text: str) -> None:
    print(text, flush=True)


def main() -> None:
    app, manager, where = build_app()
    dependency = Dependency()
    breaker_policy = BreakerPolicy(fail_max=3, reset_timeout=2.0)

    @manager.task(
        resource="demo.search-api",
        breaker=breaker_policy,
        retry=RetryPolicy.exponential(
            max_attempts=3, initial=0.1, maximum=0.4, jitter=0.05, retry_on=(ServiceUnavailable,)
        ),
    )
    def fetch(url: str, n: int) -> str:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return f"call {n}: {response.status}"
        except urllib.error.HTTPError as error:
            raise ServiceUnavailable(f"{error.code} from the dependency") from None

    @manager.task(
        resource="demo.archive", breaker=BreakerPolicy(reset_timeout=0.5), max_defer_age=1.5
    )
    def archive(item: str) -> str:
        raise ServiceUnavailable(f"the archive service is down; {item} not stored")

    started_at: list[float] = []

    @manager.task(resource="demo.llm", rate_limit=RateLimit("10/second"))
    def complete(n: int) -> int:
        started_at.append(time.time())
        if n == 0 and len(started_at) == 1:
            raise RateLimitedError("429 from the provider", retry_after=1.0)
        return n

    breaker = manager.breaker("demo.search-api")
    breaker.close()
    manager.breaker("demo.archive").close()
    manager.limiter.clear(RateLimit("10/second"), ("demo.llm",))
    say(f"resilience-tasks demo ({where})\ndependency: {dependency.url}\n")
    with running(app, manager):
        say("1. Healthy dependency: five tasks through the breaker.")
        results = [fetch.delay(dependency.url, n) for n in range(5)]
        for result in results:
            say(f"   {result.get(timeout=20)}")
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
        try:
            fetch.delay(dependency.url, 100).get(timeout=20)
        except ServiceUnavailable as error:
            say(f"   task 100 failed after its 3 attempts: {error}")
        say(
            f"   breaker: {breaker.current_state}; dependency hits during the outage so far: "
            f"{dependency.hits - hits_before}\n"
        )

        say(
            "3. Twenty more tasks arrive during the outage. None calls the dependency and none "
            "holds a worker:"
        )
        say(
            "   they wait in the deferred store, and each half-open period sends exactly one trial."
        )
        waiting = [fetch.delay(dependency.url, 200 + n) for n in range(20)]
        time.sleep(1.0)
        states = sorted({result.state for result in waiting})
        say(f"   states: {states}; deferred depth: {manager.deferred.depth()}")
        time.sleep(4.5)
        say(
            f"   after two reset timeouts: breaker {breaker.current_state}, dependency hits "
            f"during the outage: {dependency.hits - hits_before}\n"
        )

        say(
            "4. The dependency recovers. The next trial succeeds, the breaker closes, and "
            "every caller's"
        )
        say("   AsyncResult resolves:")
        dependency.healthy = True
        started = time.monotonic()
        done = [result.get(timeout=60) for result in waiting]
        say(
            f"   {len(done)}/{len(waiting)} completed in {time.monotonic() - started:.1f}s "
            f"(same task ids); breaker: {breaker.current_state}\n"
        )

        say(
            "5. Work that cannot run is never dropped silently: a task whose dependency stays "
            "down past"
        )
        say(
            "   max_defer_age (1.5 s) ends in the dead-letter store with its reason, and its "
            "caller gets DeadLetteredError."
        )
        manager.breaker("demo.archive").open()
        stuck = archive.delay("report.pdf")
        try:
            stuck.get(timeout=30)
        except DeadLetteredError as error:
            say(f"   caller sees: DeadLetteredError: {error}")
        entry = manager.dead_letters.get(stuck.id)
        if entry is not None:
            say(f"   dead-letter store: {entry.task_id} -> {entry.reason}\n")

        say(
            "6. A rate limit holds for the whole fleet: 40 calls to an LLM limited to "
            "10/second. The first"
        )
        say(
            "   answers 429 with Retry-After: 1, which pauses every call to that resource for "
            "1 s; none fails."
        )
        calls = [complete.delay(n) for n in range(40)]
        finished = [call.get(timeout=60) for call in calls]
        span = max(started_at) - min(started_at)
        say(
            f"   {len(finished)}/40 completed over {span:.1f}s (at 10/second, 40 calls need 3 s "
            f"after the first ten; the pause overlaps that wait)\n"
        )

        outage_hits = dependency.hits - hits_before - len(waiting)
        say(
            f"Summary: {1 + len(waiting)} tasks submitted during the outage; "
            f"{outage_hits} calls reached the dead dependency; "
            f"{len(done)} deferred tasks completed after recovery; nothing was lost."
        )
    dependency.close()


if __name__ == "__main__":
    main()
