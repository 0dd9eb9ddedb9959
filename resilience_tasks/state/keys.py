"""The names of every Redis key resilience-tasks writes, in one place.

Resource state (breakers, limits, cool-downs) is shared by every team that uses the resource;
work state (the deferred and dead-letter stores, delivery counts) belongs to one team.
Everything lives under one prefix so tests and deployments can be kept apart.

**One hash tag per deployment.** The prefix is written in braces (``{rt}:res:llm:breaker``),
so on Redis Cluster every key of a deployment hashes to the same slot. Cluster runs a Lua
script only when all its keys live in one slot, and our scripts cross the natural groupings:
the breaker's admission script reads the breaker, its trial leases and call window, the
task's delivery counter (per team), today's spend (per team and day) and the provider's
cool-down (per resource) in one round trip; the limiter takes units from several windows at
once. A tag per resource or per team would split those keys across slots and cost extra round
trips on the hot path. Keys built outside this class (e.g. by hand in a script) would land in
another slot, so every name comes from here and every script receives its keys in ``KEYS``.

What it costs: one shard (one primary, one CPU core) holds a deployment's state, so Cluster
brings failover and room for other data, not more throughput for us. Measured with
``redis-benchmark`` (20 clients) on one core of a loaded 2-core machine: about 46,000 breaker
admissions a second (closed breaker, three watched keys) and 41,000 two-window rate-limit
acquires, against 89,000 plain GETs. A task costs one to three scripts, so one shard serves
roughly 15,000-45,000 tasks a second, far above what a fleet's workers send (a no-op Celery
task runs at under 1,000 a second per worker). Deployments that need more can use several
prefixes (one per team or group of resources), each its own tag and so possibly its own shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from resilience_tasks.errors import ConfigurationError


@dataclass(frozen=True)
class KeySpace:
    """Key names under ``{prefix}``; ``prefix`` is the plain name (no braces)."""

    prefix: str = "rt"

    def __post_init__(self) -> None:
        if (
            not isinstance(self.prefix, str)
            or not self.prefix
            or any(char in self.prefix for char in "{}*?[] \n")
        ):
            raise ConfigurationError(
                f"key_prefix must be a non-empty name without braces, spaces or glob "
                f"characters (it becomes the Redis Cluster hash tag), got {self.prefix!r}"
            )

    @property
    def tag(self) -> str:
        """``{prefix}``: the hash tag every key starts with."""
        return f"{{{self.prefix}}}"

    @property
    def pattern(self) -> str:
        """A ``SCAN`` pattern matching every key of this key space."""
        return f"{self.tag}:*"

    # -- per resource --------------------------------------------------------------------------
    def breaker(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:breaker"

    def breaker_policy(self, resource: str) -> str:
        """The breaker policy the fleet declared for ``resource`` (checked across teams)."""
        return f"{self.breaker(resource)}:policy"

    def trial_leases(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:trials"

    def call_window(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:calls"

    def failure_window(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:fails"

    def quota(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:quota"

    def cooldown(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:cooldown-until"

    def interactive_waiting(self, resource: str) -> str:
        return f"{self.tag}:res:{resource}:interactive-waiting"

    def retry_budget(self, resource: str) -> str:
        """Per-second counts of first calls and retries (the fleet retry budget's window)."""
        return f"{self.tag}:res:{resource}:retry-budget"

    def concurrency_leases(self, resource: str) -> str:
        """Calls in flight: one member per lease, scored by its expiry (server seconds)."""
        return f"{self.tag}:res:{resource}:in-flight"

    def concurrency_limit(self, resource: str) -> str:
        """The fleet's current AIMD concurrency limit of ``resource`` and its bookkeeping."""
        return f"{self.tag}:res:{resource}:in-flight-limit"

    # -- provider chains -----------------------------------------------------------------------
    def cached_result(self, chain: str, digest: str) -> str:
        """The last good result of ``chain`` for the arguments hashed into ``digest``."""
        return f"{self.tag}:chain:{chain}:cache:{digest}"

    def served(self, team: str, task_id: str) -> str:
        """What served a task's calls (provenance), kept as long as its result."""
        return f"{self.tag}:team:{team}:served:{task_id}"

    # -- rate-limit windows (named by ``limits``' ``RateLimitItem.key_for``) --------------------
    def rate_window(self, window: str) -> str:
        """A moving window's list of hit stamps; ``window`` is ``item.key_for(*identifiers)``."""
        return f"{self.tag}:limits:{window}"

    def rate_queue(self, window: str) -> str:
        """The next free slot of a window's line of refused calls."""
        return f"{self.tag}:limits:{window}:queue"

    # -- spend, per UTC day --------------------------------------------------------------------
    def team_spend(self, team: str, day: str) -> str:
        return f"{self.tag}:spend:{day}:team:{team}"

    def resource_spend(self, resource: str, day: str) -> str:
        return f"{self.tag}:spend:{day}:res:{resource}"

    def team_resource_spend(self, team: str, resource: str, day: str) -> str:
        return f"{self.tag}:spend:{day}:team:{team}:res:{resource}"

    def team_resource_units(self, team: str, resource: str, day: str) -> str:
        return f"{self.tag}:units:{day}:team:{team}:res:{resource}"

    # -- per team ------------------------------------------------------------------------------
    def deferred_due(self, team: str) -> str:
        return f"{self.tag}:team:{team}:deferred:due"

    def deferred_messages(self, team: str) -> str:
        return f"{self.tag}:team:{team}:deferred:msg"

    def deferred_claims(self, team: str) -> str:
        return f"{self.tag}:team:{team}:deferred:claims"

    def deferred_parked(self, team: str, resource: str) -> str:
        """Work parked on ``resource``'s breaker."""
        return f"{self.deferred_due(team)}:parked:{resource}"

    def deferred_parked_expiry(self, team: str, resource: str) -> str:
        return f"{self.deferred_parked(team, resource)}:expiry"

    def deferred_parked_released(self, team: str, resource: str) -> str:
        return f"{self.deferred_parked(team, resource)}:released"

    def deferred_publish_failures(self, team: str) -> str:
        return f"{self.deferred_messages(team)}:publish-failures"

    def dead_letters(self, team: str) -> str:
        return f"{self.tag}:team:{team}:dead:msg"

    def dead_letter_index(self, team: str) -> str:
        return f"{self.tag}:team:{team}:dead:index"

    def deliveries(self, team: str, task_id: str) -> str:
        return f"{self.tag}:team:{team}:deliveries:{task_id}"

    def idempotency_result(self, team: str, key: str) -> str:
        return f"{self.tag}:team:{team}:once:{key}:result"

    def idempotency_lease(self, team: str, key: str) -> str:
        return f"{self.tag}:team:{team}:once:{key}:lease"
