"""Finding and reaching the Redis server that holds resilience state.

The state URL is ``ResilienceManager(redis_url=...)`` if given, else ``RESILIENCE_REDIS_URL``,
else the Celery broker URL when the broker is Redis. Three shapes are accepted:

- one server: ``redis://[[user]:password@]host:port/db``, ``rediss://...`` (TLS),
  ``unix:///path/to/socket?db=N``: whatever redis-py's ``from_url`` reads;
- Redis Cluster: ``redis+cluster://[[user]:password@]host:port[,host:port...]``
  (``rediss+cluster://`` for TLS), the form ``limits`` uses; any reachable node is enough to
  discover the others, and Cluster has database 0 only;
- Sentinel: ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``
  (``rediss+sentinel://`` for TLS to the primary), like kombu's ``sentinel://`` transport and
  ``limits``' ``redis+sentinel://``: the sentinels are asked for the primary of
  ``service_name``, and a failover is followed. The password is the primary's; a password of
  the sentinels themselves goes in ``?sentinel_password=...``.

``connect`` returns a ``StateClient`` (``redis.Redis`` or ``redis.RedisCluster``); every store
uses only commands both serve, and scripts whose keys share the ``KeySpace`` hash tag.

Messages never print a secret (``redact``) and name where the URL came from, so a wrong
``RESILIENCE_REDIS_URL`` is not blamed on a valid broker URL; unreachable servers are told
apart (refused, unknown host, timeout, wrong password) because each needs a different fix.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.cluster import ClusterNode
from redis.exceptions import RedisClusterException
from redis.sentinel import MasterNotFoundError, Sentinel

from resilience_tasks.errors import ConfigurationError, StateUnavailableError

STATE_URL_ENV = "RESILIENCE_REDIS_URL"

#: What ``connect`` returns: a client of one server (or of a Sentinel-monitored primary), or
#: of a Redis Cluster.
StateClient: TypeAlias = redis.Redis | redis.RedisCluster

_SINGLE = ("redis", "rediss", "unix")
_CLUSTER = ("redis+cluster", "rediss+cluster")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_SCHEMES = ", ".join(f"{scheme}://" for scheme in (*_SINGLE, *_CLUSTER, *_SENTINEL))

#: Query-string fields whose value is hidden in messages.
_SECRET_FIELD = re.compile(r"pass|secret|token|auth|credential", re.IGNORECASE)


@dataclass(frozen=True)
class StateURL:
    """A state URL and where it came from (named in every message about it)."""

    url: str
    origin: str = "the state URL"

    def __str__(self) -> str:
        return redact(self.url)


def resolve(redis_url: str | None, broker_url: str | None) -> StateURL:
    """The state URL: ``redis_url``, else ``RESILIENCE_REDIS_URL``, else a Redis broker URL.

    Raises ``ConfigurationError`` naming the setting when none of them is a Redis URL.
    """
    if redis_url:
        return _checked(StateURL(redis_url, "redis_url (ResilienceManager argument)"))
    env = os.environ.get(STATE_URL_ENV)
    if env:
        return _checked(StateURL(env, STATE_URL_ENV))
    if broker_url and _scheme(broker_url) in (*_SINGLE, *_CLUSTER, *_SENTINEL):
        return _checked(StateURL(broker_url, "the Celery broker URL (broker_url)"))
    where = f"the broker is {redact(broker_url)}" if broker_url else "no broker URL is set"
    raise ConfigurationError(
        f"resilience-tasks keeps its state in Redis and {where}: set {STATE_URL_ENV} "
        f"(or redis_url=) to a Redis URL ({_SCHEMES})"
    )


def state_url(broker_url: str | None) -> str:
    """``RESILIENCE_REDIS_URL`` if set, else the broker's URL when it is a Redis URL."""
    return resolve(None, broker_url).url


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def _checked(source: StateURL) -> StateURL:
    if _scheme(source.url) not in (*_SINGLE, *_CLUSTER, *_SENTINEL):
        raise ConfigurationError(
            f"{source.origin} is not a Redis URL: {redact(source.url)!r}; it must start with "
            f"one of {_SCHEMES}"
        )
    return source


