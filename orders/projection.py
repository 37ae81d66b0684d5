"""Redis as a read model of the ledger: derive it again (rebuild) and check it (reconcile).

``rebuild`` recomputes every aggregate from the ledger (grouped in the database, written with
pipelined commands) into a fresh key generation and switches to it at once, so the API never
serves a half-built state. ``reconcile`` compares the ledger with what Redis serves and can
repair what drifted. Both are safe while consumers run: they take the store's rebuild lock,
during which consumers keep their batch in hand (visibility kept) and apply it afterwards,
against the new generation; the ledger snapshot and the idempotency marks decide which of
those orders the rebuild already counted (see the README's crash table).

Which ledger rows Redis has applied: every row first recorded before the marks' window
(``ORDER_DEDUP_TTL``) counts as applied, and a row inside the window is applied exactly when
its mark exists. That is also the rule of the apply script, so the two never disagree.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from orderpipe.timeutils import EPOCH, epoch_ms
from orders import ledger
from stats.store import AggregateStore, UserStats

logger = logging.getLogger(__name__)

LOCK_TTL_MS = 30_000  # a rebuild that dies frees the consumers within this
_MARK_BATCH = 2_000
_USER_BATCH = 2_000

# Called with how many ledger orders were just processed; what it returns is ignored
# (tqdm.update returns whether it redrew).
Progress = Callable[[int], object]


class ProjectionBusyError(Exception):
    """Another rebuild or reconcile holds the lock."""


@contextlib.contextmanager
def rebuild_lock(stores: Iterable[AggregateStore]) -> Iterator[None]:
    """Hold the lock of every shard of ``stores`` for the duration, refreshed in the
    background; consumers keep their batches meanwhile."""
    token = uuid.uuid4().hex
    held: list[AggregateStore] = []
    try:
        for store in stores:
            if not store.acquire_rebuild_lock(token, LOCK_TTL_MS):
                raise ProjectionBusyError(
                    "another rebuild_stats or reconcile_stats --repair is running"
                )
            held.append(store)
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(LOCK_TTL_MS / 3000):
                for store in held:
                    with contextlib.suppress(Exception):  # the next refresh tries again
                        store.refresh_rebuild_lock(token, LOCK_TTL_MS)

        keeper = threading.Thread(target=refresh, name="rebuild-lock", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join(5)
    finally:
        for store in held:
            store.release_rebuild_lock(token)


def _now(store: AggregateStore) -> datetime:
    """The store's clock (the one the apply script's window rule uses), as a datetime."""
    return datetime.fromtimestamp(store.clock(), UTC)


def _window_start(store: AggregateStore, now: datetime) -> datetime | None:
    """Rows first recorded since then are applied exactly when their mark exists; None when
    marks never expire (every row is inside the window)."""
    if store.dedup_ttl <= 0:
        return None
    return now - timedelta(seconds=store.dedup_ttl)


def _window_rows(store: AggregateStore, now: datetime) -> Iterator[ledger.RecordedOrder]:
    since = _window_start(store, now) or EPOCH
    return ledger.recorded_since(since)


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- rebuild ----------------------------------------------------------------------------------
@dataclass
class RebuildReport:
    generation: int
    orders: int = 0
    users: int = 0
    days: int = 0
    marks: int = 0
    removed_keys: int = 0
    shards: int = 1
    seconds: float = 0.0
    dry_run: bool = False


def rebuild(
    store: AggregateStore,
    *,
    previous: AggregateStore | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RebuildReport:
    """Derive every aggregate of ``store`` from the ledger into a new generation and switch.

    ``previous`` is the store of the layout the aggregates live in now when it differs from
    ``store``'s (another ``REDIS_SHARDS``): its keys are removed afterwards, its ingestion
    counters carried over, and it is retired so a consumer still configured for it stops.
    """
    started = time.monotonic()
    progress = progress or (lambda _n: None)
    moving = previous is not None and previous.shards != store.shards
    stores = [store, previous] if moving and previous is not None else [store]
    lock = contextlib.nullcontext() if dry_run else rebuild_lock(stores)
    with lock:
        old = {id(s): s.live_generations() for s in stores}
        generation = max(g for gens in old.values() for g in gens) + 1
        report = RebuildReport(generation=generation, shards=store.shards, dry_run=dry_run)
        writer = store.writer(generation)
        write = not dry_run
        with ledger.snapshot():
            for totals in ledger.user_totals():
                if write:
                    writer.user(totals.user_id, totals.orders, totals.spend_cents,
                                totals.first_ms, totals.last_ms)  # fmt: skip
                report.users += 1
                report.orders += totals.orders
                progress(totals.orders)
            if write:
                writer.globals_from_users()
            for shard, day_totals in _days_by_shard(store):
                for day in day_totals:
                    if write:
                        writer.day(shard, day.day, day.orders, day.revenue_cents)
                    report.days += 1
            for row in _window_rows(store, _now(store)):
                if write:
                    writer.mark(row)
                report.marks += 1
            writer.close()
        if write:
            if moving and previous is not None:
                store.add_ingestion(previous.ingestion())
            store.switch_generation(generation)
    if write:
        if moving and previous is not None:
            report.removed_keys = previous.drop_shard_keys()
            previous.retire(store.shards)
        else:
            for old_generation in set(old[id(store)]):
                report.removed_keys += store.drop_generation(old_generation)
    report.seconds = time.monotonic() - started
    return report


def _days_by_shard(store: AggregateStore) -> Iterator[tuple[int, list[ledger.DayTotals]]]:
    """Each shard's share of every day: grouped by day alone with one shard, by user and day
    (summed here per shard) with several."""
    if store.shards == 1:
        yield 0, ledger.day_totals()
        return
    shares: dict[int, dict[date, list[int]]] = defaultdict(dict)
    for user_id, day in ledger.user_day_totals():
        bucket = shares[store.shard_of(user_id)].setdefault(day.day, [0, 0])
        bucket[0] += day.orders
        bucket[1] += day.revenue_cents
    for shard, days in sorted(shares.items()):
        yield shard, [ledger.DayTotals(d, o, r) for d, (o, r) in sorted(days.items())]


# --- reconcile --------------------------------------------------------------------------------
@dataclass
class Expected:
    """What Redis should serve: the ledger minus the rows Redis has not applied (yet)."""

    users: dict[str, ledger.UserTotals] = field(default_factory=dict)
    days: dict[date, list[int]] = field(default_factory=dict)
    orders: int = 0
    revenue: int = 0
    unapplied: list[ledger.RecordedOrder] = field(default_factory=list)


@dataclass
class ReconcileReport:
    checked_at: datetime
    orders: int = 0
    users: int = 0
    days: int = 0
    differences: list[str] = field(default_factory=list)
    unapplied: int = 0  # ledger rows Redis has not applied, older than the settle time
    in_flight: int = 0  # ... younger: batches consumers are committing right now
    repaired: int = 0  # orders and users rewritten by --repair
    remaining: int = 0  # differences still there after the repair
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Redis serves what the ledger says (now: before any repair, or after it)."""
        if self.repaired:
            return self.remaining == 0
        return not self.differences and not self.unapplied

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
            "orders": self.orders,
            "users": self.users,
            "days": self.days,
            "differences": len(self.differences),
            "first_differences": self.differences[:20],
            "unapplied": self.unapplied,
            "in_flight": self.in_flight,
            "repaired": self.repaired,
            "remaining": self.remaining,
            "seconds": round(self.seconds, 3),
        }


