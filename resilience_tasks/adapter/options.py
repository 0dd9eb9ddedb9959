"""Which Celery task options ``manager.task`` passes through, and which it refuses.

Celery turns any keyword of ``@app.task`` into a class attribute, so ``max_retires=3`` passes
silently. We accept the options Celery documents for tasks and refuse everything else by name.
Options that would undo the guarantees (pickle, Celery's own retry loop, per-worker rate
limits) are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resilience_tasks.errors import ConfigurationError

PASS_THROUGH = frozenset(
    {
        "name",
        "bind",
        "queue",
        "routing_key",
        "exchange",
        "priority",
        "acks_late",
        "acks_on_failure_or_timeout",
        "reject_on_worker_lost",
        "time_limit",
        "soft_time_limit",
        "ignore_result",
        "store_errors_even_if_ignored",
        "track_started",
        "expires",
        "typing",
        "shared",
        "throws",
        "trail",
        "send_events",
        "pydantic",
        "autoregister",
        "compression",
        "resultrepr_maxsize",
        "lazy",
        "description",
        "filter",
    }
)

REFUSED = {
    "serializer": "only JSON is accepted: pickle lets a message run arbitrary code",
    "autoretry_for": "use retry=RetryPolicy(retry_on=...); Celery's retry loop re-publishes "
    "with a countdown that the Redis transport may run several times",
    "retry_backoff": "use retry=RetryPolicy.exponential(...)",
    "retry_kwargs": "use retry=RetryPolicy(...)",
    "retry_jitter": "use retry=RetryPolicy(jitter=...)",
    "retry_backoff_max": "use retry=RetryPolicy(maximum=...)",
    "max_retries": "use retry=RetryPolicy(max_attempts=...)",
    "default_retry_delay": "use retry=RetryPolicy(initial=...)",
    "rate_limit": "Celery's rate_limit is per worker, not per fleet",
    "base": "resilient tasks use their own base class",
}


def check_task_options(task_name: str, options: Mapping[str, Any]) -> None:
    """Raise ``ConfigurationError`` naming every keyword that is refused or unknown."""
    problems = []
    for key in sorted(options):
        if key in PASS_THROUGH:
            continue
        if key in REFUSED:
            problems.append(f"{key!r} is not accepted ({REFUSED[key]})")
        else:
            problems.append(f"{key!r} is not a task option")
    if problems:
        raise ConfigurationError(f"manager.task({task_name}): " + "; ".join(problems))
