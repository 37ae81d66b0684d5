"""Deriving the aggregates again: what ``rebuild_stats`` and ``reconcile_stats`` do to Redis.

A rebuild holds every shard's lock (consumers keep their batches meanwhile), writes a fresh
generation beside the live one with ``GenerationWriter``, switches ``T:gen`` to it and drops
the old one; when it moved the aggregates to another shard count it records the new layout
and retires the old one, so a consumer still configured for it stops instead of writing beside
them. A reconcile reads everything back (users, rankings, days, marks) to compare it with the
ledger, repairs through the same writer into the live generation, and keeps a report.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster
from redis.commands.core import Script

from orderpipe.timeutils import epoch_ms
from stats.store.base import StoreBase
from stats.store.errors import unavailable_on_redis_error
from stats.store.keys import SHARED_KEYS
from stats.store.values import (
    USER_FIELDS,
    IngestionStats,
    OrderLike,
    RecordedOrderLike,
    UserStats,
    int_or_zero,
    score_to_int,
    text,
    user_from_row,
)

RELEASE_LOCK_SCRIPT = (Path(__file__).parents[1] / "lua" / "release_lock.lua").read_text()
# The value of a retired layout's lock (see ``GenerationsMixin.retire``).
RETIRED = "retired:"


class GenerationsMixin(StoreBase):
    # --- the rebuild lock --------------------------------------------------------------------
    @unavailable_on_redis_error
    def acquire_rebuild_lock(self, token: str, ttl_ms: int) -> bool:
        """Hold every shard's lock (consumers then keep their batches); False when another
        rebuild holds one. A layout retired by an earlier rebuild is taken over."""
        taken: list[int] = []
        for shard in self._all():
            key = self.keys.lock(shard)
            if not self.client.set(key, token, nx=True, px=ttl_ms):
                held = self.client.get(key)
                if held is None or not text(held).startswith(RETIRED):
                    self._release_locks(token, taken)
                    return False
                self.client.set(key, token, px=ttl_ms)
            taken.append(shard)
        return True

    @unavailable_on_redis_error
    def refresh_rebuild_lock(self, token: str, ttl_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.set(self.keys.lock(shard), token, xx=True, px=ttl_ms)
        pipe.execute()

    @unavailable_on_redis_error
    def release_rebuild_lock(self, token: str) -> None:
        self._release_locks(token, self._all())

    @unavailable_on_redis_error
    def rebuild_in_progress(self) -> bool:
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.exists(self.keys.lock(shard))
        return any(pipe.execute())

    @unavailable_on_redis_error
    def retire(self, successor_shards: int) -> None:
        """This layout's aggregates moved elsewhere: a lock that never expires tells consumers
        still configured for it to stop instead of writing beside the new layout."""
        for shard in self._all():
            self.client.set(self.keys.lock(shard), f"{RETIRED}{successor_shards}")

    @functools.cached_property
    def _release(self) -> Script:
        # redis-py's Script runs EVALSHA and reloads the script after a Redis restart.
        return self.client.register_script(RELEASE_LOCK_SCRIPT)

    def _release_locks(self, token: str, shards: Iterable[int]) -> None:
        for shard in shards:
            self._release(keys=[self.keys.lock(shard)], args=[token])

    # --- the layout (how many shards the aggregates are written for) -------------------------
    @unavailable_on_redis_error
    def recorded_layout(self) -> int | None:
        value = self.client.get(self.keys.shared("layout"))
        return int(value) if value is not None else None

    @unavailable_on_redis_error
    def claim_layout(self) -> int:
        """Record this store's shard count when none is recorded; returns the recorded one.

        A consumer started with another ``REDIS_SHARDS`` than the aggregates were built for
        must not write beside them (``rebuild_stats`` moves them to a new layout).
        """
        self.client.set(self.keys.shared("layout"), self.shards, nx=True)
        return int_or_zero(self.client.get(self.keys.shared("layout")))

    # --- generations -------------------------------------------------------------------------
    @unavailable_on_redis_error
    def live_generations(self) -> list[int]:
        """Each shard's live generation, read now (rebuild_stats)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.get(self.keys.generation(shard))
        found = [int_or_zero(value) for value in pipe.execute()]
        self._saw_generations(found)
        return found

    def writer(self, generation: int | None, chunk: int = 5_000) -> GenerationWriter:
        """Pipelined writes into ``generation`` (None: each shard's live one, for a repair)."""
        return GenerationWriter(self, generation, chunk)

    @unavailable_on_redis_error
    def switch_generation(self, generation: int) -> None:
        """Make ``generation`` live on every shard: one MULTI on a single node (all shards at
        once); on a cluster one command per shard (each shard switches atomically)."""
        pipe = self.client.pipeline(transaction=not self.cluster)
        for shard in self._all():
            pipe.set(self.keys.generation(shard), generation)
        pipe.set(self.keys.shared("layout"), self.shards)
        pipe.execute()
        self._saw_generations([generation] * self.shards)

    @unavailable_on_redis_error
    def drop_generation(self, generation: int, batch: int = 1_000) -> int:
        """Remove a generation's aggregates (after a switch); returns how many keys went."""
        removed = 0
        for shard in self._all():
            removed += int(self.client.unlink(*self.keys.aggregates(shard, generation)))
            removed += self._unlink_matching(self.keys.users_pattern(shard, generation), batch)
        return removed

    @unavailable_on_redis_error
    def drop_shard_keys(self, batch: int = 1_000) -> int:
        """Remove every key of this layout's shards (after a rebuild moved the aggregates to
        another shard count): aggregates, marks, counters, generations. The keys outside the
        shards (consumers, layout, reconcile) stay, also where a one-shard layout's tag is
        the bare prefix they share."""
        shared = {self.keys.shared(name).encode() for name in SHARED_KEYS}
        return sum(
            self._unlink_matching(self.keys.shard_pattern(shard), batch, keep=shared)
            for shard in self._all()
        )

    @unavailable_on_redis_error
    def add_ingestion(self, counters: IngestionStats) -> None:
        """Carry ingestion counters over to this layout (a rebuild into another shard count)."""
        pipe = self.client.pipeline(transaction=False)
        key = self.keys.ingest(0)
        for name in ("received", "applied", "duplicates", "rejected"):
            pipe.hincrby(key, name, getattr(counters, name))
        for code, count in counters.rejected_by_code.items():
            pipe.hincrby(key, f"rejected:{code}", count)
        for name, when in (("last_batch_ms", counters.last_batch_at),
                           ("heartbeat_ms", counters.heartbeat_at)):  # fmt: skip
            if when is not None:
                pipe.hset(key, name, epoch_ms(when))
        pipe.execute()

    def _unlink_matching(
        self, pattern: str, batch: int, keep: AbstractSet[bytes] = frozenset()
    ) -> int:
        """UNLINK every key SCAN finds for ``pattern`` (but ``keep``), ``batch`` per trip."""
        removed = 0
        keys: list[bytes] = []
        for key in self._scan(pattern):
            if key in keep:
                continue
            keys.append(key)
            if len(keys) >= batch:
                removed += self._unlink(keys)
                keys = []
        return removed + self._unlink(keys)

    def _scan(self, pattern: str) -> Iterator[bytes]:
        if isinstance(self.client, RedisCluster):
            yield from self.client.scan_iter(
                match=pattern, count=1000, target_nodes=RedisCluster.PRIMARIES
            )
        else:
            yield from self.client.scan_iter(match=pattern, count=1000)

    def _unlink(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.unlink(key)
        return sum(int(n) for n in pipe.execute())

    # --- reading everything back (reconcile_stats) -------------------------------------------
    @unavailable_on_redis_error
    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserStats]:
        """Many users of the live generation in one pipelined round trip."""
        generations = self.generations()
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            shard = self.shard_of(user_id)
            pipe.hmget(self.keys.user(user_id, shard, generations[shard]), *USER_FIELDS)
        rows = zip(user_ids, pipe.execute(), strict=True)
        return {u: user for u, row in rows if (user := user_from_row(u, row)) is not None}

    @unavailable_on_redis_error
    def scan_user_ids(self) -> Iterator[str]:
        """Every user that has a hash in the live generation (users the ledger does not
        know)."""
        for shard in self._all():
            generation = self.generations()[shard]
            for key in self._scan(self.keys.users_pattern(shard, generation)):
                yield self.keys.user_id_of(key.decode(), shard, generation)

    @unavailable_on_redis_error
    def ranking_entries(self, name: str) -> Iterator[tuple[str, int]]:
        """Every (user_id, value) of a ranking, shard by shard."""
        for shard in self._all():
            key = self.keys.ranking(name, shard, self.generations()[shard])
            for member, score in self.client.zscan_iter(key, count=1000):
                yield member.decode(), -score_to_int(score)

    @unavailable_on_redis_error
    def all_days(self) -> dict[date, tuple[int, int]]:
        """Every day bucket (orders, revenue) summed over the shards."""
        generations = self.generations()
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.hgetall(self.keys.days(shard, generations[shard]))
        totals: dict[date, list[int]] = {}
        for hash_ in pipe.execute():
            for name, value in hash_.items():
                iso, kind = name.decode().rsplit(":", 1)
                bucket = totals.setdefault(date.fromisoformat(iso), [0, 0])
                bucket[0 if kind == "orders" else 1] += int(value)
        return {day: (o, r) for day, (o, r) in sorted(totals.items())}

    @unavailable_on_redis_error
    def marks_exist(self, orders: Sequence[OrderLike]) -> list[bool]:
        """Whether each order has its idempotency mark: one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for order in orders:
            pipe.exists(self.keys.mark(order.order_id, self.shard_of(order.user_id)))
        return [bool(n) for n in pipe.execute()] if orders else []

    @unavailable_on_redis_error
    def save_reconcile_report(self, report: Mapping[str, Any]) -> None:
        self.client.set(self.keys.shared("reconcile"), json.dumps(report, sort_keys=True))

    @unavailable_on_redis_error
    def reconcile_report(self) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.shared("reconcile"))
        return json.loads(raw) if raw else None


class GenerationWriter:
    """Writes derived aggregates into one generation with pipelined commands, ``chunk``
    commands per round trip (rebuild_stats, reconcile_stats --repair). Nothing is live until
    ``switch_generation`` (a repair writes into the live generation)."""

    def __init__(self, store: StoreBase, generation: int | None, chunk: int) -> None:
        self.store = store
        self.generation = generation
        self.chunk = chunk
        self._pipe = store.client.pipeline(transaction=False)
        self._queued = 0
        self._globals = [[0, 0, 0] for _ in range(store.shards)]

    def _generation(self, shard: int) -> int:
        return self.store.generations()[shard] if self.generation is None else self.generation

    def _queued_one(self, n: int = 1) -> None:
        self._queued += n
        if self._queued >= self.chunk:
            self.flush()

    @unavailable_on_redis_error
    def flush(self) -> None:
        if self._queued:
            self._pipe.execute()
            self._queued = 0

    def user(
        self, user_id: str, orders: int, spend_cents: int, first_ms: int, last_ms: int
    ) -> None:
        keys, shard = self.store.keys, self.store.shard_of(user_id)
        generation = self._generation(shard)
        key = keys.user(user_id, shard, generation)
        self._pipe.delete(key)
        self._pipe.hset(
            key,
            mapping={"orders": orders, "spend": spend_cents, "first": first_ms, "last": last_ms},
        )
        self._pipe.zadd(keys.ranking("spend", shard, generation), {user_id: -spend_cents})
        self._pipe.zadd(keys.ranking("orders", shard, generation), {user_id: -orders})
        totals = self._globals[shard]
        totals[0] += orders
        totals[1] += spend_cents
        totals[2] += 1
        self._queued_one(4)

    def remove_user(self, user_id: str) -> None:
        """A user Redis has and the ledger does not (repair)."""
        keys, shard = self.store.keys, self.store.shard_of(user_id)
        generation = self._generation(shard)
        self._pipe.delete(keys.user(user_id, shard, generation))
        self._pipe.zrem(keys.ranking("spend", shard, generation), user_id)
        self._pipe.zrem(keys.ranking("orders", shard, generation), user_id)
        self._queued_one(3)

    def day(self, shard: int, day: date, orders: int, revenue_cents: int) -> None:
        iso = day.isoformat()
        self._pipe.hset(
            self.store.keys.days(shard, self._generation(shard)),
            mapping={f"{iso}:orders": orders, f"{iso}:revenue": revenue_cents},
        )
        self._queued_one()

    def replace_days(self, shard: int, days: Sequence[tuple[date, int, int]]) -> None:
        """A shard's whole days hash (repair): (day, orders, revenue cents) each."""
        self._pipe.delete(self.store.keys.days(shard, self._generation(shard)))
        self._queued_one()
        for day, orders, revenue in days:
            self.day(shard, day, orders, revenue)

    def globals_from_users(self) -> None:
        """The global hashes, summed from the users written."""
        for shard, (orders, revenue, users) in enumerate(self._globals):
            self.set_globals(shard, orders, revenue, users)

    def set_globals(self, shard: int, orders: int, revenue: int, users: int) -> None:
        key = self.store.keys.totals(shard, self._generation(shard))
        self._pipe.delete(key)
        self._pipe.hset(key, mapping={"orders": orders, "revenue": revenue, "users": users})
        self._queued_one(2)

    def mark(self, order: RecordedOrderLike) -> None:
        """A recorded order's idempotency mark, expiring when a mark written at its first
        recording would; never replaces one that is there."""
        store = self.store
        key = store.keys.mark(order.order_id, store.shard_of(order.user_id))
        if store.dedup_ttl > 0:
            expires = epoch_ms(order.received_at + timedelta(seconds=store.dedup_ttl))
            self._pipe.set(key, order.fingerprint, nx=True, pxat=expires)
        else:
            self._pipe.set(key, order.fingerprint, nx=True)
        self._queued_one()

    def close(self) -> None:
        self.flush()
