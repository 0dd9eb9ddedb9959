"""An OpenAI-compatible chat provider on the official ``openai`` client.

The client's own retries are off (``max_retries=0``): retrying, backing off and falling back
belong to the resilience layer, which would otherwise multiply the client's attempts by its
own. Each call goes through ``with_raw_response`` so the response's quota headers
(``x-ratelimit-*``) and the token usage are reported for the provider's resource. A 429 becomes
``RateLimitedError`` carrying the server's ``Retry-After`` (a wait, not a failure); timeouts,
connection errors and 5xx answers propagate as the client's exceptions, which the provider's
breaker counts as failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from resilience_tasks.errors import ConfigurationError, OutsideTaskError, ResilienceError
from resilience_tasks.fallback.provider import Provider
from resilience_tasks.quota.provider import RateLimitedError, parse_retry_after
from resilience_tasks.quota.report import report_quota, report_usage

if TYPE_CHECKING:
    import openai
    from openai._legacy_response import LegacyAPIResponse
    from openai.types.chat import ChatCompletion

#: What a missing ``openai`` package is met with.
INSTALL_HINT = "openai_chat needs the openai package: pip install 'resilience-tasks[openai]'"

Prompt = str | Sequence[Mapping[str, Any]]


class EmptyCompletionError(ResilienceError):
    """The provider answered without text (no choice, or a refusal or tool call only).

    A failure of the call, so the chain can take the next provider.
    """


def _messages(prompt: Prompt) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


def _report(raw: LegacyAPIResponse[ChatCompletion]) -> str:
    """Report the response's quota headers and token usage; the completion's text."""
    completion = raw.parse()
    # Outside a resilient call there is nothing to report to; the call itself still works.
    with contextlib.suppress(OutsideTaskError):
        report_quota(dict(raw.headers))
        if completion.usage is not None:
            report_usage(
                tokens_in=completion.usage.prompt_tokens,
                tokens_out=completion.usage.completion_tokens,
            )
    content = completion.choices[0].message.content if completion.choices else None
    if content is None:
        reason = completion.choices[0].finish_reason if completion.choices else "no choices"
        raise EmptyCompletionError(f"the completion has no text content ({reason})")
    return content


def _rate_limited(name: str, error: openai.RateLimitError) -> RateLimitedError:
    headers = {key: value for key, value in error.response.headers.items()}
    return RateLimitedError(f"{name}: {error}", parse_retry_after(headers), headers)


def openai_chat(
    name: str,
    *,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 30.0,
    cost: float = 0.0,
    quality: int = 0,
    degraded: bool = False,
    asynchronous: bool = False,
    client: openai.OpenAI | openai.AsyncOpenAI | None = None,
    **provider_options: Any,
) -> Provider:
    """A ``Provider`` whose ``fn(prompt, **create_kwargs)`` returns the completion's text.

    ``prompt`` is a string (one user message) or a list of chat messages; ``create_kwargs`` go
    to ``chat.completions.create`` (``temperature``, ``max_tokens``, even ``model``).
    ``timeout`` bounds each call, in seconds. ``asynchronous=True`` makes ``fn`` a coroutine
    function on ``AsyncOpenAI`` (one client per event loop, as its connections belong to the
    loop that opened them). A ``client`` of your own is used with its retries turned off; its
    kind decides whether ``fn`` is asynchronous. Without ``api_key`` the client reads
    ``OPENAI_API_KEY``; a ``base_url`` of a server that wants no key needs neither.
    ``provider_options`` are ``Provider`` fields (``prices``, ``breaker``, ``rate_limit``...).
    """
    try:
        import openai
    except ImportError as error:
        raise ConfigurationError(INSTALL_HINT) from error
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"openai_chat({name!r}).model must be a model name, got {model!r}")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"openai_chat({name!r}).timeout must be seconds > 0, got {timeout!r}"
        )
    if client is not None:
        if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
            raise ConfigurationError(
                f"openai_chat({name!r}).client must be an openai.OpenAI or AsyncOpenAI, "
                f"got {client!r}"
            )
        asynchronous = isinstance(client, openai.AsyncOpenAI)
        client = client.with_options(max_retries=0)
    if api_key is None:
        api_key = os.environ.get("OPENAI_API_KEY")
        if api_key is None and client is None:
            if base_url is None:
                raise ConfigurationError(
                    f"openai_chat({name!r}).api_key is missing: pass it or set OPENAI_API_KEY"
                )
            api_key = "unused"  # a local OpenAI-compatible server that takes no key
    settings: dict[str, Any] = {
        "base_url": base_url,
        "api_key": api_key,
        "timeout": timeout,
        "max_retries": 0,
    }

    if not asynchronous:
        own = client if isinstance(client, openai.OpenAI) else None
        per_process: dict[int, openai.OpenAI] = {}

        def sync_client() -> openai.OpenAI:
            # Opened on first use in each process: a prefork worker never inherits its parent's
            # connections.
            if own is not None:
                return own
            pid = os.getpid()
            if pid not in per_process:
                per_process.clear()
                per_process[pid] = openai.OpenAI(**settings)
            return per_process[pid]

        def complete(prompt: Prompt, **create_kwargs: Any) -> str:
            create_kwargs.setdefault("model", model)
            try:
                raw = sync_client().chat.completions.with_raw_response.create(
                    messages=_messages(prompt),  # type: ignore[arg-type]
                    **create_kwargs,
                )
            except openai.RateLimitError as error:
                raise _rate_limited(name, error) from error
            return _report(raw)

        return Provider(
            name, complete, cost=cost, quality=quality, degraded=degraded, **provider_options
        )

    given = client if isinstance(client, openai.AsyncOpenAI) else None
    per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
        weakref.WeakKeyDictionary()
    )

    def async_client() -> openai.AsyncOpenAI:
        if given is not None:
            return given
        loop = asyncio.get_running_loop()
        if loop not in per_loop:
            per_loop[loop] = openai.AsyncOpenAI(**settings)
        return per_loop[loop]

    async def complete_async(prompt: Prompt, **create_kwargs: Any) -> str:
        create_kwargs.setdefault("model", model)
        try:
            raw = await async_client().chat.completions.with_raw_response.create(
                messages=_messages(prompt),  # type: ignore[arg-type]
                **create_kwargs,
            )
        except openai.RateLimitError as error:
            raise _rate_limited(name, error) from error
        return _report(raw)

    return Provider(
        name, complete_async, cost=cost, quality=quality, degraded=degraded, **provider_options
    )
