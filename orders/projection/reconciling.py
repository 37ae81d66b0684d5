"""``reconcile``: compare the ledger with what Redis serves, and repair what drifted, in
bounded memory.

Both sides are streamed sorted by user and merged, ``_BATCH`` users at a time: on the ledger's
side the totals of the orders and of the events (refunds, cancellations) recorded before the
marks' window (a GROUP BY each, merged by ``ledger.user_totals``) and the orders and events
inside it (each checked for its mark, a pipeline per batch), so every user's expected totals,
refunds, first and last order time come out exact without a query per user; on Redis's side
each batch is one pipelined read (hashes and both rankings, spend ranked by net). Users and
ranking members that only Redis has are found by SCAN when the counts say there are any. Days
(a refund on the day it occurred) and totals are summed while streaming. A repair (under the
lease, in the same snapshot) fixes each batch as it goes, fenced, then rewrites the days and
totals, and compares once more.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from orderpipe import money
from orderpipe.iterutils import batched
from orderpipe.timeutils import epoch_ms, hour_key, local_day
from orders import ledger
from orders.projection.lease import LOCK_TTL_MS, rebuild_lock
from orders.projection.rebuilding import days_by_shard, hours_by_shard, products_by_shard
from stats.store import AggregateStore, GenerationWriter, UserReadback, UserStats
from stats.store.products import product_sums

logger = logging.getLogger("orders.projection")

# Called with how many ledger orders were just processed; what it returns is ignored
# (tqdm.update returns whether it redrew).
Progress = Callable[[int], object]

_BATCH = 2_000  # users per comparison batch, rows per marks check
_KEPT_DIFFERENCES = 1_000  # difference lines kept for the report (all are counted)


@dataclass
class ReconcileReport:
    checked_at: datetime
    orders: int = 0
    users: int = 0
    days: int = 0
    products: int = 0
    differences: list[str] = field(default_factory=list)  # the first _KEPT_DIFFERENCES
    difference_count: int = 0
    unapplied: int = 0  # ledger orders Redis has not applied, older than the settle time
    unapplied_events: int = 0  # ledger events Redis has not applied, likewise
    in_flight: int = 0  # orders and events younger: batches consumers are committing now
    repaired: int = 0  # writes of --repair: orders marked, users and shards' days rewritten
    remaining: int = 0  # differences still there after the repair
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Redis serves what the ledger says (now: before any repair, or after it)."""
        if self.repaired:
            return self.remaining == 0
        return not self.difference_count and not self.unapplied and not self.unapplied_events

    def differ(self, line: str) -> None:
        self.difference_count += 1
        if len(self.differences) < _KEPT_DIFFERENCES:
            self.differences.append(line)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
            "orders": self.orders,
            "users": self.users,
            "days": self.days,
            "differences": self.difference_count,
            "first_differences": self.differences[:20],
            "unapplied": self.unapplied,
            "unapplied_events": self.unapplied_events,
            "in_flight": self.in_flight,
            "repaired": self.repaired,
            "remaining": self.remaining,
            "seconds": round(self.seconds, 3),
        }


def reconcile(
    store: AggregateStore,
    *,
    repair: bool = False,
    settle: timedelta = timedelta(minutes=5),
    progress: Progress | None = None,
    lock_ttl_ms: int = LOCK_TTL_MS,
) -> ReconcileReport:
    """Compare the ledger and Redis; with ``repair`` rewrite what drifted.

    A first pass runs beside live ingestion, without the lock. Only when it finds something
    is the lock taken (consumers pause, keeping their batches) and everything compared again,
    so that an order applied between the two reads of the first pass is not reported; what
    is still different then is real. (An overlap can also hide a difference from the first
    pass; the next run finds it.) With ``repair`` the locked pass rewrites each difference as
    it finds it, fenced by the lease, and a last pass checks.
    """
    started = time.monotonic()
    report = compare(store, store.now(), settle, progress=progress)
    if not report.clean:
        logger.info(
            "reconcile_stats: %d difference(s), %d unapplied order(s); comparing again under "
            "the lock%s", report.difference_count, report.unapplied,
            " and repairing" if repair else "",
        )  # fmt: skip
        with rebuild_lock([store], lock_ttl_ms) as lease:
            writer = store.writer(None, lease.token) if repair else None
            report = compare(store, store.now(), settle, writer=writer)
            if report.repaired:
                logger.info("reconcile_stats: %d repair writes; checking", report.repaired)
                report.remaining = compare(store, store.now(), settle).difference_count
    report.seconds = time.monotonic() - started
    store.save_reconcile_report(report.as_dict())
    return report


