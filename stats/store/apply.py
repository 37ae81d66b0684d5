"""Applying a batch: one atomic script call (``stats/lua/apply_batch.lua``) per shard it touches.

The batch is planned per shard (the keys and arguments of each call), the calls go out in one
pipelined round trip together with the consumer's heartbeat, and a server that lost the script
(a restart) gets it loaded again, on the one node that needs it. A refund or cancellation goes
in the call of its order's user's shard, after the orders (its order among them when Redis
might lack it), so an order and its events change together. An order's or event's day bucket
is the date of its time in the store's zone (``local_day``), the zone its ``T:gen`` records;
an order also counts in its local hour (``hour_key``), and an event's refund in the local hour
it occurred in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orderpipe import money
from orderpipe.timeutils import day_and_hour, epoch_ms
from stats.store.errors import (
    RebuildInProgressError,
    StoreCommandError,
    StoreUnavailableError,
    unavailable_on_redis_error,
)
from stats.store.keys import KeySpace
from stats.store.layouts import parse_generation
from stats.store.products import product_sums
from stats.store.scripts import LuaScript, ScriptCall, ScriptsMixin
from stats.store.values import (
    CANCELLED,
    ApplyStatus,
    BatchApplied,
    OrderLike,
    PendingEvent,
    PendingOrder,
    text,
)

APPLY = LuaScript.named("apply_batch", "packed_figures")
APPLY_SHA = APPLY.sha
# How long a batch's reply is kept on each shard it touched: a retry of that batch within
# this time counts nothing twice (a batch in hand is retried within seconds to minutes).
BATCH_REPLY_TTL = 3600
# The form of the stored reply, in its key: a reply an earlier version stored (no event
# statuses) is not replayed to this one, whose retry runs the script again (its orders' marks
# make them duplicates) instead of taking a reply that lacks the events.
BATCH_REPLY_FORMAT = "r3"
# The script sums a call's product lines in Lua numbers (doubles) only below these bounds,
# where every partial sum (under 2^51) is an exact integer.
_EXACT_LINE = 2**40
_EXACT_LINES = 2**11


# A row's products as ``product_sums`` gives them, the day they count on, and +1 (an order's
# sales) or -1 (an event's, taken off).
_Row = tuple[str, dict[str, tuple[int, int]], int]


@dataclass(slots=True)
class _ShardWork:
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)  # positions in the caller's list
    events: list[int] = field(default_factory=list)  # positions in the caller's list
    event_keys: list[str] = field(default_factory=list)
    event_args: list[Any] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    # Per order, then per event: its products.
    lines: list[_Row] = field(default_factory=list)
    event_lines: list[_Row] = field(default_factory=list)
    received: int = 0
    events_received: int = 0
    # The names of the shard's user hashes, order marks and event marks less the id.
    user_key: str = ""
    mark_key: str = ""
    event_mark_key: str = ""


class ApplyMixin(ScriptsMixin):
    @unavailable_on_redis_error
    def apply_batch(
        self,
        orders: Sequence[PendingOrder],
        rejections: Mapping[str, Sequence[str]] | None = None,
        received: int | None = None,
        batch: str = "",
        events: Sequence[PendingEvent] = (),
        events_received: int | None = None,
    ) -> BatchApplied:
        """Apply a batch: one atomic script call per shard it touches.

        ``rejections`` maps the SQS message id of each rejected message to its reason codes
        (each message is counted once however often it comes); ``received`` is the number of
        SQS messages the batch came from (default: counted orders + counted events +
        rejections). Every order's aggregates change together or not at all; with several
        shards the batch as a whole is not atomic (a failure may leave some shards applied).
        ``batch`` names this batch as received (the same for every retry of the batch in
        hand, another for a redelivery): a shard that applied its part gives its first reply
        again on a retry, so the received, applied and duplicate counters count the batch
        once.

        ``events`` (refunds and cancellations) go in the same call as the orders of their
        user's shard, after them, each once by its own mark (same TTL and window rule as an
        order's). An order with ``counted=False`` is an event's order recorded earlier: it is
        applied when its mark is absent inside the window, so Redis never holds a refund
        without its order, and counts in no counter. ``events_received`` is the number of
        event messages the batch holds (default: the counted events); ``events_applied``
        counts every event applied, ``events_duplicates`` the counted ones that were not.
        """
        rejections = rejections or {}
        if not orders and not rejections and not received and not events:
            return BatchApplied([], 0)
        statuses: list[ApplyStatus] = [ApplyStatus.DUPLICATE] * len(orders)
        event_statuses: list[ApplyStatus] = [ApplyStatus.DUPLICATE] * len(events)
        counted = 0

        def plan() -> dict[int, _ShardWork]:
            return self._plan(orders, rejections, received, batch, events, events_received)

        pending = plan()
        for _attempt in range(3):
            moved = []
            heartbeat = self._queue_consumer_beat if self.consumer_id else None
            calls = [ScriptCall(work.keys, work.args) for work in pending.values()]
            for shard, reply in zip(
                pending, self._run_scripts(APPLY, calls, heartbeat), strict=True
            ):
                code = int(reply[0])
                if code == 1:
                    raise RebuildInProgressError("a rebuild of the aggregates is in progress")
                if code == 3:
                    raise StoreCommandError(
                        f"these aggregates were moved to another shard layout ({text(reply[1])}"
                        f") by an earlier orderpipe; this process has REDIS_SHARDS={self.shards}"
                        ": run `manage.py rebuild_stats`, then restart it"
                    )
                if code == 2:  # a rebuild switched, or another layout is live
                    found = parse_generation(reply[1] or None)
                    self._saw_generation(shard, self._live_number(found, writing=True))
                    moved.append(shard)
                    continue
                work = pending[shard]
                split = 1 + len(work.orders)
                for position, status in zip(work.orders, reply[1:split], strict=True):
                    statuses[position] = ApplyStatus(int(status))
                for position, status in zip(work.events, reply[split:-1], strict=True):
                    event_statuses[position] = ApplyStatus(int(status))
                counted += int(reply[-1])
            if not moved:
                return BatchApplied(statuses, counted, event_statuses)
            replanned = plan()
            pending = {shard: replanned[shard] for shard in moved}
        raise StoreUnavailableError("the aggregates' generation keeps moving; retrying later")

    def apply_orders(
        self, orders: Sequence[OrderLike], received: int | None = None
    ) -> list[ApplyStatus]:
        """Apply orders recorded just now (tests, benchmarks); see ``apply_batch``."""
        return self.apply_batch([PendingOrder(o) for o in orders], received=received).statuses

    def record_rejections(self, rejections: Mapping[str, Sequence[str]]) -> int:
        """Count rejected messages (SQS message id -> reason codes) once each; see
        ``apply_batch``. Returns how many were counted now."""
        return self.apply_batch([], rejections, received=0).rejections_counted

    def _queue_consumer_beat(self, pipe: Any) -> None:
        pipe.hset(self.keys.shared("consumers"), self.consumer_id, self._now_ms())

    def _plan(
        self,
        orders: Sequence[PendingOrder],
        rejections: Mapping[str, Sequence[str]],
        received: int | None,
        batch: str,
        events: Sequence[PendingEvent] = (),
        events_received: int | None = None,
    ) -> dict[int, _ShardWork]:
        """Each shard's script call: its KEYS and ARGV as ``apply_batch.lua`` lists them."""
        keys = self.keys
        generations = self.generations()
        now_at = self.now()
        now = epoch_ms(now_at)
        window_start = self.window_start(now_at)
        oldest = epoch_ms(window_start) if window_start is not None else 0
        work: dict[int, _ShardWork] = {}
        currency = money.currency(self.layout.currency)
        zone = self.time_zone

        # Most of a batch's orders share the time the ledger first recorded them (now).
        last_first: datetime | None = None
        last_first_ms = 0

        def rows_of(s: int) -> _ShardWork:
            """A shard's new work, with the names of its rows' keys (``KeySpace``'s, less the
            id: built once a batch, not twice an order)."""
            shard = work[s] = _ShardWork()
            shard.user_key = keys.user("", s, generations[s])
            shard.mark_key = keys.mark("", s, generations[s])
            shard.event_mark_key = keys.event_mark("", s, generations[s])
            return shard

        for position, pending in enumerate(orders):
            order = pending.order
            user_id = order.user_id
            s = keys.shard_of(user_id)
            shard = work.get(s) or rows_of(s)
            shard.orders.append(position)
            shard.received += pending.counted
            shard.keys += (shard.user_key + user_id, shard.mark_key + order.order_id)
            first = pending.first_recorded_at
            if first is not last_first:
                last_first = first
                last_first_ms = epoch_ms(first) if first is not None else 0
            occurred_at = order.occurred_at
            day, hour = day_and_hour(occurred_at, zone)
            shard.lines.append((day, product_sums(getattr(order, "items", ()), currency), 1))
            shard.args += (
                user_id,
                order.value_cents,
                epoch_ms(occurred_at),
                day,
                order.fingerprint,
                getattr(order, "legacy_fingerprint", order.fingerprint),
                last_first_ms,
                int(pending.counted),
                hour,
            )
        for position, pending_event in enumerate(events):
            event = pending_event.event
            user_id = event.user_id
            s = keys.shard_of(user_id)
            shard = work.get(s) or rows_of(s)
            shard.events.append(position)
            shard.received += pending_event.counted
            shard.events_received += pending_event.counted
            shard.event_keys += (shard.user_key + user_id, shard.event_mark_key + event.event_id)
            first = pending_event.first_recorded_at
            if first is not last_first:
                last_first = first
                last_first_ms = epoch_ms(first) if first is not None else 0
            day, hour = day_and_hour(event.occurred_at, zone)
            shard.event_lines.append((day, product_sums(event.items, currency), -1))
            shard.event_args += (
                user_id,
                event.amount_cents,
                day,
                event.fingerprint,
                last_first_ms,
                int(event.kind == CANCELLED),
                int(pending_event.counted),
                hour,
            )
        for message_id in rejections:
            shard = work.setdefault(keys.shard_of(message_id), _ShardWork())
            shard.received += 1
            shard.rejects.append(message_id)
        messages = sum(p.counted for p in orders) + sum(e.counted for e in events)
        if received is not None and received != messages + len(rejections):
            # Not one message per order, event and reject (tests, benchmarks; events waiting
            # for their order): count it on one shard.
            for shard in work.values():
                shard.received = 0
            work.setdefault(next(iter(work), 0), _ShardWork()).received = received
        if events_received is not None and events_received != sum(e.counted for e in events):
            for shard in work.values():
                shard.events_received = 0
            work.setdefault(next(iter(work), 0), _ShardWork()).events_received = events_received
        for s, shard in work.items():
            gen = generations[s]
            head = [
                keys.generation(s),
                keys.lock(s),
                keys.totals(s, gen),
                keys.days(s, gen),
                keys.ranking("spend", s, gen),
                keys.ranking("orders", s, gen),
                keys.ingest(s),
                keys.batch(f"{batch}:{BATCH_REPLY_FORMAT}", s),
                keys.hours(s, gen),
            ]
            product_keys, product_args = _product_section(
                keys, s, gen, shard.lines + shard.event_lines
            )
            # The call's items, for the stored reply: a retry with other items runs again.
            items = hashlib.blake2b(
                "\n".join([*shard.keys, *shard.event_keys]).encode(), digest_size=16
            ).hexdigest()
            shard.keys = [
                *head, *shard.keys, *shard.event_keys,
                *(keys.rejected(m, s) for m in shard.rejects), *product_keys,
            ]  # fmt: skip
            shard.args = [
                self.descriptor(gen), self.dedup_ttl, now, shard.received, oldest,
                len(shard.orders), BATCH_REPLY_TTL if batch else 0,
                len(shard.events), shard.events_received, len(product_keys),
                *shard.args, *shard.event_args, *(",".join(rejections[m]) for m in shard.rejects),
                *product_args, items,
            ]  # fmt: skip
        return work


