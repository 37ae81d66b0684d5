"""Deriving the aggregates again: what ``rebuild_stats`` and ``reconcile_stats --repair``
write, and what they leave behind.

A rebuild holds every shard's lock (``lease``), writes a fresh generation beside the live one
with ``GenerationWriter`` (aggregates and the marks of the orders and events they count), switches
``T:gen`` to it (``switch_generation``, fenced like every write) and drops the old one. When
it moves the aggregates to another layout, the same switch retires the old layout (its
``T:gen`` becomes ``retired:<new layout>``, which never expires) and carries the ingestion
counters over by setting them, so a rerun never counts them twice. What is being built or
dropped is recorded in ``<prefix>:generations``, so what a rebuild that died leaves behind
is found and removed by the next one (``leftovers``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Self

from redis.cluster import RedisCluster

from orderpipe.iterutils import batched
from orderpipe.timeutils import epoch_ms
from stats.store.errors import LeaseLostError, unavailable_on_redis_error
from stats.store.layouts import (
    Generation,
    Layout,
    LayoutError,
    State,
    parse_generation,
    retired,
)
from stats.store.lease import Fenced, LeaseMixin
from stats.store.scripts import LuaScript, ScriptCall
from stats.store.values import (
    IngestionStats,
    RecordedOrderLike,
    ms_to_datetime,
    packed,
    text,
)

NEXT_GENERATION = LuaScript.named("next_generation")
# Field-value words per HSET of products (a shop's thousands of products in several commands).
_PRODUCT_FIELDS_PER_HSET = 4_000
_INGEST_COUNTERS = (
    "received", "applied", "duplicates", "rejected",
    "events_received", "events_applied", "events_duplicates",
)  # fmt: skip


@dataclass(frozen=True)
class Leftover:
    """An entry of ``<prefix>:generations``: a generation being built (``building``) or one
    switched away from (``dropping``), or a whole retired layout being dropped
    (``generation`` None)."""

    layout: Layout
    generation: int | None
    state: str
    token: str
    since: datetime | None
    generations: tuple[int, ...] = ()  # a retired layout's: what to drop

    @property
    def field(self) -> str:
        return _field(self.layout, self.generation)


def _field(layout: Layout, generation: int | None) -> str:
    return layout.code() if generation is None else f"{layout.code()}:{generation}"


class GenerationsMixin(LeaseMixin):
    # --- the layout (what the aggregates are built for) -------------------------------------
    @unavailable_on_redis_error
    def recorded_layout(self) -> Layout | None:
        value = self.client.get(self.keys.shared("layout"))
        return Layout.parse(text(value)) if value is not None else None

    @unavailable_on_redis_error
    def claim_layout(self) -> None:
        """Record this store's layout when none is recorded; ``LayoutError`` saying what to do
        when another is (a consumer must not write beside aggregates built for another
        ``REDIS_SHARDS``, nor into keys an earlier version named otherwise, nor count days
        of another ``STATS_TIME_ZONE`` or amounts of another ``STATS_CURRENCY`` into them,
        nor days laid out by another key format under the same names)."""
        for state in self.generation_states():
            # Aggregates written without a recorded layout (by the apply script alone)
            # still say in T:gen what they are counted in and how they are laid out.
            live = state.layout if state.state is State.LIVE else None
            if live is not None and live != self.layout:
                raise LayoutError(self.layout.refusal(live, self.cluster))
        key = self.keys.shared("layout")
        if self.client.get(key) is None:
            self._refuse_unrecorded_aggregates()
        self.client.set(key, self.layout.code(), nx=True)
        found = self.recorded_layout()
        if found is not None and found != self.layout:
            # Another key format under the same names too: its days are laid out otherwise.
            raise LayoutError(self.layout.refusal(found, self.cluster))
        self._layout_is_mine()

    def _refuse_unrecorded_aggregates(self) -> None:
        """``LayoutError`` when aggregates lie in generation 0 of a shard without a generation
        key while no layout is recorded: a version before layouts wrote them (one shard on
        one node names them alike), several fields a day and an hour."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.get(self.keys.generation(shard))
            pipe.exists(self.keys.totals(shard, 0))
        replies = pipe.execute()
        if any(gen is None and held for gen, held in zip(replies[::2], replies[1::2], strict=True)):
            raise LayoutError(
                "the aggregates in Redis were built by an earlier orderpipe (before layouts were "
                f"recorded; this version writes key format {self.layout.key_format}): run "
                "`manage.py rebuild_stats` to derive them again from the ledger"
            )

    def check_recorded_layout(self) -> None:
        """For a reader that found no generation key: zeros are right only when the recorded
        layout is this one (or none); checked once per process."""
        if self._layout_checked():
            return
        found = self.recorded_layout()
        if found is None:
            self._refuse_unrecorded_aggregates()
        elif found != self.layout:
            raise LayoutError(self.layout.refusal(found, self.cluster))
        self._layout_is_mine()

    # --- generations -------------------------------------------------------------------------
    @unavailable_on_redis_error
    def generation_states(self) -> list[Generation]:
        """Each shard's ``T:gen`` as it is now, whatever it holds (rebuild_stats)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.get(self.keys.generation(shard))
        return [parse_generation(value) for value in pipe.execute()]

    def live_generations(self) -> list[int]:
        """Each shard's live generation, read now, for reconcile_stats, which compares the
        generation's marks and may write them; ``LayoutError`` when this layout is not the
        live one (retired, another shard count) or when an earlier version built it (its
        marks are not in the generation: every order would look unapplied)."""
        found = [self._live_number(state, writing=True) for state in self.generation_states()]
        self._saw_generations(found)
        return found

    @unavailable_on_redis_error
    def next_generation(self, above: int) -> int:
        """A generation number no rebuild had (of any layout of this prefix), above
        ``above``."""
        call = ScriptCall([self.keys.shared("generation_seq")], [above])
        return int(self._eval(NEXT_GENERATION, call))

    def writer(self, generation: int | None, token: str, chunk: int = 20_000) -> GenerationWriter:
        """Fenced writes into ``generation`` (None: each shard's live one, for a repair)."""
        return GenerationWriter(self, generation, token, chunk)

    @unavailable_on_redis_error
    def switch_generation(
        self,
        generation: int,
        token: str,
        previous: GenerationsMixin | None = None,
        counters: IngestionStats | None = None,
    ) -> None:
        """Make ``generation`` live on every shard, fenced by ``token``; with ``previous``
        (the layout the aggregates move from) retire that one too and carry ``counters``
        over, set on this layout's shard 0 (never added: a rerun counts them once; None:
        this layout's counters are left as they are).

        On one node this is one script call covering every lock involved: all shards switch,
        and the old layout retires, at once or not at all. On a cluster it is one call per
        shard (each shard switches atomically and keeps its own marks, so it is consistent
        by itself), this layout's shards first, then the old layout's, then the layout key:
        a move that dies half way leaves the old layout recorded, and the next
        ``rebuild_stats`` moves again. ``LeaseLostError`` says which shards switched.
        """
        calls = []
        for shard in self._all():
            call = self.fenced(shard)
            call.add("SET", self.keys.generation(shard), self.descriptor(generation))
            if previous is not None and counters is not None:
                call.add("DEL", self.keys.ingest(shard))
                carried = _ingest_fields(counters) if shard == 0 and counters else []
                if carried:
                    call.add("HSET", self.keys.ingest(0), *carried)
            calls.append(call)
        if previous is not None:
            calls += previous._retire_calls(self.layout)
        if not self.cluster:
            whole = Fenced([lock for call in calls for lock in call.locks])
            whole.ops = [op for call in calls for op in call.ops]
            whole.add("SET", self.keys.shared("layout"), self.layout.code())
            self.run_fenced(token, [whole])
        else:
            for done, call in enumerate(calls):
                try:
                    self.run_fenced(token, [call])
                except LeaseLostError as exc:
                    raise LeaseLostError(
                        f"{exc}; {min(done, self.shards)} of {self.shards} shards had switched "
                        "to the new generation: run rebuild_stats again"
                    ) from exc
            self.client.set(self.keys.shared("layout"), self.layout.code())
        self._saw_generations([generation] * self.shards)

    def _retire_calls(self, successor: Layout) -> list[Fenced]:
        """A fenced call per shard that retires this layout for ``successor``: its generation
        keys say so for ever (and its locks too, for processes of earlier versions). Its
        ingestion counters stay until its keys are dropped: on a cluster a move that dies
        between two shards' retirements is run again, and carries them again (set, not
        added), so each retired shard's counters must still be there."""
        calls = []
        for shard in self._all():
            call = self.fenced(shard)
            call.add("SET", self.keys.generation(shard), retired(successor))
            if self.layout.key_format == 1:
                call.add("SET", self.keys.lock(shard), f"retired:{successor.shards}")
            calls.append(call)
        return calls

    @unavailable_on_redis_error
    def drop_generation(self, generation: int, batch: int = 1_000) -> int:
        """Remove a generation's aggregates and marks (not live: switched away from, or never
        switched to); returns how many keys went."""
        removed = 0
        for shard in self._all():
            removed += int(self.client.unlink(*self.keys.aggregates(shard, generation)))
            for pattern in self.keys.generation_patterns(shard, generation):
                removed += self._unlink_matching(pattern, batch)
        return removed

    @unavailable_on_redis_error
    def drop_layout_keys(self, generations: Sequence[int], batch: int = 1_000) -> int:
        """Remove what a retired layout still holds: the ``generations`` it had live, the
        marks of generation 0 (where an earlier version kept every mark), counted rejects
        and batch replies. Its generation keys stay (they say where the aggregates went),
        and so do its locks."""
        removed = sum(self.drop_generation(g, batch) for g in {0, *generations})
        for shard in self._all():
            for name in ("rejected", "batch"):
                removed += self._unlink_matching(self.keys.key_pattern(name, shard), batch)
            removed += int(self.client.unlink(self.keys.ingest(shard)))
        return removed

    def _unlink_matching(self, pattern: str, batch: int) -> int:
        """UNLINK every key SCAN finds for ``pattern``, ``batch`` per trip."""
        return sum(self._unlink(keys) for keys in batched(self._scan(pattern), batch))

    def _scan(self, pattern: str, count: int = 1000) -> Iterator[bytes]:
        if self.cluster:
            client: RedisCluster = self.client  # type: ignore[assignment]
            yield from client.scan_iter(
                match=pattern, count=count, target_nodes=RedisCluster.PRIMARIES
            )
        else:
            yield from self.client.scan_iter(match=pattern, count=count)

    def _unlink(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.unlink(key)
        return sum(int(n) for n in pipe.execute())

    # --- what is being built or dropped ------------------------------------------------------
    @unavailable_on_redis_error
    def record_generation(self, generation: int, state: str, token: str = "") -> None:
        """Note that ``generation`` of this layout is being built or dropped, so that a
        rebuild that dies leaves a trace of it."""
        self._record(_field(self.layout, generation), {"state": state, "token": token})

    @unavailable_on_redis_error
    def record_retired_layout(self, generations: Sequence[int]) -> None:
        """Note that this (now retired) layout's ``generations`` are to be dropped."""
        self._record(
            _field(self.layout, None), {"state": "dropping", "generations": sorted(generations)}
        )

    def _record(self, field: str, entry: dict[str, Any]) -> None:
        entry["since_ms"] = self._now_ms()
        self.client.hset(self.keys.shared("generations"), field, json.dumps(entry))

    @unavailable_on_redis_error
    def forget_generation(self, generation: int) -> None:
        self.client.hdel(self.keys.shared("generations"), _field(self.layout, generation))

    @unavailable_on_redis_error
    def forget_retired_layout(self) -> None:
        self.client.hdel(self.keys.shared("generations"), _field(self.layout, None))

    @unavailable_on_redis_error
    def forget_leftover(self, leftover: Leftover) -> None:
        self.client.hdel(self.keys.shared("generations"), leftover.field)

    @unavailable_on_redis_error
    def leftovers(self) -> list[Leftover]:
        """Every entry of ``<prefix>:generations`` (of any layout), oldest first."""
        found = []
        for field, raw in self.client.hgetall(self.keys.shared("generations")).items():
            code, _, number = text(field).partition(":")
            layout = Layout.parse(code)
            if layout is None:
                continue
            entry = json.loads(raw)
            found.append(
                Leftover(
                    layout=layout,
                    generation=int(number) if number else None,
                    state=entry.get("state", ""),
                    token=entry.get("token", ""),
                    since=ms_to_datetime(entry.get("since_ms")),
                    generations=tuple(entry.get("generations", ())),
                )
            )
        return sorted(found, key=lambda item: (item.since is None, item.since, item.field))

    @unavailable_on_redis_error
    def lock_holder(self) -> str | None:
        """The token holding shard 0's lock now, if any."""
        value = self.client.get(self.keys.lock(0))
        return text(value) if value is not None else None

    def retired_everywhere(self) -> bool:
        return all(state.state is State.RETIRED for state in self.generation_states())

    def layout_store(self, layout: Layout) -> Self:
        """A store of this prefix and client laid out for ``layout``."""
        return type(self)(
            self.client,
            self.prefix,
            self.dedup_ttl,
            clock=self.clock,
            shards=layout.shards,
            key_format=layout.key_format,
            zone=layout.zone,
            currency=layout.currency,
        )


def _ingest_fields(counters: IngestionStats) -> list[Any]:
    fields: list[Any] = []
    for name in _INGEST_COUNTERS:
        fields += [name, getattr(counters, name)]
    for code, count in counters.rejected_by_code.items():
        fields += [f"rejected:{code}", count]
    for name, when in (("last_batch_ms", counters.last_batch_at),
                       ("heartbeat_ms", counters.heartbeat_at)):  # fmt: skip
        if when is not None:
            fields += [name, epoch_ms(when)]
    return fields


class GenerationWriter:
    """Writes derived aggregates into one generation, fenced by the writer's lease token
    (``fenced_write.lua``): queued per shard and sent as one script call per shard about
    every ``chunk`` values, pipelined. Nothing is live until ``switch_generation``; a repair
    writes into the live generation, in ``unit``s: what one unit queues goes out in one call
    per shard, so a repair killed between two calls leaves every aggregate consistent.
    ``LeaseLostError`` as soon as a call finds the lock gone: it wrote nothing."""

    def __init__(
        self, store: GenerationsMixin, generation: int | None, token: str, chunk: int
    ) -> None:
        self.store = store
        self.generation = generation
        self.token = token
        self.chunk = chunk
        self._calls: dict[int, Fenced] = {}
        self._queued = 0
        self._units = 0  # nested units open
        # Per shard: orders, revenue (gross), users, refunded, cancelled.
        self._globals = [[0, 0, 0, 0, 0] for _ in range(store.shards)]

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        """Writes that must reach Redis together (never split between two calls)."""
        self._units += 1
        try:
            yield
        finally:
            self._units -= 1
        self._written()

    def _generation(self, shard: int) -> int:
        return self.store.generations()[shard] if self.generation is None else self.generation

    def _add(self, shard: int, command: str, key: str, *args: Any) -> None:
        call = self._calls.get(shard)
        if call is None:
            call = self._calls[shard] = self.store.fenced(shard)
        call.add(command, key, *args)
        self._queued += 3 + len(args)

    def _written(self) -> None:
        """After each method's writes: send what is queued once it is enough, never in the
        middle of a method's or a unit's writes."""
        if self._queued >= self.chunk and not self._units:
            self.flush()

    def flush(self) -> None:
        calls, self._calls, self._queued = list(self._calls.values()), {}, 0
        self.store.run_fenced(self.token, calls)

    def user(
        self,
        user_id: str,
        orders: int,
        spend_cents: int,
        first_ms: int,
        last_ms: int,
        refunded_cents: int = 0,
        cancelled: int = 0,
    ) -> None:
        """A user's hash and places in both rankings, as applying its orders and events
        leaves them: ``spend`` gross, ``refunded`` and ``cancelled`` only when not 0 (as the
        apply script writes them), ranked by net spend."""
        keys, shard = self.store.keys, self.store.shard_of(user_id)
        generation = self._generation(shard)
        key = keys.user(user_id, shard, generation)
        self._add(shard, "DEL", key)
        fields: list[Any] = ["orders", orders, "spend", spend_cents, "first", first_ms,
                             "last", last_ms]  # fmt: skip
        if refunded_cents:
            fields += ["refunded", refunded_cents]
        if cancelled:
            fields += ["cancelled", cancelled]
        self._add(shard, "HSET", key, *fields)
        self._add(shard, "ZADD", keys.ranking("spend", shard, generation),
                  refunded_cents - spend_cents, user_id)  # fmt: skip
        self._add(shard, "ZADD", keys.ranking("orders", shard, generation), -orders, user_id)
        totals = self._globals[shard]
        for i, value in enumerate((orders, spend_cents, 1, refunded_cents, cancelled)):
            totals[i] += value
        self._written()

    def remove_user(self, user_id: str) -> None:
        """A user Redis has and the ledger does not (repair)."""
        keys, shard = self.store.keys, self.store.shard_of(user_id)
        generation = self._generation(shard)
        self._add(shard, "DEL", keys.user(user_id, shard, generation))
        self._add(shard, "ZREM", keys.ranking("spend", shard, generation), user_id)
        self._add(shard, "ZREM", keys.ranking("orders", shard, generation), user_id)
        self._written()

    def day(
        self, shard: int, day: date, orders: int, revenue_cents: int, refunded_cents: int = 0
    ) -> None:
        """A day bucket, one field ``<orders>:<gross cents>:<refunded cents>``, when orders were
        placed or refunds occurred on it (what the apply script leaves)."""
        self._bucket(shard, "HSET", self.store.keys.days, day.isoformat(),
                     orders, revenue_cents, refunded_cents)  # fmt: skip

    def hour(
        self, shard: int, hour: str, orders: int, revenue_cents: int, refunded_cents: int = 0
    ) -> None:
        """An hour bucket (``hour``: ``orderpipe.timeutils.hour_key``), one field
        ``<orders>:<gross cents>:<refunded cents>``, when orders were placed or refunds
        occurred in it (what the apply script leaves)."""
        self._bucket(shard, "HSET", self.store.keys.hours, hour,
                     orders, revenue_cents, refunded_cents)  # fmt: skip

    def _bucket(
        self,
        shard: int,
        how: str,
        hash_key: Callable[[int, int], str],
        field: str,
        *figures: int,
    ) -> None:
        """Write (``HSET``) or add to (``ADD_PACKED``) a day or hour field of three figures;
        nothing when all are 0, as the apply script leaves none."""
        if any(figures):
            key = hash_key(shard, self._generation(shard))
            if how == "HSET":
                self._add(shard, how, key, field, packed(*figures))
            else:
                self._add(shard, how, key, field, *figures)
        self._written()

    def replace_hours(self, shard: int, hours: Sequence[tuple[str, int, int, int]]) -> None:
        """A shard's whole hours hash (repair): (hour, orders, revenue cents, refunded cents)
        each, in one call."""
        with self.unit():
            self._add(shard, "DEL", self.store.keys.hours(shard, self._generation(shard)))
            for hour, orders, revenue, refunded in hours:
                self.hour(shard, hour, orders, revenue, refunded)

    def replace_days(self, shard: int, days: Sequence[tuple[date, int, int, int]]) -> None:
        """A shard's whole days hash (repair): (day, orders, revenue cents, refunded cents)
        each, in one call."""
        with self.unit():
            self._add(shard, "DEL", self.store.keys.days(shard, self._generation(shard)))
            for day, orders, revenue, refunded in days:
                self.day(shard, day, orders, revenue, refunded)

    def add_to_totals(
        self,
        shard: int,
        orders: int,
        revenue: int,
        users: int,
        refunded: int = 0,
        cancelled: int = 0,
    ) -> None:
        """Count orders and events in the shard's totals, as applying them does (repair)."""
        key = self.store.keys.totals(shard, self._generation(shard))
        for name, value in (("orders", orders), ("revenue", revenue), ("users", users),
                            ("refunded", refunded), ("cancelled", cancelled)):  # fmt: skip
            if value:
                self._add(shard, "HINCRBY", key, name, value)
        self._written()

    def add_to_day(
        self, shard: int, day: date, orders: int, revenue_cents: int, refunded_cents: int = 0
    ) -> None:
        """Count orders (placed that day) or refunds (that occurred that day) in a day
        bucket, as applying them does (repair): added in Redis (``ADD_PACKED`` of the fenced
        script), the day being one field of three figures."""
        self._bucket(shard, "ADD_PACKED", self.store.keys.days, day.isoformat(),
                     orders, revenue_cents, refunded_cents)  # fmt: skip

    def add_to_hour(
        self, shard: int, hour: str, orders: int, revenue_cents: int, refunded_cents: int = 0
    ) -> None:
        """Count orders placed in a local hour (``hour_key``), or refunds that occurred in it,
        as applying them does (repair): added in Redis (``ADD_PACKED``), the hour being one
        field of three figures."""
        self._bucket(shard, "ADD_PACKED", self.store.keys.hours, hour,
                     orders, revenue_cents, refunded_cents)  # fmt: skip

    def add_to_products(
        self, shard: int, day: date, figures: Mapping[str, tuple[int, int]]
    ) -> None:
        """Count a row's products (units, revenue cents; an event's negative) overall and on
        its day, as applying it does (repair)."""
        generation = self._generation(shard)
        keys = self.store.keys
        for key in (keys.products(shard, generation),
                    keys.product_day(day.isoformat(), shard, generation)):  # fmt: skip
            for product_id, (units, revenue) in figures.items():
                self._add(shard, "HINCRBY", key, f"{product_id}:units", units)
                self._add(shard, "HINCRBY", key, f"{product_id}:revenue", revenue)
        self._written()

    def globals_from_users(self) -> None:
        """The global hashes, summed from the users written."""
        for shard, (orders, revenue, users, refunded, cancelled) in enumerate(self._globals):
            self.set_globals(shard, orders, revenue, users, refunded, cancelled)

    def set_globals(
        self,
        shard: int,
        orders: int,
        revenue: int,
        users: int,
        refunded: int = 0,
        cancelled: int = 0,
    ) -> None:
        """A shard's global hash; ``refunded`` and ``cancelled`` only when not 0."""
        key = self.store.keys.totals(shard, self._generation(shard))
        fields: list[Any] = ["orders", orders, "revenue", revenue, "users", users]
        if refunded:
            fields += ["refunded", refunded]
        if cancelled:
            fields += ["cancelled", cancelled]
        self._add(shard, "DEL", key)
        self._add(shard, "HSET", key, *fields)
        self._written()

    def products(
        self,
        shard: int,
        totals: Mapping[str, tuple[int, int]],
        days: Mapping[date, Mapping[str, tuple[int, int]]],
        stale_days: Sequence[str] = (),
    ) -> None:
        """A shard's products, overall and per day: (units, revenue cents) per product, every
        product any row of the shard counted (0 after it was all refunded), as applying its
        orders and events leaves them. ``stale_days``: day hashes to remove first (a repair:
        the days Redis has). A repair writes each shard's in one call (a ``unit``)."""
        keys, generation = self.store.keys, self._generation(shard)
        key = keys.products(shard, generation)
        self._add(shard, "DEL", key)
        for stale in stale_days:
            self._add(shard, "DEL", keys.product_day(stale, shard, generation))
        self._product_fields(shard, key, totals)
        for day, figures in sorted(days.items()):
            self._product_fields(shard, keys.product_day(day.isoformat(), shard, generation),
                                 figures)  # fmt: skip
            self._written()  # a rebuild sends as it goes; a repair's unit holds it whole

    def _product_fields(self, shard: int, key: str, figures: Mapping[str, tuple[int, int]]) -> None:
        fields: list[Any] = []
        for product_id, (units, revenue) in sorted(figures.items()):
            fields += [f"{product_id}:units", units, f"{product_id}:revenue", revenue]
        for start in range(0, len(fields), _PRODUCT_FIELDS_PER_HSET):
            self._add(shard, "HSET", key, *fields[start : start + _PRODUCT_FIELDS_PER_HSET])

    def mark(self, order: RecordedOrderLike) -> None:
        """A recorded order's idempotency mark, expiring when a mark written at its first
        recording would; never replaces one that is there."""
        store = self.store
        shard = store.shard_of(order.user_id)
        key = store.keys.mark(order.order_id, shard, self._generation(shard))
        if store.dedup_ttl > 0:
            expires = epoch_ms(order.received_at + timedelta(seconds=store.dedup_ttl))
            self._add(shard, "SET", key, order.fingerprint, "NX", "PXAT", expires)
        else:
            self._add(shard, "SET", key, order.fingerprint, "NX")
        self._written()

    def event_mark(
        self, event_id: str, user_id: str, fingerprint: str, received_at: datetime
    ) -> None:
        """A recorded event's idempotency mark (in its user's shard), expiring when a mark
        written when it was recorded would; never replaces one that is there."""
        store = self.store
        shard = store.shard_of(user_id)
        key = store.keys.event_mark(event_id, shard, self._generation(shard))
        if store.dedup_ttl > 0:
            expires = epoch_ms(received_at + timedelta(seconds=store.dedup_ttl))
            self._add(shard, "SET", key, fingerprint, "NX", "PXAT", expires)
        else:
            self._add(shard, "SET", key, fingerprint, "NX")
        self._written()

    def close(self) -> None:
        self.flush()
