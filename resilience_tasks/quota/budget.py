"""Former home of budgets and the spend ledger; they live in ``policy`` and ``storage`` now.

Remove once nothing imports ``resilience_tasks.quota.budget``.
"""

from resilience_tasks.quota.policy import (
    Budget,
    BudgetDecision,
    OnExceed,
    Pricing,
    decide,
    seconds_to_next_day,
    utc_day,
)
from resilience_tasks.quota.storage import SPEND_TTL, SpendLedger

__all__ = [
    "SPEND_TTL",
    "Budget",
    "BudgetDecision",
    "OnExceed",
    "Pricing",
    "SpendLedger",
    "decide",
    "seconds_to_next_day",
    "utc_day",
]