def _expected(store: AggregateStore, now: datetime) -> Expected:
    """The ledger grouped in the database, minus the unapplied rows of the marks' window."""
    expected = Expected(unapplied=_unapplied(store, now))
    missing_by_user: dict[str, list[ledger.RecordedOrder]] = defaultdict(list)
    for row in expected.unapplied:
        missing_by_user[row.user_id].append(row)
    for totals in ledger.user_totals():
        missing = missing_by_user.get(totals.user_id)
        if missing:
            applied = _without(totals, missing)
            if applied is None:
                continue
            totals = applied
        expected.users[totals.user_id] = totals
    for day in ledger.day_totals():
        expected.days[day.day] = [day.orders, day.revenue_cents]
    for row in expected.unapplied:
        bucket = expected.days[row.day]
        bucket[0] -= 1
        bucket[1] -= row.value_cents
    expected.days = {d: b for d, b in expected.days.items() if b[0]}
    expected.orders = sum(u.orders for u in expected.users.values())
    expected.revenue = sum(u.spend_cents for u in expected.users.values())
    return expected


def _without(
    totals: ledger.UserTotals, missing: list[ledger.RecordedOrder]
) -> ledger.UserTotals | None:
    """A user's totals without the rows Redis has not applied; None when none is left.

    First and last order times come from the applied rows only, which the grouped totals
    cannot tell apart: those users (few, and only while batches are in flight) are asked
    again row by row.
    """
    orders = totals.orders - len(missing)
    if orders <= 0:
        return None
    spend = totals.spend_cents - sum(r.value_cents for r in missing)
    times = [
        epoch_ms(t)
        for t in ledger.order_times(totals.user_id, exclude={r.order_id for r in missing})
    ]
    return ledger.UserTotals(totals.user_id, orders, spend, min(times), max(times))


