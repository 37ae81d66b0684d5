"""Redis Cluster behind django-redis (``REDIS_CLUSTER=true``).

django-redis builds a ``redis.Redis`` on a connection pool per URL, and has no cluster
client of its own; but its connection factory and cache client are pluggable. A cluster
needs one ``redis.cluster.RedisCluster`` per URL instead: it discovers the nodes from the
URL's node, keeps a pool per node and the slot map, and follows ``MOVED``/``ASK`` itself.
With ``REDIS_CLUSTER=true`` the settings select the two classes below, so
``get_redis_connection("default")`` (the aggregate store), the Django cache and DRF's
throttle (which counts in the cache) all use the same ``RedisCluster``.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any, ClassVar, cast

from django_redis.client import DefaultClient
from django_redis.client.default import _main_exceptions
from django_redis.exceptions import ConnectionInterrupted
from django_redis.pool import ConnectionFactory
from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

# How often a command failing with a connection error, a timeout or CLUSTERDOWN is sent again
# after the client re-reads the slot map. redis-py's default (10, with no pause between
# attempts) turns a primary that stops answering into 11 x REDIS_SOCKET_TIMEOUT of waiting;
# with 1, a moved primary or a dropped connection is still followed, and a dead one
# surfaces after 2 x REDIS_SOCKET_TIMEOUT (a refused connection at once), so the consumer's
# outage handling takes over. (A pipeline re-sends each of its commands for a node that timed
# out one by one, each with this retry: about timeout x (1 + 2 x its commands there).) A
# command that timed out may still run when the node wakes up: the scripts are idempotent.
CLUSTER_RETRIES = 1


class ClusterConnectionFactory(ConnectionFactory):
    """Hands out one shared ``RedisCluster`` per URL (django-redis's pools are per URL too).

    Options read: ``SOCKET_TIMEOUT``, ``SOCKET_CONNECT_TIMEOUT``, ``PASSWORD``/``USERNAME``
    (or the URL's), ``CONNECTION_POOL_KWARGS`` (``max_connections`` is per node; redis-py's
    cluster client ignores ``health_check_interval``), ``REDIS_CLIENT_KWARGS`` (any other
    ``RedisCluster`` argument, e.g. a ``retry``).
    """

    _clusters: ClassVar[dict[str, RedisCluster]] = {}
    _clusters_lock: ClassVar[threading.Lock] = threading.Lock()

    # django-redis types its connections as redis.Redis, which RedisCluster does not extend.
    def get_connection(self, params: dict[str, Any]) -> RedisCluster:  # type: ignore[override]
        url = params["url"]
        with self._clusters_lock:
            client = self._clusters.get(url)
            if client is None:
                client = self._clusters[url] = self.make_cluster(params)
        return client

    def make_cluster(self, params: dict[str, Any]) -> RedisCluster:
        kwargs = {name: value for name, value in params.items() if name != "url"}
        kwargs.update(self.pool_cls_kwargs)
        kwargs["retry"] = Retry(NoBackoff(), CLUSTER_RETRIES)
        kwargs.update(self.redis_client_cls_kwargs)
        return RedisCluster.from_url(params["url"], **kwargs)

    def disconnect(self, connection: RedisCluster) -> None:  # type: ignore[override] # as above
        connection.disconnect_connection_pools()

    @classmethod
    def close_all(cls) -> None:
        """Close and forget every cluster client (tests: each test starts from scratch)."""
        with cls._clusters_lock:
            for client in cls._clusters.values():
                client.close()
            cls._clusters.clear()


class ClusterClient(DefaultClient):
    """django-redis's client with the two calls that assume one server made cluster-wide.

    Everything else already works on ``RedisCluster``: multi-key ``DELETE`` is split by slot,
    ``SCAN`` (``iter_keys``, ``delete_pattern``) and ``FLUSHDB`` (``clear``) visit every
    primary, pipelines (``set_many``) send one batch per node.
    """

    def get_many(
        self,
        keys: Collection[str],
        version: int | None = None,
        client: Redis | None = None,
    ) -> dict[str, Any]:
        """``MGET`` refuses keys of different slots; ``mget_nonatomic`` asks each node."""
        if client is None:
            client = self.get_client(write=False)
        if not keys:
            return {}
        map_keys = {self.make_key(key, version=version): key for key in keys}
        try:
            values = _as_cluster(client).mget_nonatomic(list(map_keys))
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return {
            map_keys[key]: self.decode(value)
            for key, value in zip(map_keys, values, strict=True)
            if value is not None
        }

    def keys(
        self,
        search: str,
        version: int | None = None,
        client: Redis | None = None,
    ) -> list[Any]:
        """``KEYS`` goes to one node by default; ask every primary."""
        if client is None:
            client = self.get_client(write=False)
        pattern = self.make_pattern(search, version=version)
        try:
            return [
                self.reverse_key(key.decode() if isinstance(key, bytes) else key)
                for key in _as_cluster(client).keys(pattern, target_nodes=RedisCluster.PRIMARIES)
            ]
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=client) from exc


def _as_cluster(client: Redis) -> RedisCluster:
    """django-redis types its clients as ``Redis``; with ``ClusterConnectionFactory`` (which the
    settings always pair with ``ClusterClient``) each one is a ``RedisCluster``."""
    return cast(RedisCluster, client)
