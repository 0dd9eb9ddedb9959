"""A real ``celery worker`` (prefork, 2 processes) on the app of ``tests/apps/poison_app.py``,
shared by a test module: bad messages are pushed straight into its Redis queue."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import redis

from resilience_tasks.deferred import DeadLetter, DeadLetterStore
from resilience_tasks.state.keys import KeySpace
from resilience_tasks.testing import CeleryProcess, Supervisor
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class PoisonWorker:
    """The worker process, the app module it runs, and where its messages go."""

    process: CeleryProcess
    module: ModuleType
    queue: str
    prefix: str

    dead_letters: DeadLetterStore

    @property
    def ran_key(self) -> str:
        return str(self.module.RAN_KEY)

    def records_containing(self, marker: str) -> list[DeadLetter]:
        """Dead letters whose recorded message mentions ``marker`` (in its body or headers)."""
        return [
            entry for entry in self.dead_letters.list(limit=100_000) if marker in str(entry.message)
        ]


@pytest.fixture(scope="module")
def poison_worker(redis_client: redis.Redis) -> Iterator[PoisonWorker]:
    unique = uuid.uuid4().hex[:8]
    prefix = f"rt-test-{unique}"
    env = {
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_PREFIX": prefix,
        "TEST_TEAM": f"team-{unique}",
        "TEST_QUEUE": f"poison-{unique}",
        "PYTHONPATH": str(ROOT),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    sys.modules.pop("tests.apps.poison_app", None)
    module = importlib.import_module("tests.apps.poison_app")
    try:
        with Supervisor("tests.apps.poison_app", env=env, cwd=ROOT) as supervisor:
            process = supervisor.worker(
                f"poison-{unique}", queues=[env["TEST_QUEUE"]], concurrency=2, ready=module.app
            )
            store = DeadLetterStore(redis_client, env["TEST_TEAM"], KeySpace(prefix))
            yield PoisonWorker(process, module, env["TEST_QUEUE"], prefix, store)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.modules.pop("tests.apps.poison_app", None)
        keys = list(redis_client.scan_iter(f"{prefix}:*", count=1000))
        keys += list(redis_client.scan_iter(f"*{prefix}*", count=1000))
        keys += [env["TEST_QUEUE"]]
        redis_client.delete(*set(keys))