def compare(
    store: AggregateStore,
    now: datetime,
    settle: timedelta,
    progress: Progress | None = None,
    writer: GenerationWriter | None = None,
) -> ReconcileReport:
    """Every difference between the ledger and Redis: each user (hash and both rankings),
    each day, the totals; with ``writer`` (under the lease) each one rewritten from the
    ledger as it is found."""
    return _Comparison(store, now, settle, progress or (lambda _n: None), writer).run()


@dataclass
class _Totals:
    orders: int = 0
    spend: int = 0
    first: int | None = None
    last: int | None = None
    refunded: int = 0
    cancelled: int = 0

    def add(self, totals: ledger.UserTotals) -> None:
        self.orders += totals.orders
        self.spend += totals.spend_cents
        if totals.orders:  # events alone say nothing of the order times
            self.first = totals.first_ms if self.first is None else min(self.first, totals.first_ms)
            self.last = totals.last_ms if self.last is None else max(self.last, totals.last_ms)
        self.refunded += totals.refunded_cents
        self.cancelled += totals.cancelled

    def as_ledger(self, user_id: str) -> ledger.UserTotals | None:
        if not self.orders or self.first is None or self.last is None:
            return None
        return ledger.UserTotals(user_id, self.orders, self.spend, self.first, self.last,
                                 self.refunded, self.cancelled)  # fmt: skip


@dataclass
class _User:
    """One user on the ledger's side: what Redis should have applied, everything recorded,
    and the orders and events of the window Redis has not applied."""

    user_id: str
    applied: _Totals = field(default_factory=_Totals)
    full: _Totals = field(default_factory=_Totals)
    unapplied: list[ledger.RecordedOrder] = field(default_factory=list)
    unapplied_events: list[ledger.EventRow] = field(default_factory=list)


