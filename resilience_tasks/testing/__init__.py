"""Real processes for tests and benchmarks of applications built on resilience-tasks.

Like ``celery.contrib.testing``, nothing here fakes anything: ``Supervisor`` runs real
``celery worker`` and ``celery beat`` subprocesses, ``HTTPDependency`` is a real HTTP server
on loopback, ``RedisServer`` a private ``redis-server`` that can be stopped and restarted
mid-run, and ``CommandMonitor`` reads what a Redis server really executed (``MONITOR``).
``FaultServer`` is a provider that fails on demand: a real OpenAI-compatible chat API and MCP
server in a subprocess, whose behaviour is switched while it runs.
``resilience_tasks.testing.bench`` adds the command line and tables the benchmarks share.
"""

from resilience_tasks.testing.dependency import HTTPDependency, Mode
from resilience_tasks.testing.fault_server import FaultServer, FaultStats
from resilience_tasks.testing.monitor import CommandMonitor, MonitorSummary
from resilience_tasks.testing.polling import wait_until
from resilience_tasks.testing.processes import CeleryProcess, Supervisor, kill_group
from resilience_tasks.testing.redis_server import RedisServer, free_port

__all__ = [
    "CeleryProcess",
    "CommandMonitor",
    "FaultServer",
    "FaultStats",
    "HTTPDependency",
    "Mode",
    "MonitorSummary",
    "RedisServer",
    "Supervisor",
    "free_port",
    "kill_group",
    "wait_until",
]
