"""What every part of ``AggregateStore`` shares: the client, the key space and layout, the
settings, the window of the idempotency marks, and each shard's live generation as this
process last saw it.

The live generation is never read on its own: every read pipeline carries a GET of it and
every script checks it, so a switch by ``rebuild_stats`` is noticed on the next call at no
extra round trip (a first guess of 0 is corrected the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import redis
from redis.cluster import RedisCluster

from stats.store.keys import KEY_FORMAT, KeySpace
from stats.store.layouts import (
    DEFAULT_CURRENCY,
    DEFAULT_ZONE,
    Generation,
    Layout,
    live_number,
)

# (prefix, layout) -> each shard's live generation as this process last saw it.
_GENERATIONS: dict[tuple[str, Layout], list[int]] = {}
# The (prefix, layout) pairs whose recorded layout this process found to be its own.
_LAYOUT_CHECKED: set[tuple[str, Layout]] = set()
# An order without a mark is applied only if it was first recorded this far inside the marks'
# TTL (at most a quarter of it): the margin covers clock differences between hosts.
CLOCK_MARGIN = timedelta(hours=1)


class StoreBase:
    """Reads and writes the aggregates of one key prefix in one Redis (node or cluster).

    ``client`` is a redis-py client (django-redis's pooled one in the app, a ``RedisCluster``
    with ``REDIS_CLUSTER``, fakeredis or a test server in tests); ``clock`` returns epoch
    seconds and is swappable in tests. ``key_format`` 1 names the keys of earlier versions
    (``rebuild_stats`` moves aggregates out of them). ``zone`` (an IANA name) and
    ``currency`` (an ISO 4217 code) are what the aggregates this process writes and reads are
    counted in (``STATS_TIME_ZONE``, ``STATS_CURRENCY``): part of its layout, so aggregates
    built for another are refused, never mixed.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        prefix: str = "orderpipe",
        dedup_ttl: int = 15 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        shards: int = 1,
        key_format: int = KEY_FORMAT,
        zone: str = DEFAULT_ZONE,
        currency: str = DEFAULT_CURRENCY,
    ) -> None:
        self.client = client
        cluster = isinstance(client, RedisCluster)
        self.keys = KeySpace(prefix, shards, cluster=cluster, key_format=key_format)
        self.layout = Layout(shards, key_format, zone, currency)
        # The calendar the days are counted in (orderpipe.timeutils.local_day).
        self.time_zone = ZoneInfo(zone)
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

    # --- the marks' window ---------------------------------------------------------------------
    def window_start(self, now: datetime) -> datetime | None:
        """The one rule of what a missing mark means, for the apply script, rebuild_stats and
        reconcile_stats alike: an order first recorded since then was applied exactly when its
        mark exists; one recorded before may have had its mark expire, so it counts as
        applied. The marks' TTL less a margin (an hour, at most a quarter of the TTL) for
        clocks that differ between hosts. None when marks never expire."""
        if self.dedup_ttl <= 0:
            return None
        ttl = timedelta(seconds=self.dedup_ttl)
        return now - ttl + min(CLOCK_MARGIN, ttl / 4)

    def marks_since(self, now: datetime) -> datetime | None:
        """Where the marks ``rebuild_stats`` writes begin: at every order whose mark, written
        when it was first recorded, would still exist (the TTL back from now), wider than the
        window by its margin, so that a consumer whose clock runs behind the rebuild's (by
        less than the margin), whose window therefore starts earlier, still finds the mark of
        every order the rebuild counted. None when marks never expire."""
        if self.dedup_ttl <= 0:
            return None
        return now - timedelta(seconds=self.dedup_ttl)

    def now(self) -> datetime:
        """The store's clock as a datetime."""
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- the live generation -----------------------------------------------------------------
    def generations(self) -> list[int]:
        """Each shard's live generation as this process last saw it (see the module)."""
        return _GENERATIONS.setdefault((self.prefix, self.layout), [0] * self.shards)

    def descriptor(self, generation: int) -> str:
        """What ``T:gen`` holds while ``generation`` of this layout is live."""
        return f"{generation};{self.layout.code()}"

    def _saw_generation(self, shard: int, generation: int) -> None:
        self.generations()[shard] = generation

    def _saw_generations(self, generations: Sequence[int]) -> None:
        _GENERATIONS[(self.prefix, self.layout)] = list(generations)

    def _live_number(self, found: Generation, writing: bool = False) -> int:
        """The generation ``found`` names for this layout, or ``LayoutError`` saying what to
        do (see ``layouts.live_number``)."""
        return live_number(found, self.layout, self.cluster, writing)

    def _layout_checked(self) -> bool:
        return (self.prefix, self.layout) in _LAYOUT_CHECKED

    def _layout_is_mine(self) -> None:
        _LAYOUT_CHECKED.add((self.prefix, self.layout))
