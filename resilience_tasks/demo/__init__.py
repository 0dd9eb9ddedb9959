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

from resilience_tasks.demo.cli import main

__all__ = ["main"]
