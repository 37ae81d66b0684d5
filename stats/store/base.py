"""What every part of ``AggregateStore`` shares: the client, the key space, the settings, and
each shard's live generation as this process last saw it.

The live generation is never read on its own: every read pipeline carries a GET of it and
every script checks it, so a switch by ``rebuild_stats`` is noticed on the next call at no
extra round trip (a first guess of 0 is corrected the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis
from redis.cluster import RedisCluster

from stats.store.keys import KeySpace

# (prefix, shards) -> each shard's live generation as this process last saw it.
_GENERATIONS: dict[tuple[str, int], list[int]] = {}


class StoreBase:
    """Reads and writes the aggregates of one key prefix in one Redis (node or cluster).

    ``client`` is a redis-py client (django-redis's pooled one in the app, a ``RedisCluster``
    with ``REDIS_CLUSTER``, fakeredis or a test server in tests); ``clock`` returns epoch
    seconds and is swappable in tests.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        prefix: str = "orderpipe",
        dedup_ttl: int = 15 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        shards: int = 1,
    ) -> None:
        self.client = client
        self.keys = KeySpace(prefix, shards, cluster=isinstance(client, RedisCluster))
        self.dedup_ttl = dedup_ttl
        self.clock = clock
        # Set by a consumer: its batches and heartbeats also stamp <p>:consumers[consumer_id].
        self.consumer_id = ""

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def shards(self) -> int:
        return self.keys.shards

    @property
    def cluster(self) -> bool:
        return self.keys.cluster

    def shard_of(self, value: str) -> int:
        return self.keys.shard_of(value)

    def key(self, *parts: str, shard: int = 0) -> str:
        """A per-shard key outside the generations (``KeySpace.key``)."""
        return self.keys.key(*parts, shard=shard)

    def aggregate_key(self, *parts: str, shard: int = 0, generation: int | None = None) -> str:
        """A key of a generation's aggregates (the live generation unless given)."""
        gen = self.generations()[shard] if generation is None else generation
        return self.keys.aggregate(*parts, shard=shard, generation=gen)

    def _all(self) -> range:
        return range(self.shards)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- the live generation -----------------------------------------------------------------
    def generations(self) -> list[int]:
        """Each shard's live generation as this process last saw it (see the module)."""
        return _GENERATIONS.setdefault((self.prefix, self.shards), [0] * self.shards)

    def _saw_generation(self, shard: int, generation: int) -> None:
        self.generations()[shard] = generation

    def _saw_generations(self, generations: Sequence[int]) -> None:
        _GENERATIONS[(self.prefix, self.shards)] = list(generations)
