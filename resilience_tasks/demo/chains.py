"""The provider-chain chapter: three fault servers behind one chain, failing and coming back."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from resilience_tasks import BreakerPolicy, ResourceType, served
from resilience_tasks.adapter.task import DEFERRED, degraded_queue
from resilience_tasks.demo.setup import Setup
from resilience_tasks.demo.tally import OUTCOME_TIMEOUT, RETURNED, Sent, Tally
from resilience_tasks.testing.polling import wait_until

#: What the provider-chain chapter needs beyond the core: the fault servers run on the MCP SDK
#: and uvicorn, and the chain calls them with the official openai client (the demo extra).
CHAIN_PACKAGES = ("openai", "mcp", "uvicorn")

#: The chain's providers: who, dollars per call, and whether their answers are degraded.
CHAIN_PROVIDERS = (("primary", 0.01, False), ("backup", 0.02, False), ("local", 0.0, True))

#: Small breakers, so that the walk-through trips and recovers in seconds.
CHAIN_BREAKER = BreakerPolicy(fail_max=2, reset_timeout=1.5)

#: The question asked while everything is healthy, and again once everything is down.
KNOWN_QUESTION = "what does a circuit breaker do?"


def chain_packages_missing() -> list[str]:
    """The packages of ``CHAIN_PACKAGES`` this Python cannot import."""
    missing = []
    for name in CHAIN_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


class ChainChapter:
    """A provider chain over three fault servers (real HTTP, the official openai client),
    walked through its providers failing one by one and coming back.

    Declared before the worker starts, so that the worker consumes the chain task's queue and
    its degraded queue; a deployment runs separate degraded workers beside the degraded
    provider (``-Q <queue>.degraded``).
    """

    def __init__(self, setup: Setup, tally: Tally, say: Callable[[str], None]) -> None:
        from resilience_tasks.testing.fault_server import FaultServer

        self.setup, self.tally, self.say = setup, tally, say
        self.servers = {name: FaultServer(name) for name, _, _ in CHAIN_PROVIDERS}
        self.queue = setup.queue("demo.chat")
        self.name = f"chat-{setup.run}"

    def start(self) -> None:
        """Start the fault servers (side by side: each is a process that takes a second to
        listen), then declare the chain and its task on their addresses."""
        from resilience_tasks.providers import openai_chat
        from resilience_tasks.testing.fault_server import MODEL

        with ThreadPoolExecutor(len(self.servers)) as pool:
            for started in [pool.submit(server.start) for server in self.servers.values()]:
                started.result()
        self.chat = self.setup.manager.providers(
            self.name,
            [
                openai_chat(
                    name,
                    model=MODEL,
                    base_url=self.servers[name].openai_base_url,
                    api_key="demo",
                    timeout=5.0,
                    cost=cost,
                    degraded=degraded,
                    breaker=CHAIN_BREAKER,
                )
                for name, cost, degraded in CHAIN_PROVIDERS
            ],
            resource_type=ResourceType.API_QUOTA,
            cache_ttl=600,
            queue_delay=1.0,
        )
        chat = self.chat

        @self.setup.manager.task(resource=self.name, queue=self.queue, bind=True)
        def answer(task: Any, question: str) -> dict[str, Any]:
            text = chat(question)
            record = served()  # what answered the chain call just made
            return {
                "text": text,
                **(record.as_dict() if record is not None else {}),
                "queue": (task.request.delivery_info or {}).get("routing_key"),
            }

        self.task = answer

    @property
    def addresses(self) -> str:
        return ", ".join(
            f"{name} {server.openai_base_url}" for name, server in self.servers.items()
        )

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            for server in self.servers.values():
                pool.submit(server.stop)

    def ask(self, question: str, step: str) -> Sent:
        return self.tally.settle(self.tally.send(self.task, question, label=f"{step}: {question}"))

    def walk(self) -> None:
        say, servers, manager = self.say, self.servers, self.setup.manager
        degraded = degraded_queue(self.queue)
        say(
            f"7. A provider chain, {self.name}: three OpenAI-compatible servers on loopback, "
            f"called with the"
        )
        say(
            "   official openai client, cheapest first: primary ($0.01 a call), backup ($0.02) "
            "and a free local"
        )
        say(
            f"   model whose answers are degraded. Degraded work moves to queue {degraded}; "
            f"this worker"
        )
        say(
            "   consumes it too (a deployment runs separate degraded workers). Who answered, "
            "and how:"
        )

        first = self.ask(KNOWN_QUESTION, "healthy")
        say(f"   healthy: {answered([first])}")

        servers["primary"].set("errors", rate=1.0, status=503)
        servers["primary"].reset()
        failover = [self.ask(f"question {n}", "primary 503") for n in range(5)]
        say(
            f"   primary answers 503: {answered(failover)}; requests that reached the primary: "
            f"{servers['primary'].stats().requests} (fail_max {CHAIN_BREAKER.fail_max})"
        )

        servers["backup"].set("down")
        moved = [self.ask(f"question {n}", "backup down") for n in range(5, 8)]
        there = sum(1 for entry in moved if value(entry, "queue") == degraded)
        say(
            f"   backup down too: {answered(moved)}; {there}/{len(moved)} run from {degraded} "
            f"under their own task ids"
        )

        servers["local"].set("down")
        stale = self.ask(KNOWN_QUESTION, "all down")
        waiting = self.tally.send(self.task, "a new question", label="all down: a new question")
        wait_until(lambda: waiting.result.state == DEFERRED, OUTCOME_TIMEOUT, interval=0.02)
        say(
            f"   everything down: the first question again: {answered([stale])}; a new one: "
            f"{waiting.result.state} (deferred depth {manager.deferred_count()})"
        )

        # The new question waits parked on the primary's breaker: its first trial serves it.
        recovered = time.monotonic()
        servers["primary"].set("healthy")
        self.tally.settle(waiting)
        took = time.monotonic() - recovered
        back = [self.ask(f"question {n}", "recovery") for n in range(8, 11)]
        say(
            f"   primary back: the waiting task resolves under its id in {took:.1f}s: "
            f"{answered([waiting])}; the next {len(back)}: {answered(back)}"
        )


def value(entry: Sent, field: str) -> Any:
    """A field of what a chain task returned (None for a task that did not return)."""
    return entry.value.get(field) if isinstance(entry.value, dict) else None


def answered(entries: Sequence[Sent]) -> str:
    """Who answered ``entries`` and how, from what each task returned:
    ``5/5 by backup (switch_provider)``, ``1/1 by primary (cache; stale, 3s old)``."""
    kinds: dict[str, int] = {}
    for entry in entries:
        if entry.outcome != RETURNED:
            kind = entry.outcome or "no outcome"
        else:
            flags = [name for name in ("degraded", "stale") if value(entry, name)]
            if value(entry, "stale"):
                flags.append(f"{value(entry, 'age') or 0:.0f}s old")
            how = str(value(entry, "protocol")) + (f"; {', '.join(flags)}" if flags else "")
            kind = f"by {value(entry, 'provider')} ({how})"
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; ".join(f"{count}/{len(entries)} {kind}" for kind, count in kinds.items())


def chain_chapter(
    setup: Setup, tally: Tally, say: Callable[[str], None], stack: ExitStack
) -> ChainChapter | None:
    """The provider-chain chapter, its fault servers started (and stopped with ``stack``), or
    None when its packages are missing."""
    if chain_packages_missing():
        return None
    chapter = ChainChapter(setup, tally, say)
    stack.callback(chapter.stop)
    chapter.start()
    return chapter
