"""The ledger writer and its queries: the only code that writes ``AcceptedOrder`` rows.

The ledger is the record of truth: a batch's valid orders are recorded here in
the same database transaction as its rejects, before Redis sees them. ``order_id`` is unique
forever, so this is where a conflicting re-send (same id, other payload) is recognised, on
any number of Redis shards and long after a Redis mark expired. The aggregate queries below
are what ``rebuild_stats`` and ``reconcile_stats`` derive the Redis read model from, grouped
in the database.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, cast

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models.functions import Collate
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orderpipe.timeutils import epoch_ms
from orders.models import AcceptedOrder
from orders.validation import Order, kept_fields

# Rows per INSERT statement: SQLite allows 32,766 bound parameters and each row takes 11.
_INSERT_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Recorded:
    """A valid order as the ledger knows it: the payload matches the recorded one, and its
    time (so its day) is the recorded one (an undated order is dated by the SentTimestamp of
    its first message, not of a re-send).

    ``first_recorded_at`` is when the ledger first saw this ``order_id`` (now, or an earlier
    delivery); the Redis script uses it to tell an order never applied from one whose
    idempotency mark may have expired.
    """

    order: Order
    message: dict[str, Any]
    first_recorded_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    recorded: list[Recorded]
    # Same order_id recorded earlier with another payload: the first version stands.
    conflicts: list[tuple[dict[str, Any], Order]]


def items_json(order: Order) -> list[dict[str, Any]]:
    """Items as stored: prices as their exact decimal text, never floats."""
    return [
        {"product_id": item.product_id, "quantity": item.quantity,
         "price_per_unit": str(item.unit_price)}
        for item in order.items
    ]  # fmt: skip


# The columns record_orders writes, in the order of its VALUES rows.
_COLUMNS = (
    "order_id", "user_id", "value_cents", "ordered_at", "day", "items", "fingerprint",
    "message_id", "received_at", "extra",
)  # fmt: skip


def record_orders(
    orders: Sequence[tuple[dict[str, Any], Order]], received_at: datetime, using: str = "default"
) -> LedgerOutcome:
    """Record a batch's valid orders (each beside its SQS message); two queries.

    One ``INSERT … ON CONFLICT (order_id) DO NOTHING`` for the batch, then one SELECT of every
    id: a row that holds the same fingerprint is this order (recorded now, by an earlier
    delivery, or by another consumer a moment ago); another fingerprint is a conflict. Runs
    inside the caller's transaction, so the rows commit together with the batch's rejects.

    Plain SQL with the model's own field preparation: the ORM's bulk_create spent 1.2 ms of
    CPU per batch of ten building and quoting the same statement (measured on PostgreSQL).

    The message body is not stored: only the order, plus the body's fields listed in
    ``LEDGER_EXTRA_FIELDS`` (``extra``; none by default), so personal data such as
    ``shipping_address`` never reaches the ledger, which keeps rows for ever.
    """
    if not orders:
        return LedgerOutcome([], [])
    extra_fields = settings.LEDGER_EXTRA_FIELDS
    connection = connections[using]
    # Plain columns, each with a column name, which the types of get_field (a field or a
    # relation) and of Field.column (None for a field without one) cannot tell.
    fields = [
        cast(models.Field[Any, Any], AcceptedOrder._meta.get_field(name)) for name in _COLUMNS
    ]
    first_of: dict[str, tuple[dict[str, Any], Order]] = {}
    for message, order in orders:  # twice in one batch: the first is inserted, both compared
        first_of.setdefault(order.order_id, (message, order))
    rows = [
        (order.order_id, order.user_id, order.value_cents, order.occurred_at, order.day,
         items_json(order), order.fingerprint, message.get("MessageId", ""), received_at,
         kept_fields(message.get("Body", ""), extra_fields))
        for message, order in first_of.values()
    ]  # fmt: skip
    quote = connection.ops.quote_name
    table = quote(AcceptedOrder._meta.db_table)
    columns = ", ".join(quote(cast(str, field.column)) for field in fields)
    # Only identifiers from the model's meta are formatted into the SQL; values are parameters.
    insert = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
    on_conflict = f" ON CONFLICT ({quote('order_id')}) DO NOTHING"
    select = (
        f"SELECT {quote('order_id')}, {quote('fingerprint')}, {quote('received_at')}, "  # noqa: S608
        f"{quote('ordered_at')} FROM {table} WHERE {quote('order_id')} IN "
    )
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    known: dict[str, tuple[str, datetime, datetime]] = {}
    # No savepoint inside the caller's transaction: two round trips per batch saved.
    with transaction.atomic(using=using, savepoint=False), connection.cursor() as cursor:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            params = [
                field.get_db_prep_save(value, connection)
                for row in chunk
                for field, value in zip(fields, row, strict=True)
            ]
            cursor.execute(insert + ", ".join([row_sql] * len(chunk)) + on_conflict, params)
            ids = [row[0] for row in chunk]
            cursor.execute(select + "(" + ", ".join(["%s"] * len(ids)) + ")", ids)
            for order_id, fingerprint, first, ordered_at in cursor.fetchall():
                known[order_id] = (fingerprint, _aware(first), _aware(ordered_at))
    recorded: list[Recorded] = []
    conflicts: list[tuple[dict[str, Any], Order]] = []
    for message, order in orders:
        fingerprint, first, ordered_at = known[order.order_id]
        if fingerprint == order.fingerprint:
            # An undated order sent again is dated by its first message, as the ledger has it.
            as_recorded = (
                order if order.occurred_at == ordered_at else replace(order, occurred_at=ordered_at)
            )
            recorded.append(Recorded(as_recorded, message, first))
        else:
            conflicts.append((message, order))
    return LedgerOutcome(recorded, conflicts)


def _aware(value: datetime | str) -> datetime:
    """A timestamp as read by plain SQL: PostgreSQL gives an aware datetime, SQLite the naive
    UTC text Django stored."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"the ledger holds a received_at that is no timestamp: {value!r}")
        value = parsed
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _ProbeRolledBackError(Exception):
    pass


