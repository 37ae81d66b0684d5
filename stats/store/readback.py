"""Reading the aggregates back to compare them with the ledger (``reconcile_stats``), in
batches: each batch of users is one pipelined round trip (their hashes and their places in
both rankings), and the keys the ledger may not know are found by SCAN, a batch at a time, so
memory stays bounded whatever the number of users.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from orderpipe.iterutils import batched
from stats.store.errors import unavailable_on_redis_error
from stats.store.generations import GenerationsMixin
from stats.store.keys import glob_escape
from stats.store.products import parse_product_field
from stats.store.values import (
    USER_FIELDS,
    OrderLike,
    UserStats,
    score_to_int,
    unpacked,
    user_from_row,
)

RANKINGS = ("spend", "orders")


class EventMarkLike(Protocol):
    """What finds an event's mark."""

    @property
    def event_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class UserReadback:
    """One user as the live generation holds it: the hash and both rankings' values (net
    spend in cents, order count; None where the user is missing)."""

    stats: UserStats | None
    spend: int | None
    orders: int | None


class ReadbackMixin(GenerationsMixin):
    @unavailable_on_redis_error
    def read_back_users(self, user_ids: Sequence[str]) -> list[UserReadback]:
        """``user_ids`` of the live generation in one pipelined round trip: an HMGET each and
        a ZMSCORE of both rankings per shard (spend: the NET spend the ranking holds)."""
        generations = self.generations()
        by_shard: dict[int, list[int]] = {}
        pipe = self.client.pipeline(transaction=False)
        for i, user_id in enumerate(user_ids):
            shard = self.shard_of(user_id)
            by_shard.setdefault(shard, []).append(i)
            pipe.hmget(self.keys.user(user_id, shard, generations[shard]), *USER_FIELDS)
        for shard, positions in by_shard.items():
            members = [user_ids[i] for i in positions]
            for name in RANKINGS:
                pipe.zmscore(self.keys.ranking(name, shard, generations[shard]), members)
        replies = pipe.execute() if user_ids else []
        rows, scores = replies[: len(user_ids)], iter(replies[len(user_ids) :])
        ranked: dict[str, list[int | None]] = {name: [None] * len(user_ids) for name in RANKINGS}
        for positions in by_shard.values():
            for name in RANKINGS:
                for i, score in zip(positions, next(scores), strict=True):
                    ranked[name][i] = None if score is None else -score_to_int(score)
        return [
            UserReadback(user_from_row(user_id, row), ranked["spend"][i], ranked["orders"][i])
            for i, (user_id, row) in enumerate(zip(user_ids, rows, strict=True))
        ]

    @unavailable_on_redis_error
    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserStats]:
        """Many users' hashes of the live generation in one pipelined round trip."""
        return {
            user_id: found.stats
            for user_id, found in zip(user_ids, self.read_back_users(user_ids), strict=True)
            if found.stats is not None
        }

    @unavailable_on_redis_error
    def user_id_batches(self, shard: int, size: int) -> Iterator[list[str]]:
        """Every user with a hash in the live generation of ``shard``, ``size`` at a time."""
        generation = self.generations()[shard]
        keys = self._scan(self.keys.users_pattern(shard, generation))
        ids = (self.keys.user_id_of(key.decode(), shard, generation) for key in keys)
        yield from batched(ids, size)

    @unavailable_on_redis_error
    def ranking_sizes(self) -> dict[str, list[int]]:
        """How many members each shard's rankings have (one round trip)."""
        generations = self.generations()
        pipe = self.client.pipeline(transaction=False)
        for name in RANKINGS:
            for shard in self._all():
                pipe.zcard(self.keys.ranking(name, shard, generations[shard]))
        sizes = [int(n) for n in pipe.execute()]
        n = self.shards
        return {name: sizes[i * n : (i + 1) * n] for i, name in enumerate(RANKINGS)}

    @unavailable_on_redis_error
    def ranking_member_batches(
        self, name: str, shard: int, size: int
    ) -> Iterator[list[tuple[str, int]]]:
        """Every (member, value) of a shard's ranking, ``size`` at a time."""
        key = self.keys.ranking(name, shard, self.generations()[shard])
        members = self.client.zscan_iter(key, count=1000)
        yield from batched(((m.decode(), -score_to_int(s)) for m, s in members), size)

    @unavailable_on_redis_error
    def all_days(self) -> dict[date, tuple[int, int, int]]:
        """Every day bucket (orders, gross revenue, refunded) summed over the shards (a day is
        one field, ``<orders>:<gross>:<refunded>``)."""
        totals = self._all_packed(self.keys.days)
        return {date.fromisoformat(day): totals[day] for day in sorted(totals)}

    @unavailable_on_redis_error
    def shard_products(
        self, shard: int
    ) -> tuple[dict[str, tuple[int, int]], dict[date, dict[str, tuple[int, int]]]]:
        """A shard's products as Redis holds them: (units, revenue cents) per product overall,
        and per day (its day hashes found by SCAN, read in one pipeline)."""
        generation = self.generations()[shard]
        keys = self.keys
        prefix = keys.product_day("", shard, generation)
        day_keys = sorted(k.decode() for k in self._scan(glob_escape(prefix) + "*"))
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.products(shard, generation))
        for key in day_keys:
            pipe.hgetall(key)
        hashes = pipe.execute()
        days = {
            date.fromisoformat(key[len(prefix) :]): _product_hash(hash_)
            for key, hash_ in zip(day_keys, hashes[1:], strict=True)
        }
        return _product_hash(hashes[0]), days

    @unavailable_on_redis_error
    def all_hours(self) -> dict[str, tuple[int, int, int]]:
        """Every hour bucket (orders, gross revenue, refunded) summed over the shards, by its
        key (an hour is one field, ``<orders>:<gross>:<refunded>``)."""
        totals = self._all_packed(self.keys.hours)
        return {hour: totals[hour] for hour in sorted(totals)}

    def _all_packed(self, hash_key: Callable[[int, int], str]) -> dict[str, tuple[int, int, int]]:
        """Every field of the days or hours hash, its three figures summed over the shards."""
        generations = self.generations()
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.hgetall(hash_key(shard, generations[shard]))
        totals: dict[str, list[int]] = {}
        for hash_ in pipe.execute():
            for name, value in hash_.items():
                bucket = totals.setdefault(name.decode(), [0, 0, 0])
                for i, figure in enumerate(unpacked(value)):
                    bucket[i] += figure
        return {name: (o, r, f) for name, (o, r, f) in totals.items()}

    @unavailable_on_redis_error
    def marks_exist(self, orders: Sequence[OrderLike]) -> list[bool]:
        """Whether each order has its idempotency mark in the live generation: one round
        trip."""
        generations = self.generations()
        pipe = self.client.pipeline(transaction=False)
        for order in orders:
            shard = self.shard_of(order.user_id)
            pipe.exists(self.keys.mark(order.order_id, shard, generations[shard]))
        return [bool(n) for n in pipe.execute()] if orders else []

    @unavailable_on_redis_error
    def event_marks_exist(self, events: Sequence[EventMarkLike]) -> list[bool]:
        """Whether each event has its idempotency mark in the live generation (in its user's
        shard): one round trip."""
        generations = self.generations()
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            shard = self.shard_of(event.user_id)
            pipe.exists(self.keys.event_mark(event.event_id, shard, generations[shard]))
        return [bool(n) for n in pipe.execute()] if events else []

    @unavailable_on_redis_error
    def save_reconcile_report(self, report: Mapping[str, Any]) -> None:
        self.client.set(self.keys.shared("reconcile"), json.dumps(report, sort_keys=True))

    @unavailable_on_redis_error
    def reconcile_report(self) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.shared("reconcile"))
        return json.loads(raw) if raw else None


def _product_hash(hash_: Mapping[bytes, bytes]) -> dict[str, tuple[int, int]]:
    """A products hash as (units, revenue cents) per product (a field missing reads 0)."""
    found: dict[str, list[int]] = {}
    for name, value in hash_.items():
        product_id, which = parse_product_field(name.decode())
        found.setdefault(product_id, [0, 0])[0 if which == "units" else 1] = int(value)
    return {p: (units, revenue) for p, (units, revenue) in sorted(found.items())}
