"""Hedged calls (Polly's and Resilience4j's hedge): when the first provider has not answered
within ``hedge_after`` seconds, the next one is called too, and the first answer wins.

A provider that fails is followed at once by the next, as without hedging. In ``async`` code
the losers are cancelled; a thread cannot be, so in sync code they run to their end in the
background. Either way their spend is recorded: a provider call is charged when it starts.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from resilience_tasks.fallback.chain import ChainCall
    from resilience_tasks.fallback.provider import Provider

#: Threads a hedged chain may use at once in one process. The pool makes them as calls need
#: them: hedged losers hold theirs until they end, so a small pool would queue later calls
#: behind them (the very tail hedging cuts).
HEDGE_THREADS = 64

A = TypeVar("A")


class Hedge:
    """One chain's hedging: ``hedge_after`` seconds and, for sync calls, its thread pool."""

    def __init__(self, chain: str, hedge_after: float) -> None:
        self.chain = chain
        self.hedge_after = hedge_after
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=HEDGE_THREADS, thread_name_prefix=f"hedge-{self.chain}"
                )
            return self._pool

    def race(
        self,
        attempt: Callable[[Provider, ChainCall, str], A | None],
        call: ChainCall,
        candidates: Sequence[Provider],
    ) -> A | None:
        """Race ``candidates`` in order through ``attempt`` (each in a thread, in a copy of
        the caller's context); the first answer, or None when every one failed."""
        pool = self._executor()
        pending: dict[Future[A | None], Provider] = {}
        queue = list(candidates)

        def start(protocol: str) -> None:
            provider = queue.pop(0)
            context = contextvars.copy_context()
            pending[pool.submit(context.run, attempt, provider, call, protocol)] = provider

        start("call")
        while pending:
            done, _ = wait(
                pending, timeout=self.hedge_after if queue else None, return_when=FIRST_COMPLETED
            )
            if not done:  # no answer in time: hedge with the next provider
                call.note(f"hedge: no answer after {self.hedge_after:g}s")
                start("hedge")
                continue
            for future in done:
                pending.pop(future)
                answer = future.result()
                if answer is not None:
                    for loser in pending:
                        loser.cancel()  # only one that has not started yet
                    return answer
            if queue and not pending:
                start("switch_provider")
        return None

    async def race_async(
        self,
        attempt: Callable[[Provider, ChainCall, str], Awaitable[A | None]],
        call: ChainCall,
        candidates: Sequence[Provider],
    ) -> A | None:
        """``race`` on the event loop; the losers are cancelled."""
        pending: dict[asyncio.Future[A | None], Provider] = {}
        queue = list(candidates)

        def start(protocol: str) -> None:
            provider = queue.pop(0)
            pending[asyncio.ensure_future(attempt(provider, call, protocol))] = provider

        start("call")
        try:
            while pending:
                done, _ = await asyncio.wait(
                    pending,
                    timeout=self.hedge_after if queue else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    call.note(f"hedge: no answer after {self.hedge_after:g}s")
                    start("hedge")
                    continue
                for task in done:
                    pending.pop(task)
                    answer = task.result()
                    if answer is not None:
                        return answer
                if queue and not pending:
                    start("switch_provider")
            return None
        finally:
            for task, provider in pending.items():
                task.cancel()
                call.note(f"{provider.name}: hedged call cancelled")
