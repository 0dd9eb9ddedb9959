"""The names of every Redis key resilience-tasks writes, in one place.

Resource state (breakers) is shared by every team that uses the resource; work state (the
deferred and dead-letter stores, delivery counts) belongs to one team. Everything lives under
one prefix so tests and deployments can be kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "rt"

    # -- per resource --------------------------------------------------------------------------
    def breaker(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:breaker"

    def trial_leases(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:trials"

    def call_window(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:calls"

    def failure_window(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:fails"

    def quota(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:quota"

    def cooldown(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:cooldown-until"

    def interactive_waiting(self, resource: str) -> str:
        return f"{self.prefix}:res:{resource}:interactive-waiting"

    # -- spend, per UTC day --------------------------------------------------------------------
    def team_spend(self, team: str, day: str) -> str:
        return f"{self.prefix}:spend:{day}:team:{team}"

    def resource_spend(self, resource: str, day: str) -> str:
        return f"{self.prefix}:spend:{day}:res:{resource}"

    def team_resource_spend(self, team: str, resource: str, day: str) -> str:
        return f"{self.prefix}:spend:{day}:team:{team}:res:{resource}"

    def team_resource_units(self, team: str, resource: str, day: str) -> str:
        return f"{self.prefix}:units:{day}:team:{team}:res:{resource}"

    # -- per team ------------------------------------------------------------------------------
    def deferred_due(self, team: str) -> str:
        return f"{self.prefix}:team:{team}:deferred:due"

    def deferred_messages(self, team: str) -> str:
        return f"{self.prefix}:team:{team}:deferred:msg"

    def deferred_claims(self, team: str) -> str:
        return f"{self.prefix}:team:{team}:deferred:claims"

    def dead_letters(self, team: str) -> str:
        return f"{self.prefix}:team:{team}:dead:msg"

    def dead_letter_index(self, team: str) -> str:
        return f"{self.prefix}:team:{team}:dead:index"

    def deliveries(self, team: str, task_id: str) -> str:
        return f"{self.prefix}:team:{team}:deliveries:{task_id}"

    def idempotency_result(self, team: str, key: str) -> str:
        return f"{self.prefix}:team:{team}:once:{key}:result"

    def idempotency_lease(self, team: str, key: str) -> str:
        return f"{self.prefix}:team:{team}:once:{key}:lease"
