"""The kinds of resource a provider chain can stand for; each has its default protocol order."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from resilience_tasks.errors import ConfigurationError


class ResourceType(StrEnum):
    """What a chain depends on. The type picks the chain's default protocols (``table``)."""

    API_QUOTA = "api_quota"  # an LLM or other metered API: quotas, 429s, cost
    MCP_SERVER = "mcp_server"  # a tool server
    DATABASE = "database"  # a database: never served stale by default
    NETWORK = "network"  # an HTTP endpoint or other remote service
    MEMORY = "memory"  # work bounded by the worker's memory
    CPU = "cpu"
    DISK = "disk"

    @classmethod
    def of(cls, value: Any, owner: str = "providers", field: str = "resource_type") -> ResourceType:
        """``value`` as a ``ResourceType`` (a member or its name/value, any case)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if value.lower() in (member.value, member.name.lower()):
                    return member
        known = ", ".join(member.name for member in cls)
        raise ConfigurationError(f"{owner}.{field} must be a ResourceType ({known}), got {value!r}")