class _Comparison:
    def __init__(
        self,
        store: AggregateStore,
        now: datetime,
        settle: timedelta,
        progress: Progress,
        writer: GenerationWriter | None,
    ) -> None:
        self.store = store
        self.now = now
        self.settle = settle
        self.progress = progress
        self.writer = writer
        self.report = ReconcileReport(checked_at=now)
        self.revenue = 0
        self.refunded = 0
        self.cancelled = 0
        self.oldest_unapplied: datetime | None = None
        self.oldest_unapplied_event: datetime | None = None
        # Per day: orders, gross revenue and refunds the ledger has and Redis never applied.
        self.unapplied_days: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
        # Per local hour (hour_key): orders, gross revenue and refunds Redis never applied.
        self.unapplied_hours: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        # Per shard: users with a hash, and with a place in each ranking (to tell whether
        # Redis has users the ledger does not); the ledger's totals for a repair.
        self.hashes = [0] * store.shards
        self.ranked: dict[str, list[int]] = {"spend": [0] * store.shards,
                                             "orders": [0] * store.shards}  # fmt: skip
        # Per shard: orders, gross spend, users, refunded, cancelled.
        self.full_shares = [[0, 0, 0, 0, 0] for _ in range(store.shards)]
        # The orders and events Redis never applied (their products are not there either).
        self.unapplied_ids: tuple[set[str], set[str]] = (set(), set())

    def run(self) -> ReconcileReport:
        self.store.live_generations()  # the reads below name the live generation's keys
        with ledger.snapshot():
            for batch in batched(self._ledger_users(), _BATCH):
                self._compare_users(batch)
            self._users_only_redis_has()
            self._ranked_only_redis_has()
            self._compare_days()
            self._compare_hours()
            self._compare_totals()
            self._compare_products()
            if self.writer is not None and (self.report.difference_count or self.report.repaired):
                self._rewrite_days_and_totals()
        if self.writer is not None:
            self.writer.close()
        self._report_unapplied()
        return self.report

    # --- the ledger's side -------------------------------------------------------------------
    def _ledger_users(self) -> Iterator[_User]:
        """Every user of the ledger in user_id order, merged from the orders and events
        recorded before the window (grouped) and those inside it (with their marks)."""
        start = self.store.window_start(self.now)
        grouped = ledger.user_totals(recorded_before=start) if start is not None else iter(())
        rows = self._rows_with_marks(ledger.recorded_since(start, by_user=True))
        events = self._events_with_marks(ledger.events_recorded_since(start, by_user=True))
        streams = heapq.merge(
            _totals_items(grouped), _row_items(rows), _event_items(events), key=_merge_key
        )
        user: _User | None = None
        for item in streams:
            if user is None or user.user_id != item.user_id:
                if user is not None:
                    yield user
                user = _User(item.user_id)
            if item.totals is not None:
                for kept in (user.applied, user.full):
                    kept.add(item.totals)
            elif item.row is not None:
                row = item.row
                when = epoch_ms(row.occurred_at)
                counted = ledger.UserTotals(row.user_id, 1, row.value_cents, when, when)
                user.full.add(counted)
                if item.applied:
                    user.applied.add(counted)
                else:
                    user.unapplied.append(row)
            elif item.event is not None:
                event = item.event
                counted = ledger.UserTotals(
                    event.user_id, 0, 0, 0, 0, event.amount_cents, int(event.cancels)
                )
                user.full.add(counted)
                if item.applied:
                    user.applied.add(counted)
                else:
                    user.unapplied_events.append(event)
        if user is not None:
            yield user

    def _rows_with_marks(
        self, rows: Iterable[ledger.RecordedOrder]
    ) -> Iterator[tuple[ledger.RecordedOrder, bool]]:
        for batch in batched(rows, _BATCH):
            yield from zip(batch, self.store.marks_exist(batch), strict=True)

    def _events_with_marks(
        self, events: Iterable[ledger.EventRow]
    ) -> Iterator[tuple[ledger.EventRow, bool]]:
        for batch in batched(events, _BATCH):
            yield from zip(batch, self.store.event_marks_exist(batch), strict=True)

    # --- users ---------------------------------------------------------------------------------
    def _compare_users(self, batch: list[_User]) -> None:
        store, report = self.store, self.report
        found = store.read_back_users([u.user_id for u in batch])
        for user, got in zip(batch, found, strict=True):
            shard = store.shard_of(user.user_id)
            want = user.applied.as_ledger(user.user_id)
            self._count_found(shard, got)
            problems = _user_problems(user.user_id, want, got)
            for problem in problems:
                report.differ(problem)
            if want is not None:
                report.users += 1
                report.orders += want.orders
                self.revenue += want.spend_cents
                self.refunded += want.refunded_cents
                self.cancelled += want.cancelled
            for row in user.unapplied:
                self._unapplied_row(row)
            for event in user.unapplied_events:
                self._unapplied_event(event)
            share, full = self.full_shares[shard], user.full
            for i, value in enumerate((full.orders, full.spend, 1, full.refunded, full.cancelled)):
                share[i] += value
            unapplied = user.unapplied or user.unapplied_events
            if self.writer is not None and (problems or unapplied):
                self._repair_user(user, got.stats is not None)
            self.progress(user.full.orders)

    def _count_found(self, shard: int, got: UserReadback) -> None:
        if got.stats is not None:
            self.hashes[shard] += 1
        if got.spend is not None:
            self.ranked["spend"][shard] += 1
        if got.orders is not None:
            self.ranked["orders"][shard] += 1

    def _unapplied_row(self, row: ledger.RecordedOrder) -> None:
        self.unapplied_ids[0].add(row.order_id)
        if row.received_at < self.now - self.settle:
            self.report.unapplied += 1
        else:
            self.report.in_flight += 1
        if self.oldest_unapplied is None or row.received_at < self.oldest_unapplied:
            self.oldest_unapplied = row.received_at
        bucket = self.unapplied_days[local_day(row.occurred_at, self.store.time_zone)]
        bucket[0] += 1
        bucket[1] += row.value_cents
        hour = self.unapplied_hours[hour_key(row.occurred_at, self.store.time_zone)]
        hour[0] += 1
        hour[1] += row.value_cents

    def _unapplied_event(self, event: ledger.EventRow) -> None:
        self.unapplied_ids[1].add(event.event_id)
        if event.received_at < self.now - self.settle:
            self.report.unapplied_events += 1
        else:
            self.report.in_flight += 1
        oldest = self.oldest_unapplied_event
        if oldest is None or event.received_at < oldest:
            self.oldest_unapplied_event = event.received_at
        self.unapplied_days[local_day(event.occurred_at, self.store.time_zone)][2] += (
            event.amount_cents
        )
        hour = hour_key(event.occurred_at, self.store.time_zone)
        self.unapplied_hours[hour][2] += event.amount_cents

    def _repair_user(self, user: _User, had_hash: bool) -> None:
        """The user as the whole ledger has it; the orders and events Redis never applied get
        their marks (their batches, when they come back, are duplicates) and count in the
        shard's totals, days, hours and products (a refund on its own day and hour); all of
        it in one fenced call, as the apply script would have done it."""
        assert self.writer is not None
        writer, shard = self.writer, self.store.shard_of(user.user_id)
        full = user.full.as_ledger(user.user_id)
        events = user.unapplied_events
        with writer.unit():
            for row in user.unapplied:
                writer.mark(row)
                day = local_day(row.occurred_at, self.store.time_zone)
                writer.add_to_day(shard, day, 1, row.value_cents)
                hour = hour_key(row.occurred_at, self.store.time_zone)
                writer.add_to_hour(shard, hour, 1, row.value_cents)
            for event in events:
                writer.event_mark(event.event_id, event.user_id, event.fingerprint,
                                  event.received_at)  # fmt: skip
                day = local_day(event.occurred_at, self.store.time_zone)
                writer.add_to_day(shard, day, 0, 0, event.amount_cents)
                hour = hour_key(event.occurred_at, self.store.time_zone)
                writer.add_to_hour(shard, hour, 0, 0, event.amount_cents)
            if user.unapplied or events:
                self._count_products(shard, user)
            if full is not None:
                writer.user(full.user_id, full.orders, full.spend_cents, full.first_ms,
                            full.last_ms, full.refunded_cents, full.cancelled)  # fmt: skip
            if user.unapplied or events:
                writer.add_to_totals(
                    shard,
                    len(user.unapplied),
                    sum(row.value_cents for row in user.unapplied),
                    0 if had_hash or user.applied.orders or not user.unapplied else 1,
                    sum(event.amount_cents for event in events),
                    sum(event.cancels for event in events),
                )
        self.report.repaired += 1 + len(user.unapplied) + len(events)

    def _count_products(self, shard: int, user: _User) -> None:
        """The products of a user's rows Redis never applied, counted as applying them does
        (in the repair's unit of that user, with their marks): a query for their lines."""
        assert self.writer is not None
        rows = ledger.product_rows(
            self.store.time_zone,
            order_ids=[row.order_id for row in user.unapplied],
            event_ids=[event.event_id for event in user.unapplied_events],
        )
        currency = money.currency(self.store.layout.currency)
        for row in rows:
            figures = product_sums(row.lines, currency)
            signed = {p: (row.sign * u, row.sign * c) for p, (u, c) in figures.items()}
            if signed:
                self.writer.add_to_products(shard, row.day, signed)

    def _users_only_redis_has(self) -> None:
        """User hashes the ledger has no orders for: counted per shard first (a SCAN), looked
        up in the ledger only where there are more than the merge found, until as many
        are found."""
        for shard in range(self.store.shards):
            extra = sum(len(b) for b in self.store.user_id_batches(shard, _BATCH))
            extra -= self.hashes[shard]
            batches = self.store.user_id_batches(shard, _BATCH)
            while extra > 0 and (batch := next(batches, None)) is not None:
                unknown = sorted(set(batch) - ledger.known_users(batch))
                extra -= len(unknown)  # none left to look for: the rest is the ledger's
                for user_id, stats in self.store.read_users(unknown).items():
                    self.report.differ(_not_in_ledger(user_id, stats))
                    if self.writer is not None:
                        self.writer.remove_user(user_id)
                        self.report.repaired += 1

    def _ranked_only_redis_has(self) -> None:
        sizes = self.store.ranking_sizes()
        for name, per_shard in sizes.items():
            for shard, size in enumerate(per_shard):
                extra = size - self.ranked[name][shard]
                batches = self.store.ranking_member_batches(name, shard, _BATCH)
                while extra > 0 and (batch := next(batches, None)) is not None:
                    members = dict(batch)
                    unknown = sorted(members.keys() - ledger.known_users(list(members)))
                    extra -= len(unknown)
                    for user_id in unknown:
                        self.report.differ(
                            f"rank:{name} {user_id}: {members[user_id]} (ledger None)"
                        )
                        if self.writer is not None:
                            self.writer.remove_user(user_id)
                            self.report.repaired += 1

    # --- days and totals -------------------------------------------------------------------------
    def _compare_days(self) -> None:
        """Each day of the store's zone: orders placed and their gross value, refunds that
        occurred on it."""
        want: dict[date, tuple[int, int, int]] = {}
        for totals in ledger.day_totals(self.store.time_zone):
            missing = self.unapplied_days.get(totals.day, [0, 0, 0])
            expected = (
                totals.orders - missing[0],
                totals.revenue_cents - missing[1],
                totals.refunded_cents - missing[2],
            )
            if any(expected):
                want[totals.day] = expected
        got = self.store.all_days()
        self.report.days = len(want)
        for day in sorted(got.keys() | want.keys()):
            found, expected = got.get(day, (0, 0, 0)), want.get(day, (0, 0, 0))
            if found != expected:
                refunds = found[2] or expected[2]  # days without refunds read as before
                self.report.differ(
                    f"day {day.isoformat()}: {found[0]} orders, {found[1]} cents"
                    + (f", {found[2]} cents refunded" if refunds else "")
                    + f" (ledger {expected[0]}, {expected[1]}"
                    + (f", {expected[2]})" if refunds else ")")
                )

    def _compare_hours(self) -> None:
        """Each local hour of the store's zone: orders placed in it and their gross value,
        refunds that occurred in it."""
        want: dict[str, tuple[int, int, int]] = {}
        for _user, hour, orders, revenue, refunded in ledger.hour_totals(self.store.time_zone):
            missing = self.unapplied_hours.get(hour, [0, 0, 0])
            expected = (orders - missing[0], revenue - missing[1], refunded - missing[2])
            if any(expected):
                want[hour] = expected
        got = self.store.all_hours()
        for hour in sorted(got.keys() | want.keys()):
            found, expected = got.get(hour, (0, 0, 0)), want.get(hour, (0, 0, 0))
            if found != expected:
                refunds = found[2] or expected[2]  # hours without refunds read as before
                self.report.differ(
                    f"hour {hour} (UTC start): {found[0]} orders, {found[1]} cents"
                    + (f", {found[2]} cents refunded" if refunds else "")
                    + f" (ledger {expected[0]}, {expected[1]}"
                    + (f", {expected[2]})" if refunds else ")")
                )

    def _compare_totals(self) -> None:
        totals = self.store.global_stats()
        got = (totals.total_orders, totals.total_revenue_cents, totals.unique_users,
               totals.refunded_cents, totals.cancelled_orders)  # fmt: skip
        want = (self.report.orders, self.revenue, self.report.users, self.refunded,
                self.cancelled)  # fmt: skip
        if got != want:
            self.report.differ(
                f"global: {got[0]} orders, {got[1]} cents, {got[2]} users, {got[3]} cents "
                f"refunded, {got[4]} cancelled (ledger {', '.join(map(str, want))})"
            )

    def _compare_products(self) -> None:
        """Each shard's products, overall and per day (units and revenue, net), against the
        ledger's less the rows Redis never applied; a product or day Redis lacks reads 0."""
        zone = self.store.time_zone
        want = {s: (t, d) for s, t, d in products_by_shard(self.store, ledger.product_rows(zone))}
        orders, events = self.unapplied_ids
        if orders or events:
            missing = ledger.product_rows(zone, order_ids=orders, event_ids=events)
            for shard, totals, days in products_by_shard(self.store, missing):
                have = want.setdefault(shard, ({}, {}))
                _subtract(have[0], totals)
                for day, figures in days.items():
                    _subtract(have[1].setdefault(day, {}), figures)
        self.report.products = len({p for totals, _days in want.values() for p in totals})
        for shard in range(self.store.shards):
            where = f" (shard {shard})" if self.store.shards > 1 else ""
            got_totals, got_days = self.store.shard_products(shard)
            want_totals, want_days = want.get(shard, ({}, {}))
            for product_id, found, expected in _product_differences(got_totals, want_totals):
                self.report.differ(
                    f"product {product_id}{where}: {found[0]} units, {found[1]} cents "
                    f"(ledger {expected[0]}, {expected[1]})"
                )
            for day in sorted(got_days.keys() | want_days.keys()):
                for product_id, found, expected in _product_differences(
                    got_days.get(day, {}), want_days.get(day, {})
                ):
                    self.report.differ(
                        f"product {product_id} on {day.isoformat()}{where}: {found[0]} "
                        f"units, {found[1]} cents (ledger {expected[0]}, {expected[1]})"
                    )

    def _rewrite_products(self) -> None:
        """Every shard's products as the whole ledger has them, each shard's in one fenced
        call (its day hashes Redis has removed first)."""
        assert self.writer is not None
        rows = ledger.product_rows(self.store.time_zone)
        want = {s: (t, d) for s, t, d in products_by_shard(self.store, rows)}
        for shard in range(self.store.shards):
            _got, got_days = self.store.shard_products(shard)
            totals, days = want.get(shard, ({}, {}))
            with self.writer.unit():
                self.writer.products(
                    shard, totals, days, stale_days=[d.isoformat() for d in got_days]
                )
        self.report.repaired += self.store.shards

    def _rewrite_days_and_totals(self) -> None:
        """Every shard's products, days, hours and totals as the whole ledger has them (the
        repair marked every row it counts), each shard's in one fenced call (its products in
        one before)."""
        assert self.writer is not None
        self._rewrite_products()
        days = dict(days_by_shard(self.store))
        hours = dict(hours_by_shard(self.store))
        for shard, (orders, spend, users, refunded, cancelled) in enumerate(self.full_shares):
            with self.writer.unit():
                self.writer.replace_hours(shard, hours.get(shard, []))
                self.writer.replace_days(
                    shard,
                    [(d.day, d.orders, d.revenue_cents, d.refunded_cents)
                     for d in days.get(shard, [])],
                )  # fmt: skip
                self.writer.set_globals(shard, orders, spend, users, refunded, cancelled)
        self.report.repaired += self.store.shards

    def _report_unapplied(self) -> None:
        if self.report.unapplied and self.oldest_unapplied is not None:
            line = (
                f"{self.report.unapplied} ledger orders recorded but never applied to Redis "
                f"(the oldest recorded at {self.oldest_unapplied.isoformat()})"
            )
            self.report.difference_count += 1
            self.report.differences.insert(0, line)
        if self.report.unapplied_events and self.oldest_unapplied_event is not None:
            line = (
                f"{self.report.unapplied_events} ledger events (refunds, cancellations) recorded "
                f"but never applied to Redis (the oldest recorded at "
                f"{self.oldest_unapplied_event.isoformat()})"
            )
            self.report.difference_count += 1
            self.report.differences.insert(0, line)


