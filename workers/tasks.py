"""Example resilient tasks, one per kind of dependency the presets cover.

They are real calls (HTTP with the standard library), so a deployment can be smoke-tested by
pointing them at its own endpoints; teams declare their own tasks the same way.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from resilience_tasks import BreakerPolicy, RetryPolicy
from workers.app import manager

HTTP_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError)


class ClientError(Exception):
    """A 4xx answer: the request's fault, not the dependency's; never trips the breaker."""


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        if 400 <= error.code < 500 and error.code != 429:
            raise ClientError(f"{error.code} from {url}") from None
        raise


@manager.task(
    resource="http.example",
    breaker=BreakerPolicy(fail_max=5, reset_timeout=30.0, exclude=(ClientError,)),
    retry=RetryPolicy.http_api(retry_on=HTTP_ERRORS),
    soft_time_limit=30,
    time_limit=40,
)
def fetch_status(url: str) -> int:
    """GET ``url`` and return the HTTP status."""
    status, _ = _get(url, timeout=10.0)
    return status


@manager.task(
    resource="http.json",
    breaker=BreakerPolicy(
        fail_max=5, reset_timeout=30.0, failure_rate=0.5, min_calls=20, exclude=(ClientError,)
    ),
    retry=RetryPolicy.http_api(retry_on=HTTP_ERRORS),
    soft_time_limit=30,
    time_limit=40,
)
def fetch_json(url: str) -> Any:
    """GET ``url`` and return its JSON body."""
    _, body = _get(url, timeout=10.0)
    return json.loads(body)