def connect(url: str | StateURL, **options: Any) -> StateClient:
    """A client for ``url``; connections open lazily and are re-made after a fork.

    A malformed URL raises ``ConfigurationError`` naming where it came from. A Redis Cluster
    client learns the cluster's layout when it is made, so for ``redis+cluster://`` an
    unreachable cluster raises ``StateUnavailableError`` here rather than at first use.
    """
    source = _checked(url if isinstance(url, StateURL) else StateURL(url))
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("socket_timeout", 10.0)
    options.setdefault("health_check_interval", 30)
    scheme = _scheme(source.url)
    try:
        if scheme in _CLUSTER:
            return _cluster(source, scheme, options)
        if scheme in _SENTINEL:
            return _sentinel(source, scheme, options)
        return redis.Redis.from_url(source.url, **options)
    except (ValueError, UnicodeError) as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(
            f"{source.origin} is malformed ({redact(source.url)}): {_clean(exc)}"
        ) from None
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise StateUnavailableError(unreachable(source, exc)) from None


@dataclass(frozen=True)
class _Parts:
    username: str | None
    password: str | None
    hosts: list[tuple[str, int]]
    path: list[str]
    query: dict[str, str]


def _parts(source: StateURL, default_port: int) -> _Parts:
    """Split ``scheme://[user[:password]@]host:port[,host:port...][/path][?query]``."""
    split = urlsplit(source.url)
    userinfo, _, hostlist = split.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        if not host:
            raise ConfigurationError(
                f"{source.origin} ({redact(source.url)}) names no host in {item!r}; write "
                f"host:port[,host:port...]"
            )
        if port and not port.isdigit():
            raise ConfigurationError(
                f"{source.origin} ({redact(source.url)}): port {port!r} is not a number"
            )
        hosts.append((host, int(port) if port else default_port))
    return _Parts(
        username=unquote(username) or None,
        password=unquote(password) or None,
        hosts=hosts,
        path=[unquote(part) for part in split.path.split("/") if part],
        query=dict(parse_qsl(split.query)),
    )


def _cluster(source: StateURL, scheme: str, options: dict[str, Any]) -> redis.RedisCluster:
    parts = _parts(source, 6379)
    if parts.path not in ([], ["0"]) or parts.query:
        raise ConfigurationError(
            f"{source.origin} ({redact(source.url)}): a Redis Cluster URL is "
            f"redis+cluster://[[user]:password@]host:port[,host:port...] (database 0 only, "
            f"no options)"
        )
    return redis.RedisCluster(
        startup_nodes=[
            ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in parts.hosts
        ],
        username=parts.username,
        password=parts.password,
        ssl=scheme.startswith("rediss"),
        **options,
    )


def _sentinel(source: StateURL, scheme: str, options: dict[str, Any]) -> redis.Redis:
    parts = _parts(source, 26379)
    if (
        not parts.path
        or len(parts.path) > 2
        or (len(parts.path) == 2 and not parts.path[1].isdigit())
    ):
        raise ConfigurationError(
            f"{source.origin} ({redact(source.url)}): a Sentinel URL is "
            f"redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]"
        )
    unknown = set(parts.query) - {"sentinel_password", "sentinel_username"}
    if unknown:
        raise ConfigurationError(
            f"{source.origin} ({redact(source.url)}): unknown option(s) {sorted(unknown)}; "
            f"a Sentinel URL takes sentinel_password and sentinel_username"
        )
    sentinel_auth = {
        name.removeprefix("sentinel_"): value for name, value in parts.query.items() if value
    }
    timeouts = {
        name: options[name]
        for name in ("socket_connect_timeout", "socket_timeout")
        if name in options
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        parts.hosts, sentinel_kwargs={**timeouts, **sentinel_auth}, **timeouts
    )
    primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.path[0],
        db=int(parts.path[1]) if len(parts.path) == 2 else 0,
        username=parts.username,
        password=parts.password,
        ssl=scheme.startswith("rediss"),
        **options,
    )
    return primary