def _subtract(totals: dict[str, tuple[int, int]], less: dict[str, tuple[int, int]]) -> None:
    for product_id, (units, revenue) in less.items():
        had = totals.get(product_id, (0, 0))
        totals[product_id] = (had[0] - units, had[1] - revenue)


def _product_differences(
    got: dict[str, tuple[int, int]], want: dict[str, tuple[int, int]]
) -> Iterator[tuple[str, tuple[int, int], tuple[int, int]]]:
    for product_id in sorted(got.keys() | want.keys()):
        found, expected = got.get(product_id, (0, 0)), want.get(product_id, (0, 0))
        if found != expected:
            yield product_id, found, expected


def _user_problems(user_id: str, want: ledger.UserTotals | None, got: UserReadback) -> list[str]:
    """What differs for one user: the hash, then each ranking."""
    problems = []
    hash_problem = _hash_problem(user_id, want, got.stats)
    if hash_problem:
        problems.append(hash_problem)
    for name, value in (("spend", got.spend), ("orders", got.orders)):
        want_value = (
            None
            if want is None
            else (want.spend_cents - want.refunded_cents if name == "spend" else want.orders)
        )
        if value != want_value:
            problems.append(f"rank:{name} {user_id}: {value} (ledger {want_value})")
    return problems


def _hash_problem(
    user_id: str, want: ledger.UserTotals | None, got: UserStats | None
) -> str | None:
    if got is None:
        if want is None:
            return None
        return (f"user {user_id}: missing in Redis; ledger has {want.orders} orders, "
                f"{want.spend_cents} cents")  # fmt: skip
    if want is None:
        return _not_in_ledger(user_id, got)
    found = []
    if got.order_count != want.orders:
        found.append(f"orders {got.order_count} (ledger {want.orders})")
    if got.total_spend_cents != want.spend_cents:
        found.append(f"spend {got.total_spend_cents} cents (ledger {want.spend_cents})")
    if got.refunded_cents != want.refunded_cents:
        found.append(f"refunded {got.refunded_cents} cents (ledger {want.refunded_cents})")
    if got.cancelled_orders != want.cancelled:
        found.append(f"cancelled {got.cancelled_orders} (ledger {want.cancelled})")
    first = epoch_ms(got.first_order_at) if got.first_order_at else None
    last = epoch_ms(got.last_order_at) if got.last_order_at else None
    if (first, last) != (want.first_ms, want.last_ms):
        found.append(f"first/last order ms {first}/{last} (ledger {want.first_ms}/{want.last_ms})")
    return f"user {user_id}: " + ", ".join(found) if found else None


