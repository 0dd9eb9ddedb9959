"""The breaker's atomic operations on ``redis.asyncio``: the same scripts, keys and arguments.

Nothing here blocks the event loop: every operation is one awaited script call. A
``redis.asyncio`` client is bound to the event loop it first ran on, so
``RedisFleetStorage.asyncio_storage()`` keeps one ``AsyncFleetStorage`` per loop; when the user
gave no async client, ``async_twin`` builds one with the sync client's connection settings (host,
port, db, credentials, TLS, timeouts), which is what a caller of ``await breaker.call_async``
expects from a breaker already configured for Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.connection as aioconnection

from resilience_tasks.breaker import records, scripts
from resilience_tasks.breaker.records import Admission, Verdict
from resilience_tasks.errors import ConfigurationError
from resilience_tasks.policies import BreakerPolicy

if TYPE_CHECKING:
    from resilience_tasks.breaker.storage import RedisFleetStorage

#: Connection settings that mean the same to the sync and the asyncio connection classes.
_PORTABLE = frozenset(
    {
        "host", "port", "db", "path", "username", "password", "client_name", "protocol",
        "socket_timeout", "socket_connect_timeout", "socket_keepalive",
        "socket_keepalive_options", "retry_on_timeout", "health_check_interval",
        "decode_responses", "encoding", "encoding_errors", "credential_provider",
        "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path",
        "ssl_ca_data", "ssl_check_hostname", "ssl_password", "ssl_min_version", "ssl_ciphers",
    }
)  # fmt: skip

_CONNECTIONS: dict[str, type[aioconnection.AbstractConnection]] = {
    "Connection": aioconnection.Connection,
    "SSLConnection": aioconnection.SSLConnection,
    "UnixDomainSocketConnection": aioconnection.UnixDomainSocketConnection,
}


def async_twin(client: redis.Redis | redis.RedisCluster) -> aioredis.Redis | aioredis.RedisCluster:
    """A ``redis.asyncio`` client with the connection settings of the sync ``client``."""
    if isinstance(client, redis.RedisCluster):
        settings = {
            k: v for k, v in client.nodes_manager.connection_kwargs.items() if k in _PORTABLE
        }
        settings.pop("host", None)
        settings.pop("port", None)
        nodes = [aioredis.cluster.ClusterNode(n.host, n.port) for n in client.get_nodes()]  # type: ignore[no-untyped-call]
        return aioredis.RedisCluster(startup_nodes=nodes, **settings)
    pool = getattr(client, "connection_pool", None)
    connection_class = None if pool is None else _CONNECTIONS.get(pool.connection_class.__name__)
    if pool is None or connection_class is None:
        raise ConfigurationError(
            f"cannot derive an asyncio client from {type(client).__name__}: pass "
            f"RedisFleetStorage(..., async_client=redis.asyncio....) for call_async"
        )
    settings = {k: v for k, v in pool.connection_kwargs.items() if k in _PORTABLE}
    # from_pool: the client owns its pool, so aclose() closes the connections too
    return aioredis.Redis.from_pool(
        aioredis.ConnectionPool(connection_class=connection_class, **settings)
    )


class AsyncFleetStorage:
    """The atomic breaker operations of one ``RedisFleetStorage``, awaited on one event loop."""

    def __init__(
        self, storage: RedisFleetStorage, client: aioredis.Redis | aioredis.RedisCluster
    ) -> None:
        self._storage = storage
        self.client = client
        self._admit = client.register_script(scripts.ADMIT)
        self._failure = client.register_script(scripts.RECORD_FAILURE)
        self._success = client.register_script(scripts.RECORD_SUCCESS)

    async def admit(self, policy: BreakerPolicy, token: str) -> Admission:
        keys, args = self._storage.admit_request(policy, token)
        reply: Any = await self._admit(keys, args)
        return records.admission(reply, token, slow=reply[5])

    async def release_trial(self, token: str) -> None:
        await self.client.zrem(self._storage.leases_key, token)

    async def record_failure(
        self, policy: BreakerPolicy, token: str, slow: bool = False
    ) -> Verdict:
        keys, args = self._storage.failure_request(policy, token, slow)
        reply: Any = await self._failure(keys, args)
        return records.failure(reply, slow)

    async def record_success(
        self, policy: BreakerPolicy, token: str, slow: bool = False
    ) -> Verdict:
        keys, args = self._storage.success_request(policy, token, slow)
        reply: Any = await self._success(keys, args)
        return records.success(reply, slow)
