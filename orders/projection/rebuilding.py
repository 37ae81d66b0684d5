"""``rebuild``: every aggregate derived again from the ledger into a new generation, fenced and
all-or-nothing.

Under the lease of every shard (of both layouts when the shard count changes) it first removes
what a rebuild that died left behind (``<prefix>:generations``), takes a generation number no
rebuild had, writes users, totals, rankings, days (refunds and cancellations included),
products (overall and per day) and the marks of the orders and events whose marks would still
exist (``AggregateStore.marks_since``) into that generation only, checks the lease, and
switches (one fenced call on one node). Consumers' batches wait meanwhile and are applied to
the new generation, whose marks say which of their orders the snapshot already counted. A
rebuild killed at any point before its switch leaves the live generation, with its marks, as it
was. Only after the switch is the old generation dropped (and the old layout's keys, while its
lock is still held).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from orderpipe import money
from orders import ledger
from orders.projection.lease import LOCK_TTL_MS, rebuild_lock
from stats.store import AggregateStore, GenerationWriter
from stats.store.layouts import Generation, State
from stats.store.products import product_sums

logger = logging.getLogger("orders.projection")

# Called with how many ledger orders were just processed; what it returns is ignored
# (tqdm.update returns whether it redrew).
Progress = Callable[[int], object]


@dataclass
class RebuildReport:
    generation: int
    orders: int = 0
    users: int = 0
    days: int = 0
    marks: int = 0
    refunded_cents: int = 0
    cancelled: int = 0
    event_marks: int = 0
    products: int = 0  # distinct products over all shards
    removed_keys: int = 0
    leftovers_removed: int = 0
    shards: int = 1
    seconds: float = 0.0
    dry_run: bool = False


class ForeignCurrencyError(Exception):
    """The ledger holds rows in another currency than the aggregates are to be counted in:
    adding them up would mix currencies, so nothing is written (the message says which)."""


def check_ledger_currency(currency: str) -> None:
    """``ForeignCurrencyError`` unless every ledger row (order and event) is in ``currency``."""
    foreign = ledger.foreign_currency_rows(currency)
    if foreign:
        listed = ", ".join(f"{n:,} in {code}" for code, n in foreign.items())
        raise ForeignCurrencyError(
            f"the ledger holds rows in another currency than STATS_CURRENCY={currency} "
            f"({listed}): amounts are never converted or added across currencies; run "
            "rebuild_stats with the STATS_CURRENCY the ledger was recorded in"
        )


def rebuild(
    store: AggregateStore,
    *,
    previous: AggregateStore | None = None,
    dry_run: bool = False,
    cleanup_only: bool = False,
    progress: Progress | None = None,
    lock_ttl_ms: int = LOCK_TTL_MS,
) -> RebuildReport:
    """Derive every aggregate of ``store`` from the ledger into a new generation and switch.

    ``previous`` is the store of the layout the aggregates live in now when it differs from
    ``store``'s (another ``REDIS_SHARDS``, or the key format of an earlier version): the
    switch retires it and carries its ingestion counters over, and its keys are removed
    afterwards. ``cleanup_only`` removes what earlier rebuilds left behind and stops there.
    The aggregates are built for ``store``'s zone and currency (its layout records both);
    ``ForeignCurrencyError`` before anything is written when a ledger row is in another
    currency.
    """
    started = time.monotonic()
    if not cleanup_only:
        check_ledger_currency(store.layout.currency)
    progress = progress or (lambda _n: None)
    moving = previous is not None and previous.layout != store.layout
    stores = [store, previous] if moving and previous is not None else [store]
    report = RebuildReport(generation=0, shards=store.shards, dry_run=dry_run)
    if dry_run:
        states = [state for s in stores for state in s.generation_states()]
        report.generation = max(state.number for state in states) + 1
        _derive(store, None, report, progress)
        report.seconds = time.monotonic() - started
        return report
    dropping: set[int] = set()
    with rebuild_lock(stores, lock_ttl_ms) as lease:
        for held in stores:
            report.leftovers_removed += clean_leftovers(held)
        if cleanup_only:
            report.seconds = time.monotonic() - started
            return report
        old = {id(s): s.generation_states() for s in stores}
        report.generation = generation = store.next_generation(
            max(state.number for states in old.values() for state in states)
        )
        logger.info("rebuild_stats: writing generation %d (%s)", generation, store.layout.code())
        store.record_generation(generation, "building", lease.token)
        writer = store.writer(generation, lease.token)
        _derive(store, writer, report, progress)
        lease.check()
        # Recorded before the switch, so that a rebuild killed right after it leaves them
        # to the next one (which drops only what is live nowhere).
        dropping = _numbers(old[id(store)]) - {generation}
        for number in dropping:
            store.record_generation(number, "dropping")
        if moving and previous is not None:
            previous.record_retired_layout(sorted(_numbers(old[id(previous)])))
        logger.info("rebuild_stats: generation %d written; switching", generation)
        if moving and previous is not None:
            # Retired on every shard: a move that died after its last retirement (on a
            # cluster, one call per shard, this layout's first) carried the counters already.
            counters = None if previous.retired_everywhere() else previous.ingestion()
            store.switch_generation(generation, lease.token, previous, counters)
        else:
            store.switch_generation(generation, lease.token)
        store.forget_generation(generation)
        lease.release(store)  # consumers go on, against the new generation
        if moving and previous is not None and previous.layout.key_format == 1:
            # Its locks say retired:<N> now (for earlier versions): no longer this lease's
            # to extend, and no rebuild moves into key format 1.
            lease.release(previous)
        logger.info("rebuild_stats: switched to generation %d; dropping the old", generation)
        if moving and previous is not None:
            # Under the old layout's lock still, so no rebuild moves back into it meanwhile.
            report.removed_keys += previous.drop_layout_keys(sorted(_numbers(old[id(previous)])))
            previous.forget_retired_layout()
    for number in sorted(dropping):
        report.removed_keys += store.drop_generation(number)
        store.forget_generation(number)
    report.seconds = time.monotonic() - started
    return report


def _numbers(states: list[Generation]) -> set[int]:
    """The generations ``states`` name, to drop once switched away from: a live or claimed
    one, and for an earlier version's numbered generation generation 0 too (where it kept
    its marks)."""
    found: set[int] = set()
    for state in states:
        if state.state in (State.LIVE, State.ABSENT):
            found.add(state.number)
        elif state.state is State.LEGACY:
            found |= {state.number, 0}
    return found


def clean_leftovers(store: AggregateStore) -> int:
    """Remove what rebuilds that died left behind for ``store``'s layout, and the keys of
    layouts they retired: each generation recorded as being built or dropped that is live
    on no shard. Runs under ``store``'s lock (nothing else writes its layout meanwhile; a
    retired layout takes no writes). A generation another layout's rebuild was building
    (a move that died and was given up) goes too, unless its token still holds that
    layout's lock: no rebuild switches to a generation it did not build itself, and a new
    one takes another number. Returns how many were removed."""
    removed = 0
    for leftover in store.leftovers():
        if leftover.generation is None:
            old = store.layout_store(leftover.layout)
            if old.retired_everywhere():  # else it was moved back to, and is live again
                old.drop_layout_keys(list(leftover.generations))
                removed += 1
            store.forget_leftover(leftover)
            continue
        owner = store
        if leftover.layout.naming() != store.layout.naming():
            # Another zone or currency names the same keys: this rebuild's to clean.
            owner = store.layout_store(leftover.layout)
            if leftover.state != "building" or owner.lock_holder() == leftover.token:
                continue  # its own layout's rebuild drops it (or is building it now)
        live = {s.number for s in owner.generation_states() if s.state is not State.RETIRED}
        if leftover.generation in live:
            continue  # switched on some shards: dropped as an old generation after the switch
        logger.info(
            "rebuild_stats: removing generation %d (%s), %s since %s",
            leftover.generation, leftover.layout.code(), leftover.state, leftover.since,
        )  # fmt: skip
        owner.drop_generation(leftover.generation)
        store.forget_leftover(leftover)
        removed += 1
    return removed


def _derive(
    store: AggregateStore,
    writer: GenerationWriter | None,
    report: RebuildReport,
    progress: Progress,
) -> None:
    """Users, totals, days and the marks still alive (of orders and events) from one
    snapshot of the ledger (written when ``writer`` is given, counted either way)."""
    with ledger.snapshot():
        for totals in ledger.user_totals():
            if writer is not None:
                writer.user(totals.user_id, totals.orders, totals.spend_cents, totals.first_ms,
                            totals.last_ms, totals.refunded_cents, totals.cancelled)  # fmt: skip
            report.users += 1
            report.orders += totals.orders
            report.refunded_cents += totals.refunded_cents
            report.cancelled += totals.cancelled
            progress(totals.orders)
        if writer is not None:
            writer.globals_from_users()
        for shard, day_totals in days_by_shard(store):
            for day in day_totals:
                if writer is not None:
                    writer.day(shard, day.day, day.orders, day.revenue_cents, day.refunded_cents)
                report.days += 1
        for shard, hours in hours_by_shard(store):
            for hour, orders, revenue, refunded in hours:
                if writer is not None:
                    writer.hour(shard, hour, orders, revenue, refunded)
        rows = ledger.product_rows(store.time_zone)
        distinct: set[str] = set()
        for shard, products, product_days in products_by_shard(store, rows):
            if writer is not None:
                writer.products(shard, products, product_days)
            distinct.update(products)
        report.products = len(distinct)
        since = store.marks_since(store.now())
        for row in ledger.recorded_since(since):
            if writer is not None:
                writer.mark(row)
            report.marks += 1
        for event in ledger.events_recorded_since(since):
            if writer is not None:
                writer.event_mark(event.event_id, event.user_id, event.fingerprint,
                                  event.received_at)  # fmt: skip
            report.event_marks += 1
        if writer is not None:
            writer.close()


def days_by_shard(store: AggregateStore) -> Iterator[tuple[int, list[ledger.DayTotals]]]:
    """Each shard's share of every day of the store's zone: grouped by day alone with one
    shard, by user and day (summed here per shard) with several."""
    if store.shards == 1:
        yield 0, ledger.day_totals(store.time_zone)
        return
    shares: dict[int, dict[date, list[int]]] = defaultdict(dict)
    for user_id, day in ledger.user_day_totals(store.time_zone):
        bucket = shares[store.shard_of(user_id)].setdefault(day.day, [0, 0, 0])
        bucket[0] += day.orders
        bucket[1] += day.revenue_cents
        bucket[2] += day.refunded_cents
    for shard, days in sorted(shares.items()):
        yield shard, [ledger.DayTotals(d, o, r, f) for d, (o, r, f) in sorted(days.items())]


ProductTotals = dict[str, tuple[int, int]]


def products_by_shard(
    store: AggregateStore, rows: Iterable[ledger.ProductRow]
) -> list[tuple[int, ProductTotals, dict[date, ProductTotals]]]:
    """Each shard's products (net units and revenue), overall and per day, from the ledger's
    rows (``ledger.product_rows``), by the apply script's rule (``stats.store.products``):
    the shard of the row's user, each row's products rounded once. Memory: the products and
    their days, not the rows."""
    currency = money.currency(store.layout.currency)
    totals: dict[int, dict[str, list[int]]] = defaultdict(dict)
    days: dict[int, dict[date, dict[str, list[int]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        shard = store.shard_of(row.user_id)
        day = days[shard][row.day]
        for product_id, (units, cents) in product_sums(row.lines, currency).items():
            for bucket in (totals[shard], day):
                found = bucket.setdefault(product_id, [0, 0])
                found[0] += row.sign * units
                found[1] += row.sign * cents
    return [
        (
            shard,
            {p: (u, r) for p, (u, r) in totals[shard].items()},
            {d: {p: (u, r) for p, (u, r) in f.items()} for d, f in days[shard].items() if f},
        )
        for shard in sorted(totals)
    ]


def hours_by_shard(
    store: AggregateStore,
) -> Iterator[tuple[int, list[tuple[str, int, int, int]]]]:
    """Each shard's share of every local hour of the store's zone: (hour, orders, gross
    cents, refunded cents: the refunds that occurred in it), the hour named by
    ``orderpipe.timeutils.hour_key``."""
    shares: dict[int, dict[str, list[int]]] = defaultdict(dict)
    by_user = store.shards > 1
    for user_id, hour, orders, revenue, refunded in ledger.hour_totals(store.time_zone, by_user):
        bucket = shares[store.shard_of(user_id) if by_user else 0].setdefault(hour, [0, 0, 0])
        bucket[0] += orders
        bucket[1] += revenue
        bucket[2] += refunded
    for shard, hours in sorted(shares.items()):
        yield shard, [(h, o, r, f) for h, (o, r, f) in sorted(hours.items())]