def ensure_reachable(client: StateClient, url: str | StateURL) -> None:
    """Ping once; on failure raise one clear ``StateUnavailableError`` instead of a traceback."""
    try:
        client.ping()
    except (redis.RedisError, RedisClusterException, OSError, UnicodeError) as exc:
        # UnicodeError: a host name that cannot even be encoded for DNS ('a..b')
        source = url if isinstance(url, StateURL) else StateURL(url)
        raise StateUnavailableError(unreachable(source, exc)) from None


def unreachable(source: StateURL, error: BaseException) -> str:
    """One line saying why the state store at ``source`` cannot be used, and what to do."""
    cause = _cause(error)
    where = f"cannot reach the resilience state store at {redact(source.url)}"
    if isinstance(error, redis.AuthenticationError) or _says(
        error, "WRONGPASS", "NOAUTH", "invalid password", "invalid username-password"
    ):
        return (
            f"{where}: the server refused the credentials ({_clean(error)}). Check the user "
            f"and password in {source.origin}."
        )
    if (
        isinstance(cause, socket.gaierror)
        or isinstance(error, UnicodeError)
        or _says(error, "Name or service not known")
    ):
        return (
            f"{where}: the host name cannot be resolved ({_clean(error)}). Check the host in "
            f"{source.origin}."
        )
    if isinstance(error, redis.TimeoutError) or isinstance(cause, TimeoutError):
        return (
            f"{where}: no answer in time ({_clean(error)}). Check that the host and port in "
            f"{source.origin} are a Redis server's and that no firewall drops the traffic."
        )
    if isinstance(cause, ConnectionRefusedError) or _says(error, "Connection refused"):
        return (
            f"{where}: connection refused ({_clean(error)}). Start Redis there or point "
            f"{source.origin} at a running server."
        )
    if isinstance(error, MasterNotFoundError):
        return (
            f"{where}: the sentinels know no primary for that service ({_clean(error)}). "
            f"Check the sentinel addresses and the service name in {source.origin}."
        )
    if isinstance(error, RedisClusterException):
        return (
            f"{where}: no cluster node answered ({_clean(error)}). Check the node addresses "
            f"in {source.origin} and that the cluster is up."
        )
    return f"{where}: {_clean(error)}. Check {source.origin} and the server."


def _cause(error: BaseException) -> BaseException | None:
    """The socket error underneath a redis-py error, if any."""
    seen = error.__cause__ or error.__context__
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _says(error: BaseException, *phrases: str) -> bool:
    text = str(error).lower()
    return any(phrase.lower() in text for phrase in phrases)


def _clean(error: BaseException) -> str:
    """The error's text on one line, without a trailing full stop and without secrets."""
    text = " ".join(str(error).split()).rstrip(".") or type(error).__name__
    return _hide_urls(text)


def _hide_urls(text: str) -> str:
    return re.sub(r"[a-z+]+://\S+", lambda match: redact(match.group(0)), text)


def redact(url: str | None) -> str:
    """The URL without its secrets (the userinfo password and any password-like query field),
    for messages and logs."""
    if not url:
        return repr(url) if url is None else ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    netloc_end = len(rest)
    for char in "/?#":
        found = rest.find(char)
        if found != -1:
            netloc_end = min(netloc_end, found)
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"***@{hosts}"
        if not user and ":" in userinfo:
            netloc = f":***@{hosts}"
    path, qsep, query = tail.partition("?")
    if qsep:
        query, hsep, fragment = query.partition("#")
        fields = [
            (name, "***" if _SECRET_FIELD.search(name) else value)
            for name, value in parse_qsl(query, keep_blank_values=True)
        ]
        tail = f"{path}?{urlencode(fields, safe='*')}" + (f"#{fragment}" if hsep else "")
    return f"{scheme}://{netloc}{tail}"