def _user_problems(
    user_id: str, want: ledger.UserTotals | None, got: UserStats | None
) -> str | None:
    if got is None:
        if want is None:
            return None
        return (f"user {user_id}: missing in Redis; ledger has {want.orders} orders, "
                f"{want.spend_cents} cents")  # fmt: skip
    if want is None:
        return (f"user {user_id}: not in the ledger; Redis has {got.order_count} orders, "
                f"{got.total_spend_cents} cents")  # fmt: skip
    found = []
    if got.order_count != want.orders:
        found.append(f"orders {got.order_count} (ledger {want.orders})")
    if got.total_spend_cents != want.spend_cents:
        found.append(f"spend {got.total_spend_cents} cents (ledger {want.spend_cents})")
    first = epoch_ms(got.first_order_at) if got.first_order_at else None
    last = epoch_ms(got.last_order_at) if got.last_order_at else None
    if (first, last) != (want.first_ms, want.last_ms):
        found.append(f"first/last order ms {first}/{last} (ledger {want.first_ms}/{want.last_ms})")
    return f"user {user_id}: " + ", ".join(found) if found else None


def compare(
    store: AggregateStore, now: datetime, settle: timedelta, progress: Progress | None = None
) -> tuple[ReconcileReport, set[str]]:
    """Every difference between the ledger and Redis: each user (hash and both rankings),
    each day, the totals. Returns the report and the users that differ."""
    report = ReconcileReport(checked_at=now)
    progress = progress or (lambda _n: None)
    store.live_generations()  # the reads below name the live generation's keys
    with ledger.snapshot():
        expected = _expected(store, now)
    for row in expected.unapplied:
        if row.received_at < now - settle:
            report.unapplied += 1
        else:
            report.in_flight += 1
    if report.unapplied:
        oldest = min(r.received_at for r in expected.unapplied)
        report.differences.append(
            f"{report.unapplied} ledger orders recorded but never applied to Redis "
            f"(the oldest recorded at {oldest.isoformat()})"
        )
    differing: set[str] = set()
    want_users = expected.users
    report.users = len(want_users)
    report.orders = expected.orders
    for batch in _batched(sorted(want_users), _USER_BATCH):
        got = store.read_users(batch)
        for user_id in batch:
            problem = _user_problems(user_id, want_users[user_id], got.get(user_id))
            if problem:
                differing.add(user_id)
                report.differences.append(problem)
            progress(want_users[user_id].orders)
    extra = [u for u in store.scan_user_ids() if u not in want_users]
    for batch in _batched(extra, _USER_BATCH):
        for user_id, stats in store.read_users(batch).items():
            differing.add(user_id)
            report.differences.append(_user_problems(user_id, None, stats) or "")
    for name, value_of in (("spend", _spend), ("orders", _orders)):
        ranked = dict(store.ranking_entries(name))
        for user_id in sorted(want_users.keys() | ranked.keys()):
            want = want_users.get(user_id)
            want_value = value_of(want) if want else None
            if ranked.get(user_id) != want_value:
                differing.add(user_id)
                report.differences.append(
                    f"rank:{name} {user_id}: {ranked.get(user_id)} (ledger {want_value})"
                )
    got_days = store.all_days()
    report.days = len(expected.days)
    for day in sorted(got_days.keys() | expected.days.keys()):
        got_pair = tuple(got_days.get(day, (0, 0)))
        want_pair = tuple(expected.days.get(day, (0, 0)))
        if got_pair != want_pair:
            report.differences.append(
                f"day {day.isoformat()}: {got_pair[0]} orders, {got_pair[1]} cents "
                f"(ledger {want_pair[0]}, {want_pair[1]})"
            )
    totals = store.global_stats()
    got_global = (totals.total_orders, totals.total_revenue_cents, totals.unique_users)
    want_global = (expected.orders, expected.revenue, len(want_users))
    if got_global != want_global:
        report.differences.append(
            f"global: {got_global[0]} orders, {got_global[1]} cents, {got_global[2]} users "
            f"(ledger {want_global[0]}, {want_global[1]}, {want_global[2]})"
        )
    return report, differing


