"""The API's reads: each one pipelined round trip (per node), the shards merged.

Money is read as Redis holds it, gross and refunds apart (``values``: net is derived), the
spenders' ranking already by net. Every read carries a check of the generations it reads
(``_read``), so a reader never mixes a generation ``rebuild_stats`` just switched away from
with the new one. Merging keeps what one shard promises: global = sums, unique users = sum (a
user lives in one shard), top-N = a merge of each shard's top N by score then user id (what
one ZRANGE does), by-date = the sum per day of each shard's HMGET, a user = its own shard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from orderpipe.timeutils import hour_key, local_hours
from stats.store.errors import unavailable_on_redis_error
from stats.store.generations import GenerationsMixin
from stats.store.layouts import State, parse_generation
from stats.store.products import (
    ProductFigures,
    RankedProduct,
    rank_products,
)
from stats.store.values import (
    USER_FIELDS,
    DayStats,
    GlobalStats,
    HourStats,
    IngestionStats,
    Ranked,
    UserStats,
    int_or_zero,
    ms_to_datetime,
    score_to_int,
    user_from_row,
)

# Queues a read's commands on a pipeline, given each shard's generation.
Build = Callable[[Any, Sequence[int]], None]


def days_between(start: date, end: date) -> Iterator[date]:
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


@functools.lru_cache(maxsize=64)
def _day_fields(start: date, end: date) -> tuple[tuple[date, ...], tuple[bytes, ...]]:
    """The days from start to end and their fields in the days hash (one per day), encoded
    once: a dashboard or client asks for the same ranges again and again."""
    days = tuple(days_between(start, end))
    return days, tuple(day.isoformat().encode() for day in days)


def _numbers(values: Sequence[bytes | None], absent: bytes) -> list[int]:
    """An HMGET's reply of packed fields (days, hours) as their figures in a row (``absent``
    for a field not there): joined and split once, which costs a year's days a third of
    splitting each field."""
    return list(map(int, b":".join([value or absent for value in values]).split(b":")))


@functools.lru_cache(maxsize=64)
def _hour_fields(
    start: date, end: date, zone: tzinfo
) -> tuple[tuple[datetime, ...], tuple[bytes, ...]]:
    """Every local hour of the days from start to end in ``zone`` and their fields in the
    hours hash (one per hour), worked out once per range (a dashboard asks for today and
    yesterday on every view)."""
    hours = tuple(h for day in days_between(start, end) for h in local_hours(day, zone))
    return hours, tuple(hour_key(hour, zone).encode() for hour in hours)


class ReadsMixin(GenerationsMixin):
    def _read(self, shards: Iterable[int], build: Build) -> list[Any]:
        """Run ``build``'s commands in one pipelined round trip together with a check of the
        generation of ``shards``; when a rebuild switched it meanwhile, read again. The check
        comes after the reads: Redis may run another client's commands between those of a
        pipeline, and a generation still live after the reads was live during them (a
        rebuild drops the old one only after its switch, and a switch never goes back).
        Another layout live, or this one retired, is a ``LayoutError`` saying what to do,
        never zeros; so is a layout recorded for other settings where no generation is."""
        shards = list(shards)
        data: list[Any] = []
        for _attempt in range(3):
            generations = self.generations()
            pipe = self.client.pipeline(transaction=False)
            build(pipe, generations)
            for shard in shards:
                pipe.get(self.keys.generation(shard))
            results = pipe.execute()
            split = len(results) - len(shards)
            data = results[:split]
            found = [parse_generation(value) for value in results[split:]]
            seen = [self._live_number(state) for state in found]
            if any(state.state is State.ABSENT for state in found):
                self.check_recorded_layout()
            if all(seen[i] == generations[s] for i, s in enumerate(shards)):
                break
            for i, shard in enumerate(shards):
                self._saw_generation(shard, seen[i])
        return data

    @unavailable_on_redis_error
    def user_stats(self, user_id: str) -> UserStats | None:
        shard = self.shard_of(user_id)

        def build(pipe: Any, generations: Sequence[int]) -> None:
            pipe.hmget(self.keys.user(user_id, shard, generations[shard]), *USER_FIELDS)

        (row,) = self._read([shard], build)
        return user_from_row(user_id, row)

    @unavailable_on_redis_error
    def global_stats(self) -> GlobalStats:
        return _sum_globals(self._read(self._all(), self._queue_globals))

    @unavailable_on_redis_error
    def top_spenders(self, limit: int) -> list[Ranked]:
        return self._ranking("spend", limit)

    @unavailable_on_redis_error
    def top_buyers(self, limit: int) -> list[Ranked]:
        return self._ranking("orders", limit)

    @unavailable_on_redis_error
    def by_date(self, start: date, end: date) -> list[DayStats]:
        """Every day from start to end inclusive (zeros included): one HMGET of one field per
        day per shard (``<orders>:<gross>:<refunded>``), summed per day over the shards. A
        day's refunds are those that occurred on it."""
        days, fields = _day_fields(start, end)
        numbers = self._packed_figures(self.keys.days, fields)
        return list(map(DayStats, days, numbers[0::3], numbers[1::3], numbers[2::3]))

    @unavailable_on_redis_error
    def product_stats(self, product_id: str) -> ProductFigures | None:
        """A product's net units and revenue over all time (one HMGET per shard: its sales
        are in the shards of its buyers); None when no shard has it."""
        fields = (f"{product_id}:units", f"{product_id}:revenue")

        def build(pipe: Any, generations: Sequence[int]) -> None:
            for shard in self._all():
                pipe.hmget(self.keys.products(shard, generations[shard]), fields)

        rows = self._read(self._all(), build)
        if all(units is None for units, _revenue in rows):
            return None
        units = sum(int_or_zero(u) for u, _r in rows)
        revenue = sum(int_or_zero(r) for _u, r in rows)
        return ProductFigures(product_id, units, revenue)

    @unavailable_on_redis_error
    def top_products(
        self, limit: int, by: str = "revenue", start: date | None = None, end: date | None = None
    ) -> list[RankedProduct]:
        """Products by net ``revenue`` or ``units``, highest first, ties by product_id
        ascending: over all time (each shard's products hash), or over the days from
        ``start`` to ``end`` inclusive (each day's hash of each shard), merged here; one
        pipelined read."""
        if start is None or end is None:

            def build(pipe: Any, generations: Sequence[int]) -> None:
                for shard in self._all():
                    pipe.hgetall(self.keys.products(shard, generations[shard]))

        else:
            days = [day.isoformat() for day in days_between(start, end)]

            def build(pipe: Any, generations: Sequence[int]) -> None:
                for shard in self._all():
                    for day in days:
                        pipe.hgetall(self.keys.product_day(day, shard, generations[shard]))

        return rank_products(_sum_products(self._read(self._all(), build)), by, limit)

    @unavailable_on_redis_error
    def by_hour(self, start: date, end: date) -> list[HourStats]:
        """Every local hour of the days from start to end inclusive, in the store's zone (23,
        24 or 25 a day; zeros included): the orders placed in each and their gross value,
        the refunds that occurred in it; one HMGET of one field per hour per shard
        (``<orders>:<gross>:<refunded>``), summed per hour over the shards."""
        hours, fields = _hour_fields(start, end, self.time_zone)
        numbers = self._packed_figures(self.keys.hours, fields)
        return list(map(HourStats, hours, numbers[0::3], numbers[1::3], numbers[2::3]))

    def _packed_figures(
        self, hash_key: Callable[[int, int], str], fields: Sequence[bytes]
    ) -> list[int]:
        """The three figures of each of ``fields`` of the days or hours hash, in a row, summed
        over the shards (zeros for a field not there): one HMGET per shard."""

        def build(pipe: Any, generations: Sequence[int]) -> None:
            for shard in self._all():
                pipe.hmget(hash_key(shard, generations[shard]), fields)

        per_shard = [_numbers(values, b"0:0:0") for values in self._read(self._all(), build)]
        if len(per_shard) == 1:
            return per_shard[0]
        return [sum(column) for column in zip(*per_shard, strict=True)]

    @unavailable_on_redis_error
    def ingestion(self) -> IngestionStats:
        pipe = self.client.pipeline(transaction=False)
        self._queue_ingest(pipe)
        return _ingestion_from_hashes(pipe.execute())

    @unavailable_on_redis_error
    def overview(self) -> tuple[GlobalStats, IngestionStats]:
        """Global totals and ingestion counters read together for /metrics, in one round trip
        (not a MULTI: a scrape may pair totals of one batch with counters of the next)."""

        def build(pipe: Any, generations: Sequence[int]) -> None:
            self._queue_globals(pipe, generations)
            self._queue_ingest(pipe)

        results = self._read(self._all(), build)
        n = self.shards
        return _sum_globals(results[:n]), _ingestion_from_hashes(results[n:])

    def _ranking(self, name: str, limit: int) -> list[Ranked]:
        def build(pipe: Any, generations: Sequence[int]) -> None:
            for shard in self._all():
                pipe.zrange(
                    self.keys.ranking(name, shard, generations[shard]),
                    0,
                    limit - 1,
                    withscores=True,
                    score_cast_func=score_to_int,
                )

        # Each shard's top N, merged the way one ZRANGE orders: score, then member bytes.
        rows = sorted(
            (row for shard_rows in self._read(self._all(), build) for row in shard_rows),
            key=lambda row: (row[1], row[0]),
        )[:limit]
        return [
            Ranked(rank=i, user_id=member.decode(), value=-score)
            for i, (member, score) in enumerate(rows, start=1)
        ]

    def _queue_globals(self, pipe: Any, generations: Sequence[int]) -> None:
        for shard in self._all():
            pipe.hmget(self.keys.totals(shard, generations[shard]), *GLOBAL_FIELDS)

    def _queue_ingest(self, pipe: Any) -> None:
        for shard in self._all():
            pipe.hgetall(self.keys.ingest(shard))


