"""``ResilienceManager``: what a team constructs once, and the ``task`` decorator it offers.

Constructing it installs into the Celery app everything the protocols need (settings, queues,
the deferred pump and its beat entry, start-up checks). ``manager.task`` declares a resilient
task: it validates every policy and option there and then, builds the task's guard, and
registers a Celery task whose base class runs the guard.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.utils.imports import gen_task_name

from resilience_tasks.adapter import install, poison
from resilience_tasks.adapter.options import check_task_options
from resilience_tasks.adapter.task import ResilientTask, TaskRuntime, publish
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.deferred import (
    DeadLetterStore,
    DeferredStore,
    Pump,
    PumpReport,
)
from resilience_tasks.errors import ConfigurationError
from resilience_tasks.guard import GuardSettings, TaskGuard
from resilience_tasks.idempotency import IdempotencyStore
from resilience_tasks.policies import BreakerPolicy, RetryPolicy
from resilience_tasks.policies import _validate as check
from resilience_tasks.quota.budget import Budget, OnExceed, SpendLedger
from resilience_tasks.quota.gates import BudgetGate, CooldownGate, RateLimitGate
from resilience_tasks.quota.provider import QuotaParser, QuotaStore
from resilience_tasks.quota.rate_limit import FleetRateLimiter, RateLimit
from resilience_tasks.quota.report import QuotaReporter
from resilience_tasks.resources import Resources, ResourceSpec
from resilience_tasks.state import connection
from resilience_tasks.state.keys import KeySpace

#: Celery's control exceptions: how a task steers its own fate, never a dependency failure.
CELERY_CONTROL = (Retry, Ignore, Reject, SoftTimeLimitExceeded)

#: Prefix of each team's control queue (``resilience.control.<team>``): a team's pump task
#: is known only to its own workers, so teams sharing a broker must not share this queue.
CONTROL_QUEUE = "resilience.control"


class ResilienceManager:
    """One team's resilience layer on one Celery app.

    State lives in Redis: ``redis_url`` if given, else ``RESILIENCE_REDIS_URL``, else the
    app's broker URL. ``visibility_timeout`` should be 2-3x the p99 runtime of the slowest
    task: a task still running after it is delivered again. Work deferred for longer than
    ``max_defer_age`` seconds, or delivered more than ``max_deliveries`` times without
    finishing, goes to the dead-letter store. Deferred work is brought back by the pump: beat
    sends the pump task every ``pump_interval`` seconds, and each worker also runs it every
    ``worker_pump_interval`` seconds (None: beat only).
    """

    def __init__(
        self,
        team: str,
        app: Celery,
        *,
        redis_url: str | None = None,
        redis_client: redis.Redis | None = None,
        key_prefix: str = "rt",
        visibility_timeout: float = 900.0,
        max_defer_age: float = 86_400.0,
        max_deliveries: int = 5,
        pump_interval: float = 1.0,
        worker_pump_interval: float | None = 1.0,
        control_queue: str | None = None,
    ) -> None:
        if not isinstance(team, str) or not team or ":" in team:
            raise ConfigurationError(f"team must be a non-empty name without ':', got {team!r}")
        check.positive_seconds("ResilienceManager", "visibility_timeout", visibility_timeout)
        check.positive_seconds("ResilienceManager", "max_defer_age", max_defer_age)
        check.positive_int("ResilienceManager", "max_deliveries", max_deliveries)
        check.positive_seconds("ResilienceManager", "pump_interval", pump_interval)
        if worker_pump_interval is not None:
            check.positive_seconds(
                "ResilienceManager", "worker_pump_interval", worker_pump_interval
            )
        self.team = team
        self.app = app
        self.keys = KeySpace(key_prefix)
        self.max_defer_age = float(max_defer_age)
        self.visibility_timeout = float(visibility_timeout)
        self.max_deliveries = max_deliveries
        if redis_client is not None:
            self.url = redis_url or "(injected client)"
            self.redis = redis_client
        else:
            self.url = redis_url or connection.state_url(app.conf.broker_url)
            self.redis = connection.connect(self.url)
        self.deferred = DeferredStore(self.redis, team, self.keys)
        self.dead_letters = DeadLetterStore(self.redis, team, self.keys)
        self.idempotency = IdempotencyStore(self.redis, team, self.keys)
        self._breakers: dict[str, FleetBreaker] = {}
        self._explicit_breakers: set[str] = set()
        self.resources = Resources()
        self.limiter = FleetRateLimiter(self.redis, self.keys)
        self.ledger = SpendLedger(self.redis, self.keys)
        self.quotas = QuotaStore(self.redis, self.keys)
        self._pump = Pump(self.deferred, self.dead_letters, partial(publish, app))
        self._routes: dict[str, dict[str, str]] = {}

        install.configure(app, self.visibility_timeout)
        install.add_router(app, self._routes)
        install.check_on_start(app, self.check)
        poison.install(app, self.dead_letters)
        self.pump_task = self._install_pump(
            control_queue or f"{CONTROL_QUEUE}.{team}", pump_interval
        )
        if worker_pump_interval is not None:
            install.pump_in_workers(
                app, f"resilience_tasks.worker_pump.{team}", self.pump, worker_pump_interval
            )

    # -- declaring tasks -----------------------------------------------------------------------

    def task(
        self,
        *,
        resource: str,
        breaker: BreakerPolicy | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
        interactive: bool = False,
        max_defer_age: float | None = None,
        **celery_options: Any,
    ) -> Callable[[Callable[..., Any]], ResilientTask]:
        """Declare a resilient task guarded by ``resource``'s fleet breaker and a retry policy.

        Other Celery task options pass through (``acks_late``, ``time_limit``, ``queue``...);
        unknown ones raise ``ConfigurationError`` naming them. The task's queue defaults to
        the resource's name.
        """
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, got {retry!r}")
        if max_defer_age is not None:
            check.positive_seconds("task", "max_defer_age", max_defer_age)
        if not isinstance(interactive, bool):
            raise ConfigurationError(f"interactive must be True or False, got {interactive!r}")
        self.resource(resource, breaker=breaker, rate_limit=rate_limit)

        def decorate(func: Callable[..., Any]) -> ResilientTask:
            name = celery_options.get("name") or gen_task_name(
                self.app, func.__name__, func.__module__
            )
            check_task_options(name, celery_options)
            runtime = TaskRuntime(
                team=self.team,
                resource=resource,
                guard=self._guard(resource, retry),
                deferred=self.deferred,
                dead_letters=self.dead_letters,
                keys=self.keys,
                max_defer_age=float(max_defer_age or self.max_defer_age),
                interactive=interactive,
            )
            # Not shared: Celery would add a shared task to every app finalized later, with
            # this manager's runtime bound to it.
            options = {"shared": False, **celery_options}
            options.pop("name", None)
            self._route(name, options.pop("queue", resource))
            task: ResilientTask = self.app.task(
                base=ResilientTask, runtime=runtime, name=name, **options
            )(func)
            return task

        return decorate

    def _route(self, task_name: str, queue: str) -> None:
        self._routes[task_name] = {"queue": queue}
        install.add_queue(self.app, queue)

    # -- declaring resources and budgets -------------------------------------------------------

    def resource(
        self,
        name: str,
        *,
        breaker: BreakerPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
        prices: dict[str, float] | None = None,
        rate_limit_errors: tuple[type[BaseException], ...] | None = None,
        quota_parser: QuotaParser | None = None,
    ) -> ResourceSpec:
        """Declare what is known of a resource, in one place.

        ``rate_limit`` holds for the whole fleet (``"10/second;500/minute"``, or a
        ``RateLimit`` keyed per team or API key); ``prices`` are dollars per unit reported with
        ``report_usage``; ``rate_limit_errors`` are a client library's quota exceptions (read
        like a 429); ``quota_parser`` reads quota headers of a shape we do not know.
        """
        if breaker is not None and not isinstance(breaker, BreakerPolicy):
            raise ConfigurationError(f"breaker must be a BreakerPolicy, got {breaker!r}")
        spec = self.resources.declare(
            name, rate_limit=rate_limit, prices=prices, rate_limit_errors=rate_limit_errors
        )
        if breaker is not None or name not in self._breakers:
            self._declare_breaker(name, breaker)
        if rate_limit_errors:
            self._breakers[name].add_excluded_exceptions(*rate_limit_errors)
        if quota_parser is not None:
            if not callable(quota_parser):
                raise ConfigurationError(f"quota_parser must be callable, got {quota_parser!r}")
            self.quotas.use_parser(name, quota_parser)
        return spec

    def budget(
        self, spec: str, *, resource: str | None = None, on_exceed: OnExceed = "defer"
    ) -> Budget:
        """Cap this team's spend per UTC day (on one resource if named); checked before calls."""
        budget = Budget(spec, on_exceed)
        self.resources.set_budget(budget, resource)
        return budget

    def breaker(self, resource: str) -> FleetBreaker:
        """The fleet breaker of a declared resource."""
        if resource not in self._breakers:
            raise ConfigurationError(
                f"unknown resource {resource!r}; known: {sorted(self._breakers)}"
            )
        return self._breakers[resource]

    def _declare_breaker(self, resource: str, policy: BreakerPolicy | None) -> None:
        """One policy per resource; the default holds until a policy is declared."""
        existing = self._breakers.get(resource)
        if existing is not None and resource in self._explicit_breakers:
            if policy != existing.policy:
                raise ConfigurationError(
                    f"resource {resource!r} already has breaker {existing.policy.describe()}; "
                    f"another declaration says {policy.describe() if policy else None}: "
                    f"declare one policy per resource"
                )
            return
        if policy is not None:
            self._explicit_breakers.add(resource)
        self._breakers[resource] = FleetBreaker(
            resource,
            policy or BreakerPolicy(),
            RedisFleetStorage(self.redis, resource, self.keys),
            not_failures=(*CELERY_CONTROL, *self.resources.get(resource).rate_limit_errors),
        )

    def _guard(self, resource: str, retry: RetryPolicy | None) -> TaskGuard:
        delivery_ttl = int(max(3600.0, self.visibility_timeout * (self.max_deliveries + 2)))
        spec = self.resources.get(resource)
        gates = (
            CooldownGate(resource, self.keys),
            BudgetGate(self.team, resource, self.keys, lambda: self.resources.budgets(resource)),
            RateLimitGate(
                self.team, resource, self.keys, self.limiter, lambda: spec.rate_limit, self.redis
            ),
        )
        reporter = QuotaReporter(
            self.team,
            resource,
            self.redis,
            self.keys,
            self.ledger,
            self.quotas,
            pricing=lambda: spec.pricing,
            rate_limit_errors=lambda: spec.rate_limit_errors,
        )
        return TaskGuard(
            breaker=lambda: self._breakers[resource],
            retry=retry or RetryPolicy.none(),
            settings=GuardSettings(max_deliveries=self.max_deliveries, delivery_ttl=delivery_ttl),
            gates=gates,
            reporter=reporter,
            not_retryable=CELERY_CONTROL,
        )

    # -- the deferred pump ---------------------------------------------------------------------

    def pump(self, max_seconds: float = 0.9) -> PumpReport:
        """Publish every due deferred task (what the beat-scheduled pump task runs)."""
        return self._pump.drain(max_seconds)

    def _install_pump(self, queue: str, interval: float) -> Any:
        name = f"resilience_tasks.pump.{self.team}"

        def pump_deferred() -> dict[str, int]:
            return vars(self.pump(max_seconds=max(0.1, interval * 0.9)))

        task = self.app.task(name=name, ignore_result=True, acks_late=False, shared=False)(
            pump_deferred
        )
        self._route(name, queue)
        install.add_beat_entry(
            self.app,
            f"resilience-pump-{self.team}",
            {
                "task": name,
                "schedule": interval,
                "options": {"queue": queue, "expires": max(5.0, interval * 5)},
            },
        )
        return task

    # -- operations ----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ``StateUnavailableError`` with one clear line if the state Redis is unreachable."""
        connection.ensure_reachable(self.redis, self.url)
