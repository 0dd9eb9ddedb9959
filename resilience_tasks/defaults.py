"""The process-wide default manager the decorators use when they are given none.

The first ``ResilienceManager`` a process constructs becomes the default, so a team that makes
one manager can decorate plain functions with ``@circuit_breaker("mcp_call")`` and share the
fleet state its tasks use; ``set_default_manager`` picks another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resilience_tasks.errors import ConfigurationError

if TYPE_CHECKING:
    from resilience_tasks.manager import ResilienceManager

_DEFAULT: ResilienceManager | None = None


def set_default_manager(manager: ResilienceManager | None) -> None:
    """Make ``manager`` the one the decorators use when given none (None forgets it)."""
    global _DEFAULT
    _DEFAULT = manager


def offer_default(manager: ResilienceManager) -> None:
    """A manager was constructed: it becomes the default if there is none yet."""
    if _DEFAULT is None:
        set_default_manager(manager)


def default_manager() -> ResilienceManager:
    if _DEFAULT is None:
        raise ConfigurationError(
            "no ResilienceManager in this process: construct one (the first becomes the "
            "default), call set_default_manager(manager), or pass manager= to the decorator"
        )
    return _DEFAULT
