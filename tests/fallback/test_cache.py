"""The result cache on the real Redis: JSON round trips with the server's time, TTLs, what is
not cached, one entry per arguments, and the asyncio twins."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import pytest
import redis
import redis.asyncio as aioredis

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback.cache import ResultCache
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL, wait_for


@pytest.fixture
def cache(redis_client: redis.Redis, prefix: str) -> ResultCache:
    return ResultCache(redis_client, KeySpace(prefix), "answer")


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def test_a_result_round_trips_with_its_provider_and_time(
    redis_client: redis.Redis, cache: ResultCache
) -> None:
    before = server_time(redis_client)
    value = {"text": "42", "tokens": [1, 2.5, None, True], "nested": {"é": "ü"}}
    assert cache.put(("q", 1), {"lang": "en"}, value, ttl=60, provider="primary")
    after = server_time(redis_client)
    hit = cache.get(["q", 1], {"lang": "en"})  # a list of the same items: the same entry
    assert hit is not None
    assert hit.value == value
    assert hit.provider == "primary"
    assert before <= hit.stored_at <= after
    assert hit.age >= 0


def test_the_entry_is_one_json_string_with_a_ttl(
    redis_client: redis.Redis, prefix: str, cache: ResultCache
) -> None:
    cache.put(("q",), {}, [1, 2], ttl=2.5, provider="p")
    key = cache.key(("q",), {})
    assert key == KeySpace(prefix).cached_result("answer", str(cache.digest(("q",), {})))
    assert redis_client.type(key) == b"string"
    assert 0 < redis_client.pttl(key) <= 2500
    entry = json.loads(redis_client.get(key) or b"")
    assert set(entry) == {"stored_at", "provider", "value"}
    assert entry["value"] == [1, 2] and entry["provider"] == "p"


def test_the_digest_is_the_sha256_of_the_canonical_json(cache: ResultCache) -> None:
    args, kwargs = ("a", 1), {"z": 1, "a": [1, {"y": 2, "b": 3}]}
    canonical = json.dumps([list(args), kwargs], sort_keys=True, separators=(",", ":"))
    assert cache.digest(args, kwargs) == hashlib.sha256(canonical.encode()).hexdigest()
    assert cache.digest(args, {"a": [1, {"b": 3, "y": 2}], "z": 1}) == cache.digest(args, kwargs)


def test_different_arguments_are_different_entries(
    redis_client: redis.Redis, prefix: str, cache: ResultCache
) -> None:
    assert cache.put(("a",), {}, "A", ttl=60, provider="p")
    assert cache.put(("b",), {}, "B", ttl=60, provider="p")
    assert cache.put(("a",), {"x": 1}, "Ax", ttl=60, provider="q")
    hits = [cache.get(("a",), {}), cache.get(("b",), {}), cache.get(("a",), {"x": 1})]
    assert [(hit.value, hit.provider) for hit in hits if hit] == [
        ("A", "p"),
        ("B", "p"),
        ("Ax", "q"),
    ]
    assert cache.get(("c",), {}) is None
    assert ResultCache(redis_client, KeySpace(prefix), "other").get(("a",), {}) is None


def test_a_newer_result_replaces_the_older(cache: ResultCache) -> None:
    cache.put(("a",), {}, "old", ttl=60, provider="p")
    cache.put(("a",), {}, "new", ttl=60, provider="q")
    hit = cache.get(("a",), {})
    assert hit is not None and (hit.value, hit.provider) == ("new", "q")


def test_unserializable_arguments_are_not_cached(
    cache: ResultCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilience_tasks.fallback.cache")
    assert cache.digest((object(),), {}) is None
    assert cache.digest(("a",), {"when": {1, 2}}) is None
    assert cache.digest((float("nan"),), {}) is None  # not JSON
    assert not cache.put((object(),), {}, "v", ttl=60, provider="p")
    assert cache.get((object(),), {}) is None
    assert "not cached" in caplog.text


def test_unserializable_values_are_skipped(
    redis_client: redis.Redis, cache: ResultCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilience_tasks.fallback.cache")
    for value in (object(), {"when": {1, 2}}, b"bytes", float("inf")):
        assert not cache.put(("a",), {}, value, ttl=60, provider="p")
    assert cache.get(("a",), {}) is None
    key = cache.key(("a",), {})
    assert key is not None and not redis_client.exists(key)
    assert "is not JSON; not cached" in caplog.text


def test_oversized_values_are_skipped(redis_client: redis.Redis, prefix: str) -> None:
    small = ResultCache(redis_client, KeySpace(prefix), "answer", max_bytes=100)
    assert small.put(("a",), {}, "x" * 10, ttl=60, provider="p")
    assert not small.put(("b",), {}, "x" * 200, ttl=60, provider="p")
    assert small.get(("b",), {}) is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "60"])
def test_a_bad_ttl_is_refused(cache: ResultCache, ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        cache.put(("a",), {}, 1, ttl=ttl, provider="p")  # type: ignore[arg-type]


def test_the_age_grows_and_the_entry_expires(cache: ResultCache) -> None:
    cache.put(("a",), {}, 1, ttl=0.5, provider="p")
    first = cache.get(("a",), {})
    assert first is not None

    def older() -> bool:
        hit = cache.get(("a",), {})
        return hit is None or hit.age > first.age

    wait_for(older)
    wait_for(lambda: cache.get(("a",), {}) is None)


def test_an_unreadable_entry_is_a_miss(redis_client: redis.Redis, cache: ResultCache) -> None:
    key = cache.key(("a",), {})
    assert key is not None
    redis_client.set(key, b"not json", ex=60)
    assert cache.get(("a",), {}) is None


def test_async_twins(redis_client: redis.Redis, cache: ResultCache) -> None:
    async def main() -> None:
        aclient = aioredis.Redis.from_url(REDIS_URL)
        try:
            assert await cache.put_async(aclient, ("a",), {"k": 2}, {"v": 1}, ttl=60, provider="p")
            assert not await cache.put_async(aclient, ("a",), {}, object(), ttl=60, provider="p")
            hit = await cache.get_async(aclient, ("a",), {"k": 2})
            assert hit is not None and hit.value == {"v": 1} and hit.provider == "p"
            assert await cache.get_async(aclient, ("b",), {}) is None
            assert await cache.get_async(aclient, (object(),), {}) is None
        finally:
            await aclient.aclose()

    asyncio.run(main())
    hit = cache.get(("a",), {"k": 2})  # the same entry as the sync path
    assert hit is not None and hit.value == {"v": 1}