@dataclass(frozen=True, slots=True)
class _Item:
    """A merged item of one user: the grouped totals of the orders and events before the
    window, or one order or one event inside it with whether its mark exists."""

    user_id: str
    kind: int  # 0 grouped totals, 1 an order, 2 an event: a user's totals come first
    totals: ledger.UserTotals | None = None
    row: ledger.RecordedOrder | None = None
    event: ledger.EventRow | None = None
    applied: bool = False


def _totals_items(grouped: Iterable[ledger.UserTotals]) -> Iterator[_Item]:
    return (_Item(totals.user_id, 0, totals=totals) for totals in grouped)


def _row_items(rows: Iterable[tuple[ledger.RecordedOrder, bool]]) -> Iterator[_Item]:
    return (_Item(row.user_id, 1, row=row, applied=applied) for row, applied in rows)


def _event_items(events: Iterable[tuple[ledger.EventRow, bool]]) -> Iterator[_Item]:
    return (_Item(e.user_id, 2, event=e, applied=applied) for e, applied in events)


def _merge_key(item: _Item) -> tuple[str, int]:
    """By user; a user's grouped totals before its orders, its orders before its events."""
    return item.user_id, item.kind


def _not_in_ledger(user_id: str, got: UserStats) -> str:
    return (f"user {user_id}: not in the ledger; Redis has {got.order_count} orders, "
            f"{got.total_spend_cents} cents")  # fmt: skip
