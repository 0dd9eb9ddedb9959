"""The one round trip before each attempt of a task: breaker, delivery count, gates' values.

A task's admission asks three things at once, in one Lua script: may the call go out (the
breaker's own ``breaker_admit``, reused from ``breaker.scripts``), how many times has this
message been delivered (only when the broker says it was redelivered: a healthy first delivery
writes nothing), and what are the values the gates read (today's spend, a provider's cool-down,
interactive work waiting), so that a gate which only reads costs no round trip of its own. When
the resource keeps a fleet retry budget, an admitted first attempt is counted in it there too
(``budget_deposit``, from ``fallback.scripts``): work that may retry pays no round trip for it.

This module is the one owner of that script and of the delivery counter: it counts, it says
when a message has been delivered too often, and ``DeferredStore`` clears the counter when the
work goes to wait (waiting is not a redelivery) under the name ``KeySpace.deliveries`` gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resilience_tasks.breaker import Admission, FleetBreaker, records
from resilience_tasks.breaker.scripts import ADMIT_FUNCTION
from resilience_tasks.errors import DeadLetteredError
from resilience_tasks.fallback.scripts import DEPOSIT_FUNCTION
from resilience_tasks.state.keys import KeySpace
from resilience_tasks.state.lua import CLOCK

if TYPE_CHECKING:
    from resilience_tasks.fallback.retry_budget import FleetRetryBudget

# KEYS: breaker, trial leases, call window, [delivery counter when ARGV[6] > 0],
#       [retry budget when ARGV[7] > 0], watched...
# ARGV: the breaker's five (reset_timeout, trial_calls, trial_lease, window, token), then the
#       delivery counter's expiry in seconds (0: this delivery is not counted), then the retry
#       budget's window in seconds (0: this attempt is not a first call to count)
# Returns {decision, state, failures, wait, transition, deliveries, {watched values}, slow}
SCRIPT = (
    CLOCK
    + ADMIT_FUNCTION
    + DEPOSIT_FUNCTION
    + """
local first_watched = 4
local deliveries = 0
if tonumber(ARGV[6]) > 0 then
  deliveries = redis.call('INCR', KEYS[first_watched])
  redis.call('EXPIRE', KEYS[first_watched], ARGV[6])
  first_watched = first_watched + 1
end
local budget_key = nil
if tonumber(ARGV[7]) > 0 then
  budget_key = KEYS[first_watched]
  first_watched = first_watched + 1
end
local watched = {}
for i = first_watched, #KEYS do watched[#watched + 1] = redis.call('GET', KEYS[i]) or '' end
local decision, state, failures, wait, transition, slow = breaker_admit(
  KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if budget_key and decision > 0 then budget_deposit(budget_key, tonumber(ARGV[7])) end
return {decision, state, failures, wait, transition, deliveries, watched, slow}
"""
)


@dataclass(frozen=True)
class Deliveries:
    """How often one team's messages may be delivered without finishing.

    A message that keeps killing or losing its worker comes back after every crash; past
    ``max_deliveries`` it goes to the dead-letter store instead. The count lives ``ttl``
    seconds (longer than the redeliveries can take: ``visibility_timeout`` apart).
    """

    keys: KeySpace
    team: str
    max_deliveries: int = 5
    ttl: int = 3600

    def key(self, task_id: str) -> str:
        return self.keys.deliveries(self.team, task_id)

    def check(self, redeliveries: int) -> None:
        """Raise ``DeadLetteredError`` once a message has been delivered too often."""
        deliveries = redeliveries + 1  # the first delivery is never counted
        if deliveries > self.max_deliveries:
            raise DeadLetteredError(
                f"delivered {deliveries} times without finishing (max_deliveries="
                f"{self.max_deliveries}): it keeps killing or losing its worker"
            )


@dataclass(frozen=True)
class Clearance:
    """The answer of one admission: the breaker's, and the values the gates watch."""

    admission: Admission
    watched: Mapping[str, bytes | None]


class Admitter:
    """Admits the attempts of one declared task: its breaker, its team's delivery counter."""

    def __init__(self, breaker: FleetBreaker, deliveries: Deliveries) -> None:
        self.breaker = breaker
        self.deliveries = deliveries
        self._script = breaker.storage.client.register_script(SCRIPT)

    def admit(
        self,
        redelivered: str | None = None,
        watch: tuple[str, ...] = (),
        deposit: FleetRetryBudget | None = None,
    ) -> Clearance:
        """One round trip; ``redelivered`` is the task id of a message the broker delivers
        again (its delivery is counted, and checked), None for a first delivery; ``deposit``
        is the retry budget an admitted first attempt is counted in."""
        keys, args, token = self.breaker.admission_request()
        counter: list[str] = [self.deliveries.key(redelivered)] if redelivered else []
        budget: list[str] = [deposit.key] if deposit is not None else []
        reply: Any = self._script(
            [*keys, *counter, *budget, *watch],
            [
                *args,
                self.deliveries.ttl if redelivered else 0,
                deposit.budget.window if deposit is not None else 0,
            ],
        )
        admission = self.breaker.accept(records.admission(reply, token, slow=reply[7]))
        if redelivered:
            try:
                self.deliveries.check(int(reply[5]))
            except DeadLetteredError:
                self.breaker.release(admission)
                raise
        values = tuple(value or None for value in reply[6])
        return Clearance(admission, dict(zip(watch, values, strict=True)))
