"""The aggregate store: every Redis key orderpipe uses, its scripts, and all reads.

Nobody else talks to Redis keys; ``AggregateStore`` is the one door (``get_store`` builds the
app's). Redis is a read model: the ledger (in the orders app) is the record of truth and
``rebuild_stats`` derives everything here from it again. The stats app never imports the
orders app: ``values.OrderLike`` and ``values.EventLike`` say what the store needs of an order
and of a refund or cancellation.

One module per idea:

- ``keys``: every key name (the key table is its docstring), shards, hash tags. Pure.
- ``errors``: which Redis errors are outages and which need an operator.
- ``values``: what goes in and comes out (orders, statistics, money), and reply decoding.
- ``layouts``: what the generation and layout keys hold (descriptors), and the refusals when
  a process is configured for other aggregates than Redis holds. Pure.
- ``base``: what the parts share: client, key space, layout, settings, the marks' window, the
  live generations seen.
- ``scripts``: running the Lua scripts of ``stats/lua/`` (pipelined, reloaded when lost).
- ``apply``: applying a batch, one script call per shard (``stats/lua/apply_batch.lua``).
- ``consumers``: the consumers' heartbeats.
- ``reads``: the API's reads, one round trip each, shards merged.
- ``servers``: INFO (version, eviction policy) and latency of every primary.
- ``lease``: the rebuild lock, a fenced lease: every write of a rebuild or repair checks it.
- ``generations``: what rebuild and repair write: the layout, fenced writes of a generation
  (``GenerationWriter``), the switch, dropping, and what a rebuild that died left behind.
- ``readback``: reading everything back in batches to compare it with the ledger.

Why mixins: ``AggregateStore`` is assembled from one mixin per module over ``StoreBase``. Its
callers (the consumer, the API, the commands) hold one object with the whole API, as before;
each module reads on its own; and no method merely forwards to another object. The mixins
share nothing but what ``StoreBase`` declares, and ask ``self.keys`` (a ``KeySpace``) for
every key name.
"""

from __future__ import annotations

import redis
from django.conf import settings
from redis.exceptions import RedisClusterException

from stats.store.apply import APPLY_SHA, ApplyMixin
from stats.store.consumers import ConsumersMixin
from stats.store.errors import (
    LeaseLostError,
    RebuildInProgressError,
    StoreCommandError,
    StoreUnavailableError,
    store_error,
)
from stats.store.generations import GenerationWriter, Leftover
from stats.store.keys import KeySpace
from stats.store.layouts import Layout, LayoutError
from stats.store.products import ProductFigures, RankedProduct
from stats.store.readback import ReadbackMixin, UserReadback
from stats.store.reads import ReadsMixin
from stats.store.servers import ServerInfo, ServersMixin
from stats.store.values import (
    ApplyStatus,
    BatchApplied,
    DayStats,
    EventLike,
    GlobalStats,
    HourStats,
    IngestionStats,
    OrderLike,
    PendingEvent,
    PendingOrder,
    Ranked,
    RecordedOrderLike,
    UserStats,
)

__all__ = [
    "APPLY_SHA",
    "AggregateStore",
    "ApplyStatus",
    "BatchApplied",
    "DayStats",
    "EventLike",
    "GenerationWriter",
    "GlobalStats",
    "HourStats",
    "IngestionStats",
    "KeySpace",
    "Layout",
    "LayoutError",
    "LeaseLostError",
    "Leftover",
    "OrderLike",
    "PendingEvent",
    "PendingOrder",
    "ProductFigures",
    "Ranked",
    "RankedProduct",
    "RebuildInProgressError",
    "RecordedOrderLike",
    "ServerInfo",
    "StoreCommandError",
    "StoreUnavailableError",
    "UserReadback",
    "UserStats",
    "get_store",
    "redis_client",
]


class AggregateStore(ApplyMixin, ConsumersMixin, ReadsMixin, ServersMixin, ReadbackMixin):
    """Reads and writes the aggregates of one key prefix in one Redis (node or cluster).

    ``AggregateStore(client, prefix, dedup_ttl, clock, shards, key_format, zone,
    currency)``: see
    ``StoreBase``. Writes (``apply_batch``) are in ``apply``, reads in ``reads``, the
    rebuild's and reconcile's side in ``lease``, ``generations`` and ``readback``.
    """


def redis_client() -> redis.Redis:
    """The app's one raw Redis client, from django-redis's shared connection pool."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def get_store() -> AggregateStore:
    """The app's store. A cluster client finds its nodes when it is built: a node that does not
    answer then is an outage (``StoreUnavailableError``), as it would be later."""
    try:
        client = redis_client()
    except (redis.RedisError, RedisClusterException) as exc:
        raise store_error(exc) from exc
    return AggregateStore(
        client,
        prefix=settings.REDIS_KEY_PREFIX,
        dedup_ttl=settings.ORDER_DEDUP_TTL,
        shards=getattr(settings, "REDIS_SHARDS", 1),
        zone=settings.STATS_TIME_ZONE.key,
        currency=settings.STATS_CURRENCY,
    )