def _product_section(
    keys: KeySpace, shard: int, generation: int, rows: list[_Row]
) -> tuple[list[str], list[Any]]:
    """The product keys and values of one shard's call (``apply_batch.lua``): none when no
    row has a product; else the products hash and each day's hash, then whether the script
    should sum the lines per field before writing, and per row its count of products and each
    one's (day hash position, product_id, units, cents), an event's negated.

    Summing in Lua costs about what an HINCRBY does per line (measured on Valkey 9), so it
    is asked for only when it at least halves the fields written (the distinct products and
    day-products against two per line: a live stream's batches of a few best sellers), and
    only where it is exact in Lua's doubles (lines under 2^40, fewer than 2^11 of them). The
    rows cannot be summed here: only the applied ones count, and the script knows which."""
    if not any(sold for _, sold, _ in rows):
        return [], []
    days: dict[str, int] = {}
    args: list[Any] = [0]
    day_products: set[tuple[int, str]] = set()
    lines = 0
    for day, sold, sign in rows:
        args.append(len(sold))
        if not sold:
            continue
        position = days.get(day)
        if position is None:
            position = days[day] = len(days) + 2
        for product_id, (units, cents) in sold.items():
            if sign < 0:
                units, cents = -units, -cents
            args += (position, product_id, units, cents)
            day_products.add((position, product_id))
        lines += len(sold)
    products = {product_id for _, product_id in day_products}
    args[0] = int(
        len(products) + len(day_products) <= lines
        and lines < _EXACT_LINES
        and all(
            -_EXACT_LINE < units < _EXACT_LINE and -_EXACT_LINE < cents < _EXACT_LINE
            for _, sold, _ in rows
            for units, cents in sold.values()
        )
    )
    product_keys = [keys.products(shard, generation)]
    product_keys += [keys.product_day(day, shard, generation) for day in days]
    return product_keys, args
