"""``ResilienceManager``: what a team constructs once, and the ``task`` decorator it offers.

Constructing it installs into the Celery app everything the protocols need (settings, queues,
the deferred pump and its beat entry, start-up checks). ``manager.task`` declares a resilient
task: it validates every policy and option there and then, builds the task's guard, and
registers a Celery task whose base class runs the guard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from celery import Celery
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.utils.imports import gen_task_name

from resilience_tasks import defaults
from resilience_tasks.adapter import install, poison
from resilience_tasks.adapter.options import check_task_options
from resilience_tasks.adapter.task import (
    PUBLISH_TRANSIENT_ERRORS,
    ResilientTask,
    TaskRuntime,
    degraded_queue,
    mark_dead_lettered,
    note_worker_events,
    publish,
)
from resilience_tasks.admission import Admitter, Deliveries
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.deferred import (
    DeadLetter,
    DeadLetterStore,
    DeferredMessage,
    DeferredStore,
    MalformedMessageError,
    ParkingSpot,
    Pump,
    PumpReport,
    PumpSettings,
)
from resilience_tasks.deferred.dead_letter import DEFAULT_MAX_AGE, DEFAULT_MAX_ENTRIES
from resilience_tasks.errors import STATE_ERRORS, ConfigurationError
from resilience_tasks.fallback import protocols as fallback_protocols
from resilience_tasks.fallback.cache import ResultCache
from resilience_tasks.fallback.chain import CALLS, ProviderChain
from resilience_tasks.fallback.concurrency import FleetConcurrencyLimit
from resilience_tasks.fallback.policy import Concurrency, RetryBudget
from resilience_tasks.fallback.provenance import ProvenanceStore
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.fallback.resource_type import ResourceType
from resilience_tasks.fallback.retry_budget import FleetRetryBudget
from resilience_tasks.fallback.scope import Served
from resilience_tasks.guard import GuardSettings, TaskGuard
from resilience_tasks.idempotency import IdempotencyStore
from resilience_tasks.policies import BreakerPolicy, RetryPolicy
from resilience_tasks.policies import _validate as check
from resilience_tasks.quota.gates import BudgetGate, CooldownGate, RateLimitGate
from resilience_tasks.quota.policy import Budget, OnExceed, RateLimit
from resilience_tasks.quota.provider import QuotaParser
from resilience_tasks.quota.report import QuotaReporter
from resilience_tasks.quota.storage import CooldownStore, FleetRateLimiter, QuotaStore, SpendLedger
from resilience_tasks.resources import Resources, ResourceSpec, check_name
from resilience_tasks.state import connection
from resilience_tasks.state.keys import KeySpace

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Seconds a team's declared breaker policy stays on record for other teams to check against
#: (renewed at every start): an abandoned declaration ages out.
POLICY_RECORD_TTL = 7 * 86_400

#: Celery's control exceptions: how a task steers its own fate, never a dependency failure.
CELERY_CONTROL = (Retry, Ignore, Reject, SoftTimeLimitExceeded)

#: Prefix of each team's control queue (``resilience.control.<team>``): a team's pump task
#: is known only to its own workers, so teams sharing a broker must not share this queue.
CONTROL_QUEUE = "resilience.control"


#: Why a dead letter cannot be replayed now: it holds no task message, or the broker is away.
_REPLAY_ERRORS: tuple[type[BaseException], ...] = (
    MalformedMessageError,
    *PUBLISH_TRANSIENT_ERRORS,
)


#: A chain's retries on one provider, unless it names its own: one quick retry, within the
#: provider's fleet retry budget; then the next provider.
CHAIN_RETRY = RetryPolicy(max_attempts=2, initial=0.2, maximum=1.0, in_process_budget=1.0)


@dataclass(frozen=True)
class _TaskDeclaration:
    """What ``manager.task`` was told about one task, validated."""

    resource: str
    retry: RetryPolicy
    interactive: bool
    max_defer_age: float
    queue: str = ""


class ResilienceManager:
    """One team's resilience layer on one Celery app.

    State lives in Redis: ``redis_url`` if given, else ``RESILIENCE_REDIS_URL``, else the
    app's broker URL. ``visibility_timeout`` should be 2-3x the p99 runtime of the slowest
    task: a task still running after it is delivered again. Work deferred for longer than
    ``max_defer_age`` seconds, or delivered more than ``max_deliveries`` times without
    finishing, goes to the dead-letter store. Deferred work is brought back by the pump: beat
    sends the pump task every ``pump_interval`` seconds, and each worker also runs it every
    ``worker_pump_interval`` seconds (None: beat only). A piece of work may fail
    ``free_trials`` half-open trials before they are charged as attempts. Dead letters are kept
    ``dead_letter_max_age`` seconds, at most ``dead_letter_max_entries`` per team (None: no
    limit).
    """

    def __init__(
        self,
        team: str,
        app: Celery,
        *,
        redis_url: str | None = None,
        redis_client: connection.StateClient | None = None,
        key_prefix: str = "rt",
        visibility_timeout: float = 900.0,
        max_defer_age: float = 86_400.0,
        max_deliveries: int = 5,
        pump_interval: float = 1.0,
        worker_pump_interval: float | None = 1.0,
        control_queue: str | None = None,
        free_trials: int = 1,
        dead_letter_max_age: float | None = DEFAULT_MAX_AGE,
        dead_letter_max_entries: int | None = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if not isinstance(team, str) or not team or ":" in team:
            raise ConfigurationError(f"team must be a non-empty name without ':', got {team!r}")
        check.positive_seconds("ResilienceManager", "visibility_timeout", visibility_timeout)
        check.positive_seconds("ResilienceManager", "max_defer_age", max_defer_age)
        check.positive_int("ResilienceManager", "max_deliveries", max_deliveries)
        check.positive_seconds("ResilienceManager", "pump_interval", pump_interval)
        check.positive_int("ResilienceManager", "free_trials", free_trials, minimum=0)
        if worker_pump_interval is not None:
            check.positive_seconds(
                "ResilienceManager", "worker_pump_interval", worker_pump_interval
            )
        self.team = team
        self.app = app
        self._keys = KeySpace(key_prefix)
        self.max_defer_age = float(max_defer_age)
        self.visibility_timeout = float(visibility_timeout)
        self.max_deliveries = max_deliveries
        if redis_client is not None:
            self._url: connection.StateURL | str = redis_url or "(injected client)"
            self._redis: connection.StateClient = redis_client
        else:
            self._url = connection.resolve(redis_url, app.conf.broker_url)
            self._redis = connection.connect(self._url)
        self._deferred = DeferredStore(self._redis, team, self._keys)
        self._dead_letters = DeadLetterStore(
            self._redis,
            team,
            self._keys,
            max_age=dead_letter_max_age,
            max_entries=dead_letter_max_entries,
        )
        self._idempotency = IdempotencyStore(self._redis, team, self._keys)
        self._tasks: dict[str, _TaskDeclaration] = {}
        self._policies: dict[str, BreakerPolicy | None] = {}
        self._breakers: dict[str, FleetBreaker] = {}
        self._guard_settings = GuardSettings(free_trials=free_trials)
        self._deliveries = Deliveries(
            self._keys,
            team,
            max_deliveries=max_deliveries,
            ttl=int(max(3600.0, visibility_timeout * (max_deliveries + 2))),
        )
        self._resources = Resources()
        self._limiter = FleetRateLimiter(self._redis, team, self._keys)
        self._ledger = SpendLedger(self._redis, team, self._keys)
        self._quotas = QuotaStore(self._redis, self._keys)
        self._cooldowns = CooldownStore(self._redis, self._keys)
        self._pump = Pump(
            self._deferred,
            self._dead_letters,
            partial(publish, app),
            parking=self._parking_spots,
            settings=PumpSettings(
                publish_lease=self.visibility_timeout,
                transient_errors=PUBLISH_TRANSIENT_ERRORS,
            ),
            mark_failed=partial(mark_dead_lettered, app),
        )
        self._routes: dict[str, dict[str, str]] = {}
        self._chains: dict[str, ProviderChain] = {}
        self._concurrency: dict[str, FleetConcurrencyLimit] = {}
        self._retry_budgets: dict[str, FleetRetryBudget] = {}
        self._provenance = ProvenanceStore(
            self._redis,
            self._keys,
            team,
            ttl=float(app.conf.result_expires.total_seconds())
            if hasattr(app.conf.result_expires, "total_seconds")
            else float(app.conf.result_expires or 86_400),
        )

        defaults.offer_default(self)
        install.configure(app, self.visibility_timeout)
        install.add_router(app, self._routes)
        install.check_on_start(app, self.check)
        install.warn_on_ready(app, self._degraded_gaps)
        install.note_task_events(app, note_worker_events)
        poison.install(app, self._dead_letters)
        app.on_after_finalize.connect(self._freeze, weak=False)
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
        func: Callable[..., Any] | None = None,
        /,
        *,
        resource: str | None = None,
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
        the resource's name. What the task runs with is frozen when the app is finalized.
        """
        if func is not None or resource is None:
            raise ConfigurationError(
                "manager.task needs the resource the task depends on: write "
                '@manager.task(resource="search-api", ...) (with parentheses)'
            )
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
            # Not shared: Celery would add a shared task to every app finalized later, with
            # this manager's runtime bound to it.
            options = {"shared": False, **celery_options}
            options.pop("name", None)
            queue = options.pop("queue", resource)
            self._tasks[name] = _TaskDeclaration(
                resource=resource,
                retry=retry or RetryPolicy.none(),
                interactive=interactive,
                max_defer_age=float(max_defer_age or self.max_defer_age),
                queue=queue,
            )
            self._route(name, queue)
            install.add_queue(self.app, degraded_queue(queue))
            task: ResilientTask = self.app.task(
                base=ResilientTask, name=name, freeze=partial(self._runtime, name), **options
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
        concurrency: Concurrency | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> ResourceSpec:
        """Declare what is known of a resource, in one place.

        ``rate_limit`` holds for the whole fleet (``"10/second;500/minute"``, or a
        ``RateLimit`` keyed per team or API key); ``prices`` are dollars per unit reported with
        ``report_usage``; ``rate_limit_errors`` are a client library's quota exceptions (read
        like a 429); ``quota_parser`` reads quota headers of a shape we do not know;
        ``concurrency`` caps the calls in flight across the fleet (and adapts the cap);
        ``retry_budget`` caps retries as a share of calls across the fleet.
        """
        if breaker is not None and not isinstance(breaker, BreakerPolicy):
            raise ConfigurationError(f"breaker must be a BreakerPolicy, got {breaker!r}")
        spec = self._resources.declare(
            name,
            rate_limit=rate_limit,
            prices=prices,
            rate_limit_errors=rate_limit_errors,
            concurrency=concurrency,
            retry_budget=retry_budget,
        )
        if rate_limit_errors and name in self._breakers:
            raise ConfigurationError(
                f"resource {name!r} is already in use: declare rate_limit_errors before its "
                f"breaker is asked for or its tasks run"
            )
        self._declare_breaker(name, breaker)
        if quota_parser is not None:
            if not callable(quota_parser):
                raise ConfigurationError(f"quota_parser must be callable, got {quota_parser!r}")
            self._quotas.use_parser(name, quota_parser)
        return spec

    def budget(
        self, spec: str, *, resource: str | None = None, on_exceed: OnExceed = "defer"
    ) -> Budget:
        """Cap this team's spend per UTC day (on one resource if named); checked before calls."""
        budget = Budget(spec, on_exceed)
        self._resources.set_budget(budget, resource)
        return budget

    def breaker(self, resource: str) -> FleetBreaker:
        """The fleet breaker of a declared resource (one instance per resource and manager).

        Its policy is fixed from then on: declare the resource's tasks (import their modules)
        before asking for it.
        """
        existing = self._breakers.get(resource)
        if existing is not None:
            return existing
        if resource not in self._policies:
            raise ConfigurationError(
                f"unknown resource {resource!r}; known: {sorted(self._policies)} (import the "
                f"modules that declare tasks before asking for a breaker)"
            )
        policy = self._policies[resource] or BreakerPolicy()
        spec = self._resources.get(resource)
        breaker = FleetBreaker(
            resource,
            policy,
            RedisFleetStorage(self._redis, resource, self._keys),
            not_failures=(*CELERY_CONTROL, *spec.rate_limit_errors),
        )
        self._breakers[resource] = breaker
        return breaker

    def _declare_breaker(self, resource: str, policy: BreakerPolicy | None) -> None:
        """One policy per resource; the default holds until a policy is declared."""
        declared = self._policies.get(resource)
        if policy is None or policy == declared:
            self._policies.setdefault(resource, None)
            return
        if declared is not None:
            raise ConfigurationError(
                f"resource {resource!r} already has breaker {declared.describe()}; "
                f"another declaration says {policy.describe()}: declare one policy per resource"
            )
        if resource in self._breakers:
            raise ConfigurationError(
                f"resource {resource!r} is already in use with the default breaker policy; "
                f"declare its policy before its breaker is asked for or its tasks run"
            )
        self._policies[resource] = policy

    # -- freezing declarations ------------------------------------------------------------------

    def _freeze(self, sender: Any = None, **_: Any) -> None:
        """The app is finalized: build what every declared task runs with, once."""
        for name in self._tasks:
            self.app.tasks[name].runtime  # noqa: B018 (built on first access)

    def _runtime(self, name: str) -> TaskRuntime:
        declaration = self._tasks[name]
        return TaskRuntime(
            team=self.team,
            resource=declaration.resource,
            guard=self._guard(declaration),
            deferred=self._deferred,
            dead_letters=self._dead_letters,
            max_defer_age=declaration.max_defer_age,
            interactive=declaration.interactive,
            queue=declaration.queue,
            provenance=self._provenance,
        )

    def _guard(self, declaration: _TaskDeclaration) -> TaskGuard:
        return self._build_guard(declaration.resource, declaration.retry)

    def _build_guard(
        self, resource: str, retry: RetryPolicy, *, concurrency: bool = True, free: bool = False
    ) -> TaskGuard:
        """The protocol around calls to ``resource``: its breaker and gates, with ``retry``,
        its concurrency limit and its retry budget when declared. A ``free`` provider (no cost,
        no prices) is not held to budgets."""
        spec = self._resources.get(resource)
        budgets = self._resources.budgets(resource)
        rate_limit, pricing, rate_limit_errors = (
            spec.rate_limit,
            spec.pricing,
            spec.rate_limit_errors,
        )
        gates = (
            CooldownGate(self._cooldowns, resource),
            BudgetGate(self._ledger, resource, lambda: budgets, free=free),
            RateLimitGate(self._limiter, resource, lambda: rate_limit),
        )
        reporter = QuotaReporter(
            resource,
            self._ledger,
            self._quotas,
            self._cooldowns,
            pricing=lambda: pricing,
            rate_limit_errors=lambda: rate_limit_errors,
        )
        return TaskGuard(
            Admitter(self.breaker(resource), self._deliveries),
            retry=retry,
            settings=self._guard_settings,
            gates=gates,
            reporter=reporter,
            not_retryable=CELERY_CONTROL,
            concurrency=self._concurrency_limit(spec.name) if concurrency else None,
            retry_budget=self._retry_budget(spec.name),
        )

    def _concurrency_limit(self, resource: str) -> FleetConcurrencyLimit | None:
        policy = self._resources.get(resource).concurrency
        if policy is None:
            return None
        limit = self._concurrency.get(resource)
        if limit is None:
            limit = FleetConcurrencyLimit(self._redis, self._keys, resource, policy)
            self._concurrency[resource] = limit
        return limit

    def _retry_budget_for(self, resource: str) -> FleetRetryBudget:
        """``resource``'s fleet retry budget, the default one declared if it has none (for
        ``@retry``, which retries whatever it is given)."""
        spec = self._resources.known(resource)
        if spec is None or spec.retry_budget is None:
            self.resource(resource, retry_budget=RetryBudget())
        budget = self._retry_budget(resource)
        assert budget is not None
        return budget

    def _retry_budget(self, resource: str) -> FleetRetryBudget | None:
        policy = self._resources.get(resource).retry_budget
        if policy is None:
            return None
        budget = self._retry_budgets.get(resource)
        if budget is None:
            budget = FleetRetryBudget(self._redis, self._keys, resource, policy)
            self._retry_budgets[resource] = budget
        return budget

    # -- provider chains -----------------------------------------------------------------------

    def providers(
        self,
        name: str,
        providers: list[Provider],
        *,
        resource_type: ResourceType | str = ResourceType.API_QUOTA,
        cache_ttl: float | None = None,
        protocols: list[str] | None = None,
        hedge_after: float | None = None,
        retry: RetryPolicy | None = None,
        degrade_in_place: bool = False,
        queue_delay: float = 5.0,
    ) -> ProviderChain:
        """Declare a chain of providers for one kind of call; call the chain like a function.

        Each provider is a resource (its own breaker, limits, quota, spend, concurrency limit
        and retry budget). A call goes to the cheapest provider that meets its quality, then
        through ``protocols`` (by default ``DEFAULT_PROTOCOLS[resource_type]``): the other
        providers, the degraded queue, the last good answer (kept ``cache_ttl`` seconds), the
        deferred store. ``hedge_after`` seconds without an answer calls the next provider too.
        ``retry`` is how often one provider is retried (within its retry budget) before the
        next is called. ``name`` is a resource too: tasks declare ``resource=name``.
        """
        owner = f"providers({name!r})"
        check_name("chain name", name)
        kind = ResourceType.of(resource_type, owner)
        if not isinstance(providers, list | tuple) or not providers:
            raise ConfigurationError(f"{owner}: providers must be a non-empty list of Provider")
        for provider in providers:
            if not isinstance(provider, Provider):
                raise ConfigurationError(
                    f"{owner}: providers must hold Provider objects, got {provider!r}"
                )
        names = [provider.name for provider in providers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigurationError(f"{owner}: provider names must be unique, {twice} repeat")
        if name in names:
            raise ConfigurationError(f"{owner}: a provider may not share the chain's name")
        if name in self._chains:
            raise ConfigurationError(f"{owner}: a chain of that name is already declared")
        if cache_ttl is not None:
            check.positive_seconds(owner, "cache_ttl", cache_ttl)
        if hedge_after is not None:
            check.positive_seconds(owner, "hedge_after", hedge_after)
        check.positive_seconds(owner, "queue_delay", queue_delay)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"{owner}.retry must be a RetryPolicy, got {retry!r}")
        if not isinstance(degrade_in_place, bool):
            raise ConfigurationError(f"{owner}.degrade_in_place must be True or False")
        chosen = fallback_protocols.build(kind, protocols, owner)
        options = fallback_protocols.attempt_options(chosen)
        provider_retry = (retry or CHAIN_RETRY) if options.retry else RetryPolicy.none()
        for provider in providers:
            self._declare_provider(provider, provider_retry)
        self.resource(name)
        guards: dict[str, TaskGuard] = {}

        def guard(provider: Provider) -> TaskGuard:
            built = guards.get(provider.name)
            if built is None:
                built = guards[provider.name] = self._build_guard(
                    provider.name,
                    provider_retry,
                    concurrency=options.concurrency,
                    free=not provider.cost and not provider.prices,
                )
            return built

        chain = ProviderChain(
            name,
            providers,
            resource_type=kind,
            protocols=chosen,
            guard=guard,
            cache=ResultCache(self._redis, self._keys, name) if cache_ttl else None,
            cache_ttl=cache_ttl,
            hedge_after=hedge_after,
            degrade_in_place=degrade_in_place,
            queue_delay=queue_delay,
        )
        self._chains[name] = chain
        return chain

    def _declare_provider(self, provider: Provider, retry: RetryPolicy) -> None:
        prices = dict(provider.prices or {})
        if provider.cost:
            if CALLS in prices and prices[CALLS] != provider.cost:
                raise ConfigurationError(
                    f"Provider({provider.name!r}): cost={provider.cost} and "
                    f"prices[{CALLS!r}]={prices[CALLS]} disagree"
                )
            prices[CALLS] = provider.cost
        budget = provider.retry_budget
        if budget is None and retry.max_attempts > 1:
            declared = self._resources.known(provider.name)
            budget = None if declared and declared.retry_budget else RetryBudget()
        self.resource(
            provider.name,
            breaker=provider.breaker,
            rate_limit=provider.rate_limit,
            prices=prices or None,
            rate_limit_errors=provider.rate_limit_errors,
            concurrency=provider.concurrency,
            retry_budget=budget,
        )

    # -- the deferred pump ---------------------------------------------------------------------

    def pump(self, max_seconds: float = 0.9) -> PumpReport:
        """Publish every deferred task that may run now (what the beat-scheduled pump task and
        each worker's pump thread run)."""
        return self._pump.drain(max_seconds)

    def _parking_spots(self) -> list[ParkingSpot]:
        """Where work parked on each declared resource's breaker waits, and its pace."""
        spots = []
        for resource, policy in self._policies.items():
            policy = policy or BreakerPolicy()
            spots.append(
                self._deferred.parking_spot(resource, policy.reset_timeout, policy.trial_calls)
            )
        return spots

    def _install_pump(self, queue: str, interval: float) -> Any:
        name = f"resilience_tasks.pump.{self.team}"

        def pump_deferred() -> dict[str, int]:
            try:
                return vars(self.pump(max_seconds=max(0.1, interval * 0.9)))
            except STATE_ERRORS as unavailable:  # the next run tries again; one line, no trace
                logger.warning("deferred pump: state store unavailable (%s)", unavailable)
                return {}

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

    def deferred_count(self) -> int:
        """Work waiting in the deferred store: due later, parked on a breaker, or published
        and not yet started by a worker."""
        return self._deferred.depth(self._policies)

    def release_deferred(self, task_ids: list[str] | None = None) -> int:
        """Make waiting work (all of it, or ``task_ids``) due now, parked work included: for an
        operator who knows the dependency is back. Returns how many entries were moved."""
        return self._deferred.release(task_ids, resources=self._policies)

    def dead_lettered(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of this team, newest first."""
        return self._dead_letters.list(limit)

    def dead_letter(self, task_id: str) -> DeadLetter | None:
        """The dead letter recorded under ``task_id``, if any."""
        return self._dead_letters.get(task_id)

    def replay_dead_letters(self, task_ids: list[str] | None = None) -> list[str]:
        """Publish dead-lettered work again under its own task id, once what made it fail is
        fixed: the named entries, or all of them oldest first. Only entries that hold a whole
        task message can be replayed (a message a worker could not read is kept for
        inspection); returns the ids that were, and removes them from the dead-letter store."""
        ids = task_ids if task_ids is not None else [d.task_id for d in self._dead_letters.oldest()]
        replayed = []
        for task_id in ids:
            entry = self._dead_letters.take(task_id)  # of two operators, one replays it
            if entry is None:
                continue
            try:
                message = DeferredMessage.from_json(
                    entry.message if isinstance(entry.message, str) else json.dumps(entry.message)
                )
                publish(self.app, replace(message, attempts=0, failed_trials=0, defer_count=0))
            except _REPLAY_ERRORS:
                self._dead_letters.add(task_id, entry.reason, entry.message)
                continue
            replayed.append(task_id)
        return replayed

    def spent(self, resource: str | None = None, day: str | None = None) -> float:
        """Dollars this team spent on a UTC day (today by default), on ``resource`` or in all."""
        return self._ledger.spent(resource, day)

    def units(self, resource: str, day: str | None = None) -> dict[str, float]:
        """Units this team reported on ``resource`` on a UTC day (today by default)."""
        return self._ledger.units(resource, day)

    def quota(self, resource: str) -> dict[str, float]:
        """The quota ``resource``'s provider last reported (empty if none was seen recently)."""
        return self._quotas.get(resource)

    def served(self, task_id: str) -> list[Served]:
        """What served the chain calls of task ``task_id`` (kept as long as its result)."""
        return self._provenance.load(task_id)

    def run_once(
        self, key: str, fn: Callable[[], T], *, ttl: float = 86_400.0, lease: float = 60.0
    ) -> T | Any:
        """Run the side effect ``fn`` once per ``key`` (for ``ttl`` seconds) and replay its
        stored result to duplicates; see ``IdempotencyStore.run_once``."""
        return self._idempotency.run_once(key, fn, ttl=ttl, lease=lease)

    def check(self) -> None:
        """What a worker or beat checks at start-up, each failure in one clear line:
        ``StateUnavailableError`` if the state Redis is unreachable, ``ConfigurationError`` if
        another team declared a different breaker policy for a resource this team shares."""
        connection.ensure_reachable(self._redis, self._url)
        self._check_shared_policies()
        self._freeze()

    def _degraded_gaps(self, consumed: set[str]) -> list[str]:
        """A worker that consumes a chain task's queue, where the chain can only serve by
        moving work to the degraded queue, and no degraded queue: say so at start-up."""
        warnings = []
        for name, declaration in self._tasks.items():
            chain = self._chains.get(declaration.resource)
            if chain is None or not chain.degraded_only or declaration.queue not in consumed:
                continue
            degraded = degraded_queue(declaration.queue)
            if degraded not in consumed:
                warnings.append(
                    f"task {name}: chain {chain.name!r} has only degraded providers, so its "
                    f"work moves to queue {degraded!r}, which this worker does not consume; "
                    f"start a worker with -Q {degraded}"
                )
        return warnings

    def _check_shared_policies(self) -> None:
        """One breaker policy per resource across teams: the breaker's state is shared, so two
        thresholds on one state would each be wrong. A team may change its own policy."""
        for resource, policy in self._policies.items():
            if policy is None:
                continue
            key = self._keys.breaker_policy(resource)
            declared = {"team": self.team, "policy": policy.describe()}
            raw = self._redis.get(key)
            other = json.loads(raw) if raw else None
            if (
                other
                and other.get("team") != self.team
                and other.get("policy") != declared["policy"]
            ):
                raise ConfigurationError(
                    f"resource {resource!r} is shared with team {other.get('team')!r}, whose "
                    f"breaker policy is {other.get('policy')}; team {self.team!r} declares "
                    f"{declared['policy']}: agree on one policy per resource"
                )
            if not other or other.get("team") == self.team:
                self._redis.set(key, json.dumps(declared, sort_keys=True), ex=POLICY_RECORD_TTL)