# What ``_sum_globals`` reads of each shard's global hash, in its order.
GLOBAL_FIELDS = ("orders", "revenue", "users", "refunded", "cancelled")


def _sum_globals(rows: Iterable[Sequence[Any]]) -> GlobalStats:
    sums = [0] * len(GLOBAL_FIELDS)
    for row in rows:
        for i, value in enumerate(row):
            sums[i] += int_or_zero(value)
    orders, revenue, users, refunded, cancelled = sums
    return GlobalStats(orders, revenue, users, refunded, cancelled)


def _sum_products(hashes: Iterable[Mapping[bytes, bytes]]) -> list[ProductFigures]:
    """Product hashes (``<product_id>:units``/``:revenue``) summed per product: split as bytes
    and each product id decoded once (a range reads products x days fields)."""
    sums: dict[bytes, list[int]] = {}
    for hash_ in hashes:
        for name, value in hash_.items():
            product_id, _, which = name.rpartition(b":")
            found = sums.get(product_id)
            if found is None:
                found = sums[product_id] = [0, 0]
            found[which == b"revenue"] += int(value)
    return [ProductFigures(p.decode(), units, revenue) for p, (units, revenue) in sums.items()]


def _ingestion_from_hashes(hashes: Iterable[Mapping[bytes, bytes]]) -> IngestionStats:
    counters: dict[str, int] = {}
    latest: dict[str, int] = {}
    for hash_ in hashes:
        for key, value in hash_.items():
            name = key.decode()
            if name.endswith("_ms"):
                latest[name] = max(latest.get(name, 0), int(value))
            else:
                counters[name] = counters.get(name, 0) + int(value)
    by_code = {
        name.split(":", 1)[1]: value
        for name, value in counters.items()
        if name.startswith("rejected:")
    }
    return IngestionStats(
        received=counters.get("received", 0),
        applied=counters.get("applied", 0),
        duplicates=counters.get("duplicates", 0),
        rejected=counters.get("rejected", 0),
        rejected_by_code=dict(sorted(by_code.items())),
        last_batch_at=ms_to_datetime(latest.get("last_batch_ms")),
        heartbeat_at=ms_to_datetime(latest.get("heartbeat_ms")),
        events_received=counters.get("events_received", 0),
        events_applied=counters.get("events_applied", 0),
        events_duplicates=counters.get("events_duplicates", 0),
    )