def _spend(totals: ledger.UserTotals) -> int:
    return totals.spend_cents


def _orders(totals: ledger.UserTotals) -> int:
    return totals.orders


def reconcile(
    store: AggregateStore,
    *,
    repair: bool = False,
    settle: timedelta = timedelta(minutes=5),
    progress: Progress | None = None,
) -> ReconcileReport:
    """Compare the ledger and Redis; with ``repair`` rewrite what drifted.

    A first pass runs beside live ingestion, without the lock. Only when it finds something
    is the lock taken (consumers pause, keeping their batches) and everything compared again,
    so that an order applied between the two reads of the first pass is not reported; what
    is still different then is real. (An overlap can also hide a difference from the first
    pass; the next run finds it.) With ``repair`` the differences are rewritten under the same
    lock and checked once more.
    """
    started = time.monotonic()
    report, _differing = compare(store, _now(store), settle, progress=progress)
    if report.clean:
        report.seconds = time.monotonic() - started
        store.save_reconcile_report(report.as_dict())
        return report
    with rebuild_lock([store]):
        report, differing = compare(store, _now(store), settle)
        if repair and not report.clean:
            with ledger.snapshot():
                report.repaired = _repair(store, differing)
            after, _differing = compare(store, _now(store), settle)
            report.remaining = len(after.differences)
    report.seconds = time.monotonic() - started
    store.save_reconcile_report(report.as_dict())
    return report


def _unapplied(store: AggregateStore, now: datetime) -> list[ledger.RecordedOrder]:
    """The ledger rows of the marks' window that Redis has not applied (no mark)."""
    unapplied = []
    for batch in _batched(_window_rows(store, now), _MARK_BATCH):
        unapplied += [
            row for row, ok in zip(batch, store.marks_exist(batch), strict=True) if not ok
        ]
    return unapplied


def _repair(store: AggregateStore, differing: set[str]) -> int:
    """Make Redis equal the whole ledger, in the live generation, while the lock is held.

    Runs in a snapshot of its own: what it writes and which marks it sets come from the same
    moment of the ledger. Orders a consumer recorded since the comparison (its batch waits
    for the lock) are either in this snapshot, and get their mark with the rest, or not, and
    are applied by their batch afterwards. The rows Redis never applied get their marks (their
    batches, when they come back, are duplicates) and count from now on; the users they touch
    and the users that differ are rewritten from the ledger; so are every shard's days and
    totals. Returns how many orders and users were written.
    """
    store.live_generations()
    writer = store.writer(None)
    unapplied = _unapplied(store, _now(store))
    for row in unapplied:
        writer.mark(row)
    fixed = differing | {row.user_id for row in unapplied}
    found: set[str] = set()
    for totals in ledger.user_totals(fixed):
        writer.user(totals.user_id, totals.orders, totals.spend_cents,
                    totals.first_ms, totals.last_ms)  # fmt: skip
        found.add(totals.user_id)
    for user_id in fixed - found:
        writer.remove_user(user_id)
    for shard, days in _days_by_shard(store):
        writer.replace_days(shard, [(d.day, d.orders, d.revenue_cents) for d in days])
    shares: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for totals in ledger.user_totals():
        share = shares[store.shard_of(totals.user_id)]
        share[0] += totals.orders
        share[1] += totals.spend_cents
        share[2] += 1
    for shard in range(store.shards):
        writer.set_globals(shard, *shares[shard])
    writer.close()
    return len(unapplied) + len(fixed)
