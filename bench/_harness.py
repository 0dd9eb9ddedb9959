"""The benchmarks' glue to ``resilience_tasks.testing``: import ``_apps`` for one database, and
a supervisor whose workers import it too."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from resilience_tasks.testing import Supervisor
from resilience_tasks.testing.bench import BenchDatabase

BENCH_DIR = Path(__file__).resolve().parent


def load(db: BenchDatabase, prefix: str, module: str = "_apps", **env: str) -> ModuleType:
    """Configure (through the environment, which workers inherit) and import ``module``."""
    os.environ.update(BENCH_REDIS_URL=db.url, BENCH_PREFIX=prefix, **env)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_DIR), str(BENCH_DIR.parent), os.environ.get("PYTHONPATH")) if p
    )
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(module)


def supervisor(app: str = "_apps", python_args: Sequence[str] = ()) -> Supervisor:
    """A supervisor of ``celery -A <app>`` processes run from ``bench/`` (configured through
    the environment by ``load``)."""
    return Supervisor(app, cwd=BENCH_DIR, python_args=python_args)
