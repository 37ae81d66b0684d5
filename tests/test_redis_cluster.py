"""REDIS_CLUSTER=true: django-redis on a RedisCluster, for the store, the cache and the
throttle alike (orderpipe/redis_cluster.py), against the session's real 3-primary cluster."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django_redis import get_redis_connection
from redis.cluster import RedisCluster
from rest_framework.test import APIClient

from orderpipe.redis_cluster import CLUSTER_RETRIES

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def keys_per_primary(client: RedisCluster, prefix: str) -> dict[int, int]:
    return {
        node.port: len(list(client.scan_iter(match=f"{prefix}:*", target_nodes=node)))
        for node in client.get_primaries()
    }


def test_get_redis_connection_is_one_shared_redis_cluster(live_redis_cluster, settings) -> None:
    client = get_redis_connection("default")

    assert isinstance(client, RedisCluster)
    assert get_redis_connection("default") is client
    assert len(client.get_primaries()) == 3
    assert client.retry.get_retries() == CLUSTER_RETRIES
    kwargs = client.nodes_manager.connection_kwargs
    assert kwargs["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT
    assert kwargs["socket_connect_timeout"] == settings.REDIS_SOCKET_TIMEOUT
    assert client.ping(target_nodes=RedisCluster.PRIMARIES) is True


def test_cache_reads_and_writes_keys_spread_over_every_primary(
    live_redis_cluster: RedisCluster, key_prefix: str
) -> None:
    names = [f"item-{i}" for i in range(60)]

    for i, name in enumerate(names):
        cache.set(name, {"n": i}, timeout=300)
    cache.set_many({f"count-{i}": i for i in range(20)}, timeout=300)

    assert [cache.get(name) for name in names] == [{"n": i} for i in range(60)]
    assert cache.get_many([*names[:30], "missing"]) == {
        name: {"n": i} for i, name in enumerate(names[:30])
    }
    assert [cache.incr(f"count-{i}", 5) for i in range(20)] == [i + 5 for i in range(20)]
    # KEYS on every primary, not just one (names come back with the test's "test:<id>" prefix
    # half stripped: django-redis's reverse_key splits at the first two colons).
    assert len(cache.keys("count-*")) == 20
    per_node = keys_per_primary(live_redis_cluster, key_prefix)
    assert sum(per_node.values()) == 80
    assert all(count > 0 for count in per_node.values()), per_node

    cache.delete_many(names[:40])
    assert cache.delete_pattern("count-*") == 20
    assert cache.get_many(names) == {name: {"n": i + 40} for i, name in enumerate(names[40:])}
    assert sum(keys_per_primary(live_redis_cluster, key_prefix).values()) == 20


def test_throttle_counts_in_the_cluster_cache(
    live_redis_cluster: RedisCluster, key_prefix: str, settings
) -> None:
    settings.STATS_THROTTLE_RATE = "3/minute"
    api = APIClient()

    statuses = [api.get("/stats/global").status_code for _ in range(5)]
    throttled = api.get("/stats/top-buyers")

    # The throttle lets requests through when its cache fails: 429s prove it counted there.
    assert statuses == [200, 200, 200, 429, 429]
    assert throttled.status_code == 429
    body = throttled.json()
    assert list(body) == ["detail"]
    assert re.fullmatch(
        r"Request was throttled\. Expected available in \d+ seconds?\.", body["detail"]
    )
    assert list(live_redis_cluster.scan_iter(match=f"{key_prefix}:*throttle_stats_*")) != []


@pytest.mark.parametrize("shards", [3, 8, 16])
def test_every_shard_count_spreads_evenly_over_the_primaries(
    live_redis_cluster: RedisCluster, shards: int
) -> None:
    """Each shard's tag hashes to the middle of its share of the slots, so primaries holding
    contiguous slot ranges (as the session's cluster does) get as many shards as one another,
    give or take one, whatever the prefix (the default one included)."""
    from stats.store import AggregateStore
    from tests.ingestion_helpers import make_order, prefix_keys

    client = live_redis_cluster
    for prefix in ("orderpipe", "shop", "test-spread"):
        prefix = f"spread-{shards}-{prefix}"
        store = AggregateStore(client, prefix=prefix, shards=shards)
        users = {store.shard_of(f"U{n}"): f"U{n}" for n in range(2000)}
        assert len(users) == shards
        try:
            store.apply_orders([make_order(f"O-{u}", u, 100) for u in users.values()])
            tags_per_primary = {
                node.name: {
                    key.split(b"}")[0]
                    for key in client.scan_iter(match=f"{{{prefix}:*", target_nodes=node)
                }
                for node in client.get_primaries()
            }
            counts = sorted(len(tags) for tags in tags_per_primary.values())
            assert sum(counts) == shards
            assert counts[-1] - counts[0] <= 1, (prefix, counts)
        finally:
            for key in prefix_keys(client, prefix):
                client.delete(key)