def probe_write(using: str = "default") -> None:
    """Prove that the database takes writes now: insert a ledger row and roll it back.

    A server made read-only by a failover still accepts connections and SELECTs; only a write
    tells. Nothing is ever committed (append-only holds), the row is never seen by anyone.
    """
    now = timezone.now()
    probe = AcceptedOrder(
        order_id=f"(probe {uuid.uuid4().hex})", user_id="", value_cents=0, ordered_at=now,
        day=now.date(), items=[], fingerprint="", message_id="", received_at=now,
    )  # fmt: skip
    with contextlib.suppress(_ProbeRolledBackError), transaction.atomic(using=using):
        AcceptedOrder.objects.using(using).bulk_create([probe], ignore_conflicts=True)
        raise _ProbeRolledBackError


# --- What the read model is derived from (rebuild_stats, reconcile_stats) ------------------------
@dataclass(frozen=True, slots=True)
class UserTotals:
    user_id: str
    orders: int
    spend_cents: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class DayTotals:
    day: date
    orders: int
    revenue_cents: int


@dataclass(frozen=True, slots=True)
class RecordedOrder:
    """A ledger row as the aggregate store applies it (what ``Order`` offers the store)."""

    order_id: str
    user_id: str
    value_cents: int
    occurred_at: datetime
    day: date
    fingerprint: str
    received_at: datetime

    @property
    def legacy_fingerprint(self) -> str:
        return self.fingerprint


_RECORDED_FIELDS = (
    "order_id", "user_id", "value_cents", "ordered_at", "day", "fingerprint", "received_at"
)  # fmt: skip


