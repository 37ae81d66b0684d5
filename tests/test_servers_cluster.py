"""The 3-primary Valkey cluster the suite, the chaos run and the benchmarks stand on.

Checked against real node processes: the cluster forms, hash tags spread keys over every
primary, and a stopped primary takes the cluster down until its restart brings it back.
"""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from devtools.servers import (
    CLUSTER_SLOTS,
    RedisServer,
    ValkeyCluster,
    prefix_spread_over_every_primary,
)
from stats.store import AggregateStore
from tests.ingestion_helpers import wait_until

pytestmark = pytest.mark.integration


def key_on_each_primary(client: RedisCluster, prefix: str) -> dict[int, str]:
    """One key per primary port, each under its own hash tag."""
    found: dict[int, str] = {}
    for tag in range(1000):
        key = f"{prefix}:{{{tag}}}:k"
        found.setdefault(client.get_node_from_key(key).port, key)
        if len(found) == len(client.get_primaries()):
            return found
    raise AssertionError("no key found for some primary")


def test_cluster_is_ok_with_the_slots_split_evenly_over_three_primaries(redis_cluster) -> None:
    client = RedisCluster.from_url(redis_cluster.url)
    primaries = client.get_primaries()

    infos = client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
    memory = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
    slots = sorted((first, last) for first, last, *_ in client.execute_command("CLUSTER SLOTS"))

    assert len(primaries) == 3
    assert {info["cluster_state"] for info in infos.values()} == {"ok"}
    assert {int(info["cluster_slots_ok"]) for info in infos.values()} == {CLUSTER_SLOTS}
    assert {int(info["cluster_known_nodes"]) for info in infos.values()} == {3}
    # Contiguous, all 16384 slots, a third each.
    assert [first for first, _ in slots] == [0] + [last + 1 for _, last in slots[:-1]]
    assert slots[-1][1] == CLUSTER_SLOTS - 1
    assert {last - first + 1 for first, last in slots} <= {5461, 5462}
    assert {info["maxmemory_policy"] for info in memory.values()} == {"noeviction"}
    client.close()


def test_cluster_nodes_keep_an_aof_fsynced_on_every_write(redis_cluster) -> None:
    if not isinstance(redis_cluster, ValkeyCluster):
        pytest.skip("TEST_REDIS_CLUSTER_URL names a cluster this suite did not configure")
    for node in redis_cluster.nodes:
        with node.admin() as client:
            config = client.config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
        assert node.config_file.exists()


def test_keys_with_different_hash_tags_land_on_all_three_primaries(
    redis_cluster, key_prefix: str
) -> None:
    client = RedisCluster.from_url(redis_cluster.url)
    for shard in range(16):
        client.set(f"{key_prefix}:{{{key_prefix}:{shard}}}:total", shard)

    per_node = {
        node.port: len(list(client.scan_iter(match=f"{key_prefix}:*", target_nodes=node)))
        for node in client.get_primaries()
    }

    assert sum(per_node.values()) == 16
    assert all(count > 0 for count in per_node.values()), per_node
    client.delete(*client.scan_iter(match=f"{key_prefix}:*"))
    client.close()


def test_a_prefix_is_chosen_whose_eight_shards_cover_every_primary(
    redis_cluster, key_prefix: str
) -> None:
    client = RedisCluster.from_url(redis_cluster.url)
    primaries = {node.name for node in client.get_primaries()}

    prefix = prefix_spread_over_every_primary(client, f"{key_prefix}-", 8)

    store = AggregateStore(client, prefix=prefix, shards=8)
    nodes = [client.get_node_from_key(store.key("gen", shard=s)).name for s in range(8)]
    assert prefix.startswith(f"{key_prefix}-")
    assert set(nodes) == primaries
    client.close()


def test_a_stopped_primary_takes_the_cluster_down_until_its_restart(
    private_redis_cluster: ValkeyCluster,
) -> None:
    cluster = private_redis_cluster
    client = RedisCluster.from_url(cluster.url, socket_timeout=2, socket_connect_timeout=2)
    keys = key_on_each_primary(client, "chaos")
    for port, key in keys.items():
        client.set(key, port)
    stopped, live = cluster.nodes[1], cluster.nodes[0]

    cluster.stop_node(1)
    # Its slots have no server: the client cannot connect to their owner.
    with pytest.raises(redis.ConnectionError):
        client.get(keys[stopped.port])
    # Once the other primaries declare it failed (node timeout), every slot is refused:
    # with cluster-require-full-coverage (the default) the cluster as a whole is down.
    wait_until(lambda: live.cluster_info()["cluster_state"] == "fail", timeout=15)
    with pytest.raises(redis.exceptions.ClusterDownError, match="The cluster is down"):
        client.get(keys[live.port])

    cluster.start_node(1)

    assert {node.cluster_info()["cluster_state"] for node in cluster.nodes} == {"ok"}
    # Same port, same nodes.conf, same AOF: the same primary with its data.
    assert {port: int(client.get(key)) for port, key in keys.items()} == {
        port: port for port in keys
    }
    client.close()


def test_redis_server_runs_without_eviction_explicitly(redis_server) -> None:
    argv = RedisServer(port=1).command()

    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    client = redis.Redis.from_url(redis_server.url)
    assert client.info("memory")["maxmemory_policy"] == "noeviction"
    client.close()
