"""One provider's call from ``async`` code: the guard's protocol on ``redis.asyncio``.

The breaker's admission and outcome, the concurrency lease, the retry budget and the cache are
awaited scripts on the breaker's ``redis.asyncio`` client, so no Redis round trip blocks the
event loop. The quota gates (cool-down, budget, rate limit) and the spend ledger are the
synchronous ones tasks use, whose short waits are ``time.sleep``: they run in a worker thread
(``asyncio.to_thread``), which also keeps the loop free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from resilience_tasks.caller_errors import raised_at_call_boundary
from resilience_tasks.errors import BreakerOpenError, Defer
from resilience_tasks.fallback import scope
from resilience_tasks.fallback.concurrency import Lease, Outcome
from resilience_tasks.gate import Call
from resilience_tasks.guard import TaskGuard
from resilience_tasks.quota.report import collecting


async def run(guard: TaskGuard, call: Call, func: Callable[..., Any]) -> Any:
    """Call ``func`` (sync or async) under ``guard``'s protocol; raises ``Defer`` when the
    resource cannot take it now, or the call's last error once its retries are spent."""
    breaker = guard.breaker
    aclient = breaker.asyncio_client()
    policy = guard.retry
    budget = guard.retry_budget
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            if attempt == 1 and budget is not None:
                await budget.deposit_async(aclient)
            return await _once(guard, aclient, call, func)
        except BreakerOpenError as refused:
            raise Defer(
                refused.retry_after, f"breaker {refused.state}", park_on=refused.resource
            ) from refused
        except Defer:
            raise
        except Exception as error:
            if raised_at_call_boundary(error, func) or not guard.retryable(error):
                raise
            if attempt >= policy.max_attempts:
                raise
            delay = policy.wait_after(attempt)
            if time.monotonic() - started + delay > policy.in_process_budget:
                raise
            if budget is not None and not await budget.withdraw_async(aclient):
                scope.note(f"{breaker.resource}: retry refused by the fleet retry budget")
                raise
            await asyncio.sleep(delay)


async def _once(guard: TaskGuard, aclient: Any, call: Call, func: Callable[..., Any]) -> Any:
    await _gates(guard, aclient, call)
    limit = guard.concurrency
    lease: Lease | None = None
    if limit is not None:
        lease = await limit.acquire_async(aclient)
        if lease is None:
            raise Defer(
                limit.policy.retry_after,
                f"{guard.breaker.resource}: at its fleet concurrency limit",
            )
    outcome: Outcome = "ignore"
    with collecting() as report:
        try:
            result = await guard.breaker.call_async(func, *call.args, **call.kwargs)
            outcome = "success"
        except BaseException as error:
            if guard.reporter is not None and guard.reporter.is_rate_limit(error):
                outcome = "drop"
                raise await asyncio.to_thread(guard.reporter.defer_for, error) from error
            if guard.breaker.is_system_error(error):
                outcome = "drop"
            raise
        finally:
            if lease is not None and limit is not None:
                await limit.release_async(aclient, lease, outcome)
            if report and guard.reporter is not None:
                await asyncio.to_thread(guard.reporter.record, report)
    return result


async def _gates(guard: TaskGuard, aclient: Any, call: Call) -> None:
    if not guard.gates:
        return
    watch = [key for gate in guard.gates for key in gate.watch(call)]
    values = await aclient.mget(watch) if watch else []
    watched = dict(zip(watch, values, strict=True))
    for gate in guard.gates:
        await asyncio.to_thread(gate.check, call, watched)