def _chunked(values: Collection[str], size: int = 5_000) -> Iterator[list[str]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_user(query: models.QuerySet[AcceptedOrder], *then: str) -> models.QuerySet[AcceptedOrder]:
    """``query`` in user_id order as Python compares strings (code points), so that two
    streams can be merged by user: PostgreSQL's collation may order otherwise (``C`` is
    byte order, which for UTF-8 is code point order, as is SQLite's default)."""
    if connections[query.db].vendor == "postgresql":
        return query.order_by(Collate("user_id", "C"), *then)
    return query.order_by("user_id", *then)


def user_totals(
    user_ids: Collection[str] | None = None,
    recorded_before: datetime | None = None,
    using: str = "default",
    chunk_size: int = 20_000,
) -> Iterator[UserTotals]:
    """Per user: order count, spend, first and last order time; GROUP BY in the database,
    streamed (a server-side cursor on PostgreSQL), in user_id order (``_by_user``); all
    users, or those; all rows, or those first recorded before ``recorded_before``."""
    rows = AcceptedOrder.objects.using(using)
    if recorded_before is not None:
        rows = rows.filter(received_at__lt=recorded_before)
    base = _by_user(rows).values_list("user_id")
    grouped = base.annotate(
        n=models.Count("pk"),
        spend=models.Sum("value_cents"),
        first=models.Min("ordered_at"),
        last=models.Max("ordered_at"),
    )
    queries = (
        [grouped]
        if user_ids is None
        else [grouped.filter(user_id__in=chunk) for chunk in _chunked(sorted(user_ids))]
    )
    for query in queries:
        for user_id, n, spend, first, last in query.iterator(chunk_size=chunk_size):
            yield UserTotals(user_id, n, int(spend), epoch_ms(first), epoch_ms(last))


def day_totals(using: str = "default") -> list[DayTotals]:
    query = (
        AcceptedOrder.objects.using(using)
        .order_by("day")
        .values_list("day")
        .annotate(n=models.Count("pk"), revenue=models.Sum("value_cents"))
    )
    return [DayTotals(day, n, int(revenue)) for day, n, revenue in query]


def user_day_totals(
    using: str = "default", chunk_size: int = 20_000
) -> Iterator[tuple[str, DayTotals]]:
    """Per user and day (the days of several shards: a shard's share of a day is the sum over
    its users, and the shard of a user is computed in Python, not in SQL)."""
    query = (
        AcceptedOrder.objects.using(using)
        .order_by()
        .values_list("user_id", "day")
        .annotate(n=models.Count("pk"), revenue=models.Sum("value_cents"))
    )
    for user_id, day, n, revenue in query.iterator(chunk_size=chunk_size):
        yield user_id, DayTotals(day, n, int(revenue))


def recorded_since(
    since: datetime | None,
    by_user: bool = False,
    using: str = "default",
    chunk_size: int = 20_000,
) -> Iterator[RecordedOrder]:
    """Orders first recorded at or after ``since`` (None: every order): the ones whose
    idempotency marks exist if Redis applied them (older marks may have expired); in
    user_id order (``_by_user``) when ``by_user``."""
    rows = AcceptedOrder.objects.using(using)
    if since is not None:
        rows = rows.filter(received_at__gte=since)
    ordered = _by_user(rows, "order_id") if by_user else rows.order_by()
    for row in ordered.values_list(*_RECORDED_FIELDS).iterator(chunk_size=chunk_size):
        yield RecordedOrder(*row)


def known_users(user_ids: Collection[str], using: str = "default") -> set[str]:
    """Which of ``user_ids`` have orders in the ledger (one indexed query per 5,000)."""
    found: set[str] = set()
    for chunk in _chunked(user_ids):
        query = AcceptedOrder.objects.using(using).filter(user_id__in=chunk).order_by()
        found.update(query.values_list("user_id", flat=True).distinct())
    return found


def ledger_size(using: str = "default") -> int:
    return AcceptedOrder.objects.using(using).count()


@contextlib.contextmanager
def snapshot(using: str = "default") -> Iterator[None]:
    """A read-only transaction whose reads all see one moment of the ledger (REPEATABLE READ
    on PostgreSQL; an SQLite read transaction in WAL mode is a snapshot already), so the
    users, days and marks of a rebuild agree with each other while consumers keep writing."""
    connection = connections[using]
    outermost = not connection.in_atomic_block  # inside a caller's transaction, that one counts
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if outermost:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # The streamed GROUP BYs are read to the end: plan them for all rows (a hash
                # aggregate over a sequential scan, 1.7 s for 1M rows), not for the first
                # tenth, which picks an index scan 15x slower.
                cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
        yield


def user_order_ids(user_id: str, using: str = "default") -> Iterator[str]:
    """The ids of ``user_id``'s orders (``ledger_user_time_idx``), streamed."""
    rows = AcceptedOrder.objects.using(using).filter(user_id=user_id).order_by()
    return rows.values_list("order_id", flat=True).iterator(chunk_size=5_000)


def erase_extra(user_id: str, using: str = "default") -> int:
    """Empty the extra fields (``LEDGER_EXTRA_FIELDS``) of ``user_id``'s orders; returns how
    many rows held any, so a second call returns 0.

    The one change a recorded row may undergo (``forget_user``): no figure reads ``extra``,
    and the PostgreSQL trigger lets exactly this UPDATE through and nothing else.
    """
    return AcceptedOrder.objects.using(using).filter(user_id=user_id).exclude(extra={}).erase()
