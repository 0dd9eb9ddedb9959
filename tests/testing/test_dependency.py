"""The HTTP dependency answers by its current mode and counts every request."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from resilience_tasks.testing import HTTPDependency, Mode


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_modes_switch_while_it_runs_and_requests_are_counted() -> None:
    with HTTPDependency() as dependency:
        begin = time.monotonic()
        assert status(dependency.url) == 200
        dependency.mode = Mode.FAILING
        assert status(dependency.url) == 503
        dependency.mode = Mode.THROTTLED
        try:
            urllib.request.urlopen(dependency.url, timeout=60)
        except urllib.error.HTTPError as error:
            assert error.code == 429 and error.headers["Retry-After"] == "1"
        assert dependency.hits(begin) == 3
        assert sum(dependency.per_second(begin, 600)) == 3


def test_a_hanging_dependency_holds_requests_until_its_mode_changes() -> None:
    with HTTPDependency(Mode.HANGING, hang_seconds=600) as dependency:
        answers: list[int] = []
        caller = threading.Thread(target=lambda: answers.append(status(dependency.url)))
        caller.start()
        while dependency.hits() == 0:
            time.sleep(0.01)
        assert not answers  # received, not answered
        dependency.mode = Mode.HEALTHY
        caller.join(60)
        assert answers == [503]  # a request that hung fails, as a timed-out call would
