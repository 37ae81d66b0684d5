"""The ledger writer and its queries: the only code that writes ``AcceptedOrder`` and
``OrderEvent`` rows (and ``WaitingEvent`` rows, the events that wait for their order).

The ledger is the record of truth: a batch's valid orders and events are recorded here in
the same database transaction as its rejects, before Redis sees them. ``order_id`` and
``event_id`` are unique forever, so this is where a conflicting re-send (same id, other
payload) is recognised, on any number of Redis shards and long after a Redis mark expired.
An event is checked against its order's state (``orders.event_rules``) inside that
transaction, with the order locked, so that no two consumers can refund one order beyond its
value; one whose order is not recorded yet waits (``WaitingEvent``) and is recorded, in
``occurred_at`` order, by the transaction that records its order. The aggregate queries
below are what ``rebuild_stats`` and ``reconcile_stats`` derive the Redis read model from,
grouped in the database.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models.functions import Collate, ExtractMinute, Floor, TruncDate, TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orderpipe.timeutils import epoch_ms, hour_key, local_day
from orders.event_rules import (
    Effect,
    Line,
    OrderState,
    RefundedLine,
    cancelled_lines,
    lines_of,
    refunded_lines_json,
    refunded_lines_of,
)
from orders.models import AcceptedOrder, OrderEvent, WaitingEvent, encode_body
from orders.validation import (
    CANCELLED,
    Event,
    EventKind,
    Order,
    Reason,
    RefundItem,
    Rejection,
    event_rejection,
    kept_fields,
)

# Rows per INSERT statement: SQLite allows 32,766 bound parameters and each row takes 12.
_INSERT_CHUNK = 500


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
    # Its lines (the ledger's ``items``): what its products sold.
    items: tuple[Line, ...] = ()

    @property
    def legacy_fingerprint(self) -> str:
        return self.fingerprint


@dataclass(frozen=True, slots=True)
class Recorded:
    """A valid order as the ledger knows it: the payload matches the recorded one, and its
    time (so its day) is the recorded one (an undated order is dated by the SentTimestamp of
    its first message, not of a re-send).

    ``first_recorded_at`` is when the ledger first saw this ``order_id`` (now, or an earlier
    delivery); the Redis script uses it to tell an order never applied from one whose
    idempotency mark may have expired. An order the batch only refers to (an event's order,
    ``LedgerOutcome.context_orders``) is its ledger row, with no message (``{}``).
    """

    order: Order | RecordedOrder
    message: dict[str, Any]
    first_recorded_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the ledger recorded it, for Redis to apply once (its own mark).

    ``amount_cents`` is what it took off the order; ``items`` its refunded lines as
    (product_id, quantity, unit price), for a cancellation the lines it took back (what its
    order's refunds left: ``event_rules.cancelled_lines``), which its products lose.
    ``first_recorded_at`` is when the ledger recorded it (the window rule of its mark).
    ``message_id`` is the message this batch holds for it, '' for a waiting event attached
    now whose message was deleted long ago; ``counted`` says
    whether its message is in this batch (counted as received there)."""

    event_id: str
    order_id: str
    user_id: str
    kind: EventKind
    amount_cents: int
    items: tuple[tuple[str, int, Decimal], ...]
    occurred_at: datetime
    fingerprint: str
    first_recorded_at: datetime
    message_id: str
    counted: bool


def event_day(occurred_at: datetime, zone: tzinfo = UTC) -> date:
    """The day an event's refund counts on: the day it occurred (Shopify's rule), in ``zone``
    (the store applies ``STATS_TIME_ZONE``'s: ``orderpipe.timeutils.local_day``, the one rule
    for orders and events alike)."""
    return local_day(occurred_at, zone)


@dataclass(frozen=True, slots=True)
class EventRejection:
    """An event the ledger refuses against its order's state, to become a ``RejectedOrder``.

    ``message`` is the SQS message; for a waiting event rejected when its order came, the
    message as it was kept (``MessageId``, ``Body``, ``Attributes``), with when it was
    received and on which queue (None: this batch's)."""

    message: dict[str, Any]
    rejection: Rejection
    received_at: datetime | None = None
    queue_name: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    recorded: list[Recorded]
    # Same order_id recorded earlier with another payload: the first version stands.
    conflicts: list[tuple[dict[str, Any], Order]]
    # Every event Redis must see: recorded now (from this batch or attached from waiting) or
    # earlier with the same fingerprint (a redelivery), one entry per message.
    events: list[RecordedEvent] = field(default_factory=list)
    # The ledger rows of those events' orders that are not among ``recorded``.
    context_orders: list[Recorded] = field(default_factory=list)
    # Same event_id recorded (or waiting) with another payload: the first version stands.
    event_conflicts: list[tuple[dict[str, Any], Event]] = field(default_factory=list)
    # Events their order's state refuses (this batch's, and waiting ones attached now).
    event_rejections: list[EventRejection] = field(default_factory=list)
    # This batch's event messages parked for an order not recorded yet.
    waiting: int = 0


def items_json(order: Order) -> list[dict[str, Any]]:
    """Items as stored: prices as their exact decimal text, never floats."""
    return [
        {"product_id": item.product_id, "quantity": item.quantity,
         "price_per_unit": str(item.unit_price)}
        for item in order.items
    ]  # fmt: skip


# The columns each writer below fills, in the order of its VALUES rows.
_ORDER_COLUMNS = (
    "order_id", "user_id", "value_cents", "ordered_at", "day", "items", "fingerprint",
    "message_id", "received_at", "currency", "extra",
)  # fmt: skip
_EVENT_COLUMNS = (
    "event_id", "order_id", "user_id", "kind", "amount_cents", "items", "occurred_at", "reason",
    "currency", "fingerprint", "message_id", "received_at",
)  # fmt: skip
_WAITING_COLUMNS = (
    "event_id", "order_id", "kind", "amount_cents", "items", "stated_at", "occurred_at",
    "reason", "currency", "fingerprint", "message_id", "queue_name", "receive_count", "body",
    "received_at",
)  # fmt: skip


# Fields whose database value is the Python value itself (a str for a text column, an int for
# an integer one): ``_insert`` hands such values over as they are.
_PLAIN_FIELDS: dict[type[models.Field[Any, Any]], type] = {
    models.CharField: str,
    models.TextField: str,
    models.BigIntegerField: int,
    models.IntegerField: int,
    models.PositiveIntegerField: int,
}


@functools.cache
def _columns_of(
    model: type[models.Model], names: tuple[str, ...]
) -> tuple[tuple[models.Field[Any, Any], ...], tuple[type | None, ...]]:
    """The fields of ``names`` and, for each, the Python type its value needs no preparation
    in (None: always prepared by the field)."""
    # Plain columns, each with a column name, which the types of get_field (a field or a
    # relation) and of Field.column (None for a field without one) cannot tell.
    fields = tuple(cast(models.Field[Any, Any], model._meta.get_field(name)) for name in names)
    return fields, tuple(_PLAIN_FIELDS.get(type(f)) for f in fields)


def _prepared(
    connection: BaseDatabaseWrapper,
    fields: Sequence[models.Field[Any, Any]],
    plain: Sequence[type | None],
    row: Sequence[Any],
) -> list[Any]:
    """A row's values as the model's fields prepare them for ``connection``. A str for a text
    field or an int for an integer one is its own database value (their preparation returns
    it unchanged), so only the other values go through ``get_db_prep_save``: the 2-3 layers of
    method calls per value were a tenth of the ledger's CPU."""
    return [
        value if type(value) is kind else field.get_db_prep_save(value, connection)
        for field, kind, value in zip(fields, plain, row, strict=True)
    ]


_VALUES_INSERTS: dict[tuple[str, type[models.Model], tuple[str, ...]], tuple[str, str]] = {}


def _values_insert(
    connection: BaseDatabaseWrapper, model: type[models.Model], names: tuple[str, ...]
) -> tuple[str, str]:
    """``_insert``'s ``INSERT INTO … (columns) VALUES `` and one row's placeholders, built once
    per database, model and columns (quoting a dozen names took 5 µs a statement)."""
    key = (connection.vendor, model, names)
    found = _VALUES_INSERTS.get(key)
    if found is None:
        fields, _ = _columns_of(model, names)
        quote = connection.ops.quote_name
        columns = ", ".join(quote(cast(str, f.column)) for f in fields)
        # Only identifiers from the model's meta are formatted into the SQL; values are
        # parameters.
        insert = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "  # noqa: S608
        found = _VALUES_INSERTS[key] = (insert, "(" + ", ".join(["%s"] * len(fields)) + ")")
    return found


def _insert(
    connection: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    suffix: str = "",
) -> None:
    """``INSERT … VALUES`` of ``rows`` (values in the order of ``names``), chunked, with the
    model's own field preparation (``_prepared``).

    Plain SQL: the ORM's bulk_create spent 1.2 ms of CPU per batch of ten building and
    quoting the same statement (measured on PostgreSQL).
    """
    fields, plain = _columns_of(model, tuple(names))
    insert, row_sql = _values_insert(connection, model, tuple(names))
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        params = [value for row in chunk for value in _prepared(connection, fields, plain, row)]
        cursor.execute(insert + ", ".join([row_sql] * len(chunk)) + suffix, params)


def _json_rows(
    keys: Sequence[str],
    converters: Sequence[Callable[[Any], Any] | None],
    rows: Sequence[Sequence[Any]],
) -> str:
    """``rows`` as the JSON array of objects ``json_to_recordset`` reads (``_json_insert``).

    Only the columns with a converter are touched per row, and one encoder serves every
    call (``json.dumps`` with arguments builds one each time): a third less CPU than a
    comprehension over every value, for the same text."""
    converted = [(index, convert) for index, convert in enumerate(converters) if convert]
    objects = []
    for row in rows:
        values = list(row)
        for index, convert in converted:
            values[index] = convert(values[index])
        objects.append(dict(zip(keys, values, strict=True)))
    return _JSON_ENCODER.encode(objects)


# JSON text as ``json.dumps(..., ensure_ascii=False)`` writes it; a row is never circular.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)


_JSON_INSERTS: dict[
    tuple[str, type[models.Model], tuple[str, ...], str],
    tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]],
] = {}


def _json_insert(
    connection: BaseDatabaseWrapper, model: type[models.Model], names: tuple[str, ...], suffix: str
) -> tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
    """``INSERT … SELECT … FROM json_to_recordset(%s)``: the rows as one JSON parameter (see
    ``_json_rows``), with the JSON keys of its columns and how each column's value becomes
    JSON (None: as it is); built once per model and columns (``db_type`` alone costs 0.1 ms).

    PostgreSQL only. For the values a ledger row holds (text, integers, aware datetimes,
    dates, JSON lists and objects) each column gets the value the field's preparation would
    give: PostgreSQL reads the same instant from a datetime's ISO text, the same date, the
    same JSON. ``VALUES`` with one parameter per value (110 for ten orders, past psycopg's
    cache of 50 per statement) was parsed again by psycopg for every batch and its values
    adapted one by one: 0.5 ms of CPU per batch of ten, where one ``json.dumps`` takes 0.05.
    """
    key = (connection.vendor, model, names, suffix)
    if key not in _JSON_INSERTS:
        fields, _ = _columns_of(model, names)
        quote = connection.ops.quote_name
        columns = ", ".join(quote(cast(str, f.column)) for f in fields)
        types = ", ".join(f"{quote(cast(str, f.column))} {f.db_type(connection)}" for f in fields)
        # Only identifiers and types from the model's meta are formatted into the SQL.
        insert = (
            f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "  # noqa: S608
            f"SELECT {columns} FROM json_to_recordset(%s) AS r({types}){suffix}"
        )
        _JSON_INSERTS[key] = (
            insert,
            tuple(cast(str, f.column) for f in fields),
            tuple(_json_converter(f) for f in fields),
        )
    return _JSON_INSERTS[key]


def _json_converter(field: models.Field[Any, Any]) -> Callable[[Any], Any] | None:
    """How a value of ``field`` is written in ``_json_insert``'s JSON: a datetime (aware: a
    naive one has no instant) or a date as ISO text, text, numbers and JSON as they are."""
    if isinstance(field, models.DateTimeField):
        return _aware_iso
    if isinstance(field, models.DateField):
        return date.isoformat
    if type(field) in _PLAIN_FIELDS or isinstance(field, models.JSONField):
        return None
    raise TypeError(f"{field!r}: no JSON form for its values")


def _aware_iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"a naive datetime in a ledger row: {value!r}")
    return value.isoformat()


def _lock_key(kind: str, value: str) -> int:
    """A signed 64-bit advisory lock key for an order or event id (a collision only makes
    two ids wait for each other)."""
    text = f"orderpipe:{kind}:{value}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def _serialise(
    connection: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    order_ids: Collection[str],
    event_ids: Collection[str],
) -> None:
    """Make this transaction the only one touching these orders and events until it ends.

    PostgreSQL: an advisory transaction lock per order id and event id, taken in one
    statement in sorted key order (so two batches never wait for each other in a cycle),
    released at commit or rollback. A row lock would not do: the order an event waits for
    has no row yet, and a waiting event inserted by one consumer while another records its
    order would be stranded. Under READ COMMITTED every statement after the lock sees what
    the previous holder committed: the refunds recorded so far, the waiting events, the order.

    SQLite: writers take one database lock. A deferred transaction that reads first and
    writes later fails when another writer committed in between (its snapshot is stale), so
    the first statement here is a write that changes nothing: from it on this transaction
    holds the write lock (waiting its turn, ``timeout``) and reads what the last one wrote.
    Call it first in its transaction.
    """
    if connection.vendor == "postgresql":
        keys = sorted(
            {_lock_key("order", i) for i in order_ids} | {_lock_key("event", i) for i in event_ids}
        )
        # The keys as one array literal: psycopg adapts a list of ints item by item (10 µs).
        cursor.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
            ["{" + ",".join(map(str, keys)) + "}"],
        )
    else:
        table = connection.ops.quote_name(WaitingEvent._meta.db_table)
        cursor.execute(f"UPDATE {table} SET id = id WHERE 1 = 0")  # noqa: S608


def _load_times_in_c(connection: BaseDatabaseWrapper, cursor: CursorWrapper) -> None:
    """Have this cursor read timestamps with psycopg's own loader (C, with psycopg's binary
    package), not Django's (psycopg's Python loader, then the connection's zone put in): the
    read-back of a batch of ten orders, 20 timestamps, took 120 µs of CPU, now 55.

    The same datetimes, tzinfo included, on a UTC connection (``USE_TZ``, no database
    ``TIME_ZONE``), the only one this is done on: Django sets the session's TimeZone to UTC
    and makes a loader that parses in it and then puts ``datetime.UTC`` in; psycopg's
    parses in the session's zone, which for UTC is ``datetime.timezone.utc``, that very
    object. Only this cursor changes (psycopg gives each cursor its own copy of the
    loaders)."""
    # USE_TZ and no database TIME_ZONE: Django's connection is in UTC, read as datetime.UTC.
    if connection.vendor != "postgresql" or connection.timezone is not UTC:
        return
    oid, loader = _psycopg_time_loader()
    if loader is not None:
        cursor.cursor.adapters.register_loader(oid, loader)


@functools.cache
def _psycopg_time_loader() -> tuple[int, type | None]:
    """timestamptz's oid and psycopg's own loader of its text (looked up once: by name, the
    registration cost 6 µs, by oid 2); no loader under psycopg2, which has no such thing."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return 0, None
    from psycopg import adapters, postgres, pq

    oid = postgres.types["timestamptz"].oid
    return oid, adapters.get_loader(oid, pq.Format.TEXT)


def record_orders(
    orders: Sequence[tuple[dict[str, Any], Order]], received_at: datetime, using: str = "default"
) -> LedgerOutcome:
    """Record a batch of orders alone: ``record_batch`` without events."""
    return record_batch(orders, (), received_at, using=using)


def record_batch(
    orders: Sequence[tuple[dict[str, Any], Order]],
    events: Sequence[tuple[dict[str, Any], Event]],
    received_at: datetime,
    queue_name: str = "",
    using: str = "default",
) -> LedgerOutcome:
    """Record a batch's valid orders and events (each beside its SQS message).

    Runs inside the caller's transaction, so the rows commit together with the batch's
    rejects; nothing may run before it in that transaction (``_serialise``). First the
    orders and events the batch touches are locked; then the orders are recorded: one
    ``INSERT … ON CONFLICT (order_id) DO NOTHING``, then one SELECT of every id, which also
    says whether events wait for them: a row that holds the same fingerprint is this order
    (recorded now, by an earlier delivery, or by another consumer a moment ago); another
    fingerprint is a conflict. On PostgreSQL the INSERT (the batch's rows as one JSON
    parameter) and the SELECT are one statement (``_record_orders``). A batch of new orders
    with nothing waiting stops there: two statements on PostgreSQL, three elsewhere. Then
    the events (``_record_events``), and those of orders seen again
    (``_hand_on_events_of_reseen_orders``).

    The message body is not stored: only the order, plus the body's fields listed in
    ``LEDGER_EXTRA_FIELDS`` (``extra``; none by default), so personal data such as
    ``shipping_address`` never reaches the ledger, which keeps rows for ever. A waiting
    event keeps its body until it is attached (``WaitingEvent``).
    """
    if not orders and not events:
        return LedgerOutcome([], [])
    connection = connections[using]
    # No savepoint inside the caller's transaction: two round trips per batch saved. One
    # cursor for every statement (each new one cost 7 µs).
    with transaction.atomic(using=using, savepoint=False), connection.cursor() as cursor:
        _load_times_in_c(connection, cursor)
        _serialise(
            connection,
            cursor,
            {o.order_id for _, o in orders} | {e.order_id for _, e in events},
            {e.event_id for _, e in events},
        )
        recorded, conflicts, awaited = _record_orders(connection, cursor, orders, received_at)
        if not events and not awaited:
            outcome = LedgerOutcome(recorded, conflicts)
        else:
            outcome = _record_events(
                connection, cursor, recorded, conflicts, awaited, events, received_at, queue_name
            )
        _hand_on_events_of_reseen_orders(outcome, received_at, using)
        return outcome


def _hand_on_events_of_reseen_orders(
    outcome: LedgerOutcome, received_at: datetime, using: str
) -> None:
    """Add to ``outcome.events`` the recorded events of the batch's orders that an earlier
    delivery recorded (counted nowhere: their messages were counted when they came).

    A waiting event is attached in the transaction that records its order, and its message
    was deleted long before: if Redis then fails, only the order's redelivery (or the batch
    in hand, retried) can bring the event to Redis, and it finds the order already
    recorded. The event's own mark makes handing it on again harmless. Only re-seen orders
    are looked up, so a batch of new orders costs no query.
    """
    reseen = {r.order.order_id for r in outcome.recorded if r.first_recorded_at != received_at}
    if not reseen:
        return
    handed = {e.event_id for e in outcome.events}
    rows = list(
        OrderEvent.objects.using(using)
        .filter(order_id__in=sorted(reseen))
        .order_by("occurred_at", "event_id")
    )
    lines = {r.order.order_id: _lines_json(r.order) for r in outcome.recorded}
    for row in rows:
        if row.event_id in handed:
            continue
        taken = None
        if row.kind == CANCELLED:  # the lines it took back, which its row does not keep
            refunds = [e.items for e in rows if e.order_id == row.order_id and e is not row]
            taken = cancelled_lines(lines[row.order_id], refunds)
        outcome.events.append(_recorded_event(row, None, taken))


def _lines_json(order: Order | RecordedOrder) -> list[dict[str, Any]]:
    """An order's lines as the ledger stores them (``items_json``)."""
    if isinstance(order, Order):
        return items_json(order)
    return [
        {"product_id": line.product_id, "quantity": line.quantity,
         "price_per_unit": str(line.unit_price)}
        for line in order.items
    ]  # fmt: skip


def _record_orders(
    connection: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    orders: Sequence[tuple[dict[str, Any], Order]],
    received_at: datetime,
) -> tuple[list[Recorded], list[tuple[dict[str, Any], Order]], set[str]]:
    """The orders' rows (see ``record_batch``); returns them as recorded, the conflicts, and
    the ids of those for which events wait."""
    if not orders:
        return [], [], set()
    extra_fields = settings.LEDGER_EXTRA_FIELDS
    first_of: dict[str, tuple[dict[str, Any], Order]] = {}
    for message, order in orders:  # twice in one batch: the first is inserted, both compared
        first_of.setdefault(order.order_id, (message, order))
    rows = [
        (order.order_id, order.user_id, order.value_cents, order.occurred_at, order.day,
         items_json(order), order.fingerprint, message.get("MessageId", ""), received_at,
         order.currency, kept_fields(message.get("Body", ""), extra_fields))
        for message, order in first_of.values()
    ]  # fmt: skip
    ids = list(first_of)
    found: list[tuple[str, str, datetime | str, datetime | str, bool]] = []
    conflict = _order_conflict(connection)
    if connection.vendor == "postgresql":
        # One statement: the INSERT, and what the ledger holds: the rows it inserted (its
        # RETURNING) and the rows that were there before (the SELECT's snapshot, taken after
        # ``_serialise``'s locks, holds every earlier row of these ids and none of the new).
        _, keys, converters = _json_insert(connection, AcceptedOrder, _ORDER_COLUMNS, conflict)
        for start in range(0, len(ids), _INSERT_CHUNK):
            chunk = ids[start : start + _INSERT_CHUNK]
            cursor.execute(
                _order_sql(connection, len(chunk), written=True),
                [_json_rows(keys, converters, rows[start : start + _INSERT_CHUNK]), *chunk],
            )
            found += cursor.fetchall()
        # Only a writer that skips the locks could have committed a row the statement's
        # snapshot missed: read those again, as the two-statement form does.
        missing = set(ids) - {row[0] for row in found}
    else:
        _insert(connection, cursor, AcceptedOrder, _ORDER_COLUMNS, rows, conflict)
        missing = set(ids)
    for start in range(0, len(unread := [i for i in ids if i in missing]), _INSERT_CHUNK):
        chunk = unread[start : start + _INSERT_CHUNK]
        cursor.execute(_order_sql(connection, len(chunk), written=False), chunk)
        found += cursor.fetchall()
    known: dict[str, tuple[str, datetime, datetime]] = {}
    awaited: set[str] = set()
    for order_id_, fingerprint, first, ordered_at, has_waiting in found:
        known[order_id_] = (fingerprint, _aware(first), _aware(ordered_at))
        if has_waiting:
            awaited.add(order_id_)
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
    return recorded, conflicts, awaited


def _order_conflict(connection: BaseDatabaseWrapper) -> str:
    return f" ON CONFLICT ({connection.ops.quote_name('order_id')}) DO NOTHING"


# ``_order_sql``'s statements by database, ids and form: the same few texts every batch.
_ORDER_SQL: dict[tuple[str, int, bool], str] = {}
# Statements are kept for up to this many ids (an SQS batch's ten messages need 20): the
# consumer's shapes, not one of every size a large caller may pass.
_CACHED_IDS = 50


def _order_sql(connection: BaseDatabaseWrapper, ids: int, written: bool) -> str:
    """``_record_orders``' statements for ``ids`` ids, built once per shape (quoting and
    formatting them was 20 µs of every batch): the SELECT of what the ledger holds of them
    (each id's fingerprint, first received_at, ordered_at, and whether events wait for it),
    or, ``written``, PostgreSQL's INSERT of the rows (one JSON parameter) returning the same
    of the rows it inserted, with that SELECT of the rows there before."""
    key = (connection.vendor, ids, written)
    sql = _ORDER_SQL.get(key)
    if sql is not None:
        return sql
    quote = connection.ops.quote_name
    table = quote(AcceptedOrder._meta.db_table)
    waiting = quote(WaitingEvent._meta.db_table)
    order_id = quote("order_id")
    # What the ledger holds of an order (the new row's or the earlier one's), and whether
    # events wait for it; ``{}`` is the alias of the rows.
    read = (
        f"{{0}}.{order_id}, {{0}}.{quote('fingerprint')}, {{0}}.{quote('received_at')}, "  # noqa: S608
        f"{{0}}.{quote('ordered_at')}, "
        f"EXISTS (SELECT 1 FROM {waiting} w WHERE w.{order_id} = {{0}}.{order_id})"
    )
    select = (
        f"SELECT {read.format('o')} FROM {table} o WHERE o.{order_id} IN "  # noqa: S608
        f"({', '.join(['%s'] * ids)})"
    )
    sql = select
    if written:
        insert, _, _ = _json_insert(
            connection, AcceptedOrder, _ORDER_COLUMNS, _order_conflict(connection)
        )
        returning = ", ".join(quote(c) for c in ("order_id", "fingerprint", "received_at",
                                                 "ordered_at"))  # fmt: skip
        sql = (
            f"WITH n AS ({insert} RETURNING {returning}) "  # noqa: S608
            f"SELECT {read.format('n')} FROM n UNION ALL {select}"
        )
    if ids <= _CACHED_IDS:
        _ORDER_SQL[key] = sql
    return sql


def _aware(value: datetime | str) -> datetime:
    """A timestamp as read by plain SQL: PostgreSQL gives an aware datetime, SQLite the naive
    UTC text Django stored."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"the ledger holds a time that is no timestamp: {value!r}")
        value = parsed
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- Events -------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Candidate:
    """An event to check against its order now: new in this batch, or waiting until now.
    ``messages`` are this batch's messages carrying it (empty: only its waiting row)."""

    event: Event
    fingerprint: str
    messages: list[dict[str, Any]]
    waiting: WaitingEvent | None = None


def _event_of(row: WaitingEvent) -> Event:
    """The validated event a waiting row keeps."""
    return Event(
        kind=cast(EventKind, row.kind),
        event_id=row.event_id,
        order_id=row.order_id,
        amount_cents=row.amount_cents,
        items=tuple(RefundItem(i["product_id"], int(i["quantity"])) for i in row.items),
        stated_at=row.stated_at,
        occurred_at=row.occurred_at,
        reason=row.reason or None,
        currency=row.currency,
    )


def _recorded_event(
    row: OrderEvent | tuple[Any, ...],
    message: dict[str, Any] | None,
    taken: Sequence[RefundedLine] | None = None,
) -> RecordedEvent:
    """``row`` (a stored ``OrderEvent``, or the values of one just inserted, in
    ``_EVENT_COLUMNS`` order) for Redis, beside the batch message carrying it, if any.
    ``taken``: a cancellation's lines (``cancelled_lines``), which its row does not keep."""
    if isinstance(row, OrderEvent):
        values = tuple(getattr(row, name) for name in _EVENT_COLUMNS)
    else:
        values = row
    named = dict(zip(_EVENT_COLUMNS, values, strict=True))
    return RecordedEvent(
        event_id=named["event_id"],
        order_id=named["order_id"],
        user_id=named["user_id"],
        kind=named["kind"],
        amount_cents=int(named["amount_cents"]),
        items=tuple(
            (line.product_id, line.quantity, line.unit_price)
            for line in (refunded_lines_of(named["items"]) if taken is None else taken)
        ),
        occurred_at=named["occurred_at"].astimezone(UTC),
        fingerprint=named["fingerprint"],
        first_recorded_at=named["received_at"],
        message_id="" if message is None else message.get("MessageId", ""),
        counted=message is not None,
    )


def _record_events(
    connection: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    recorded: list[Recorded],
    conflicts: list[tuple[dict[str, Any], Order]],
    awaited: set[str],
    events: Sequence[tuple[dict[str, Any], Event]],
    received_at: datetime,
    queue_name: str,
) -> LedgerOutcome:
    """The batch's events, and the waiting events of orders now in the ledger.

    Every message of an event id is judged by the first: another fingerprint is a conflict,
    the same one shares its fate. An event id recorded before with the same fingerprint is a
    redelivery (Redis sees it again; its mark makes it a duplicate there); one waiting with
    the same fingerprint waits on, unless its order is in the ledger now. A new event whose
    order is not in the ledger waits. The rest, with the waiting events of their orders, are
    checked order by order (``_judge``). One SELECT (``_event_state``: the recorded and the
    waiting events of these orders or with these ids, and the orders), then the writes.
    """
    by_id: dict[str, list[tuple[dict[str, Any], Event]]] = defaultdict(list)
    for message, event in events:
        by_id[event.event_id].append((message, event))
    touched = {event.order_id for _, event in events} | awaited
    state = _event_state(connection, cursor, touched, by_id)
    recorded_events = state.recorded
    stored = {row.event_id: row for row in recorded_events if row.event_id in by_id}
    waiting_rows = {row.event_id: row for row in state.waiting}
    order_rows = {row.order_id: row for row in state.orders}

    accepted: list[RecordedEvent] = []
    event_conflicts: list[tuple[dict[str, Any], Event]] = []
    candidates: dict[str, _Candidate] = {}
    to_wait: list[tuple[dict[str, Any], Event]] = []
    waiting = 0
    for event_id, messages in by_id.items():
        first = messages[0][1]
        known: OrderEvent | WaitingEvent | None = stored.get(event_id) or waiting_rows.get(event_id)
        fingerprint = first.fingerprint if known is None else known.fingerprint
        same = [m for m, e in messages if e.fingerprint == fingerprint]
        event_conflicts += [(m, e) for m, e in messages if e.fingerprint != fingerprint]
        if not same:
            continue
        if isinstance(known, OrderEvent):
            taken = _taken_by_cancellation(known, order_rows, recorded_events)
            accepted += [_recorded_event(known, m, taken) for m in same]
        elif first.order_id in order_rows:
            candidates[event_id] = _Candidate(first, fingerprint, same, known)
        else:
            waiting += len(same)
            if known is None:
                to_wait.append((same[0], first))
    for row in waiting_rows.values():
        if row.order_id in order_rows and row.event_id not in candidates:
            candidates[row.event_id] = _Candidate(_event_of(row), row.fingerprint, [], row)

    rejections: list[EventRejection] = []
    if to_wait:
        _insert(
            connection, cursor, WaitingEvent, _WAITING_COLUMNS,
            [_waiting_row(m, e, received_at, queue_name) for m, e in to_wait],
        )  # fmt: skip
    if candidates:
        attached, rejections = _judge(
            connection, cursor, list(candidates.values()), order_rows, recorded_events,
            received_at,
        )  # fmt: skip
        accepted += attached
    recorded_ids = {r.order.order_id for r in recorded}
    context = sorted({e.order_id for e in accepted} - recorded_ids)
    return LedgerOutcome(
        recorded,
        conflicts,
        events=accepted,
        context_orders=[
            Recorded(_recorded_order(order_rows[i]), {}, order_rows[i].received_at) for i in context
        ],
        event_conflicts=event_conflicts,
        event_rejections=rejections,
        waiting=waiting,
    )


def _taken_by_cancellation(
    event: OrderEvent, order_rows: dict[str, AcceptedOrder], recorded_events: list[OrderEvent]
) -> tuple[RefundedLine, ...] | None:
    """A recorded cancellation's lines (``cancelled_lines``: its order's, less its refunds'),
    None for a refund (its row keeps its own)."""
    if event.kind != CANCELLED:
        return None
    refunds = [
        e.items
        for e in recorded_events
        if e.order_id == event.order_id and e.event_id != event.event_id
    ]
    return cancelled_lines(order_rows[event.order_id].items, refunds)


def _judge(
    connection: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    candidates: list[_Candidate],
    order_rows: dict[str, AcceptedOrder],
    recorded_events: list[OrderEvent],
    received_at: datetime,
) -> tuple[list[RecordedEvent], list[EventRejection]]:
    """Check ``candidates`` order by order, in ``occurred_at`` order (ties by event_id), each
    against the state its order's recorded events and the candidates before it left; record
    the accepted ones, reject the others, delete the waiting rows they came from."""
    by_order: dict[str, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_order[candidate.event.order_id].append(candidate)
    states = {
        order_id: OrderState(order_id, row.value_cents, row.currency, lines_of(row.items))
        for order_id, row in order_rows.items()
        if order_id in by_order
    }
    for before in recorded_events:
        if before.order_id in states:
            effect = Effect(before.amount_cents, refunded_lines_of(before.items))
            states[before.order_id].apply(cast(EventKind, before.kind), effect)
    rows: list[tuple[Any, ...]] = []
    accepted: list[RecordedEvent] = []
    rejected: list[EventRejection] = []
    for order_id, group in by_order.items():
        state, order = states[order_id], order_rows[order_id]
        for candidate in sorted(group, key=lambda c: (c.event.occurred_at, c.event.event_id)):
            event = candidate.event
            verdict = state.check(event)
            if isinstance(verdict, Effect):
                taken = state.remaining_lines() if event.kind == CANCELLED else None
                state.apply(event.kind, verdict)
                row = _event_row(candidate, order, verdict, received_at)
                rows.append(row)
                accepted += [_recorded_event(row, m, taken) for m in candidate.messages] or [
                    _recorded_event(row, None, taken)
                ]
            else:
                rejected += _rejections(candidate, verdict)
    if rows:
        _insert(connection, cursor, OrderEvent, _EVENT_COLUMNS, rows)
    attached = [c.waiting.pk for c in candidates if c.waiting is not None]
    table = connection.ops.quote_name(WaitingEvent._meta.db_table)
    for start in range(0, len(attached), _INSERT_CHUNK):
        chunk = attached[start : start + _INSERT_CHUNK]
        # Only the model's table name is formatted in; the ids are parameters.
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})",  # noqa: S608
            chunk,
        )
    return accepted, rejected


# One read for the event path: the recorded and the waiting events of the batch's orders or
# with its event ids, and those orders' rows, as one UNION ALL whose first column says which
# (``_SOURCES``). Every branch fills the same slots (``_SLOTS``), NULL where its table has no
# such column; each source turns its slots back into its model's fields (``_FIELDS``).
_SLOTS = (
    "id", "event_id", "order_id", "user_id", "kind", "amount_cents", "items", "occurred_at",
    "reason", "currency", "fingerprint", "message_id", "received_at", "stated_at", "queue_name",
    "receive_count", "body", "redacted_at", "day",
)  # fmt: skip
# Per source: its table's column for each slot it fills (the rest are NULL). An order's
# ``value_cents`` and ``ordered_at`` sit in the slots of an event's amount and time (same types).
_SOURCES: dict[str, tuple[type[models.Model], dict[str, str]]] = {
    "e": (OrderEvent, {s: s for s in ("id", *_EVENT_COLUMNS)}),
    "w": (WaitingEvent, {s: s for s in ("id", *_WAITING_COLUMNS, "redacted_at")}),
    "o": (
        AcceptedOrder,
        {"id": "id", "order_id": "order_id", "user_id": "user_id", "amount_cents": "value_cents",
         "occurred_at": "ordered_at", "day": "day", "items": "items",
         "fingerprint": "fingerprint", "received_at": "received_at", "currency": "currency"},
    ),
}  # fmt: skip
_JSON_SLOTS = frozenset({"items"})
_TIME_SLOTS = frozenset({"occurred_at", "received_at", "stated_at", "redacted_at"})


@functools.cache
def _layout(source: str) -> tuple[list[str], list[int]]:
    """A source's fields in its model's order (``Model.from_db`` takes them so) and the slot
    each is read from."""
    model, columns = _SOURCES[source]
    slot_of = {column: _SLOTS.index(slot) for slot, column in columns.items()}
    fields = [f.attname for f in model._meta.concrete_fields if f.attname in slot_of]
    return fields, [slot_of[name] for name in fields]


def _nulls(connection: BaseDatabaseWrapper) -> dict[str, str]:
    """Each slot's NULL for a branch without it. PostgreSQL types a UNION's column pairwise
    from its branches, and two bare NULLs make text, which a date or jsonb then cannot join:
    there it is a NULL of the slot's type; SQLite takes a bare NULL."""
    if connection.vendor != "postgresql":
        return dict.fromkeys(_SLOTS, "NULL")
    types = _NULLS.get(connection.vendor)
    if types is None:
        types = {}
        for model, columns in _SOURCES.values():
            for slot, column in columns.items():
                db_type = model._meta.get_field(column).db_type(connection)
                types.setdefault(slot, f"CAST(NULL AS {db_type})")
        _NULLS[connection.vendor] = types
    return types


_NULLS: dict[str, dict[str, str]] = {}


@dataclass(slots=True)
class _EventState:
    """What ``_record_events`` reads: the recorded events, the waiting events and the orders."""

    recorded: list[OrderEvent] = field(default_factory=list)
    waiting: list[WaitingEvent] = field(default_factory=list)
    orders: list[AcceptedOrder] = field(default_factory=list)


def _event_state(
    connection: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    order_ids: Collection[str],
    event_ids: Collection[str],
) -> _EventState:
    """The ``OrderEvent`` and ``WaitingEvent`` rows with one of ``order_ids`` or of
    ``event_ids``, and the ``AcceptedOrder`` rows of ``order_ids``: one statement for a batch's
    few ids (more only past ``_INSERT_CHUNK`` of them), in recording order.

    One UNION ALL rather than a query per table: the three reads answer from indexes in a tenth
    of a millisecond each, so their round trips and statements were what cost (about 5 ms of a
    batch with an event on a loaded PostgreSQL). Plain SQL and plain conversions (JSON text,
    SQLite's timestamp text) rather than ``raw()``, which spent 0.5 ms of CPU per query. Read
    after ``_serialise``, inside the batch's transaction, like the rest of the event path.
    """
    sqlite = connection.vendor == "sqlite"
    state = _EventState()
    found: dict[tuple[str, int], models.Model] = {}
    wanted = [("order_id", i) for i in sorted(order_ids)] + [
        ("event_id", i) for i in sorted(event_ids)
    ]
    for start in range(0, len(wanted), _INSERT_CHUNK):
        by_column: dict[str, list[str]] = defaultdict(list)
        for column, value in wanted[start : start + _INSERT_CHUNK]:
            by_column[column].append(value)
        shape = tuple((column, len(values)) for column, values in by_column.items())
        params = [
            value
            for _, columns in _SOURCES.values()
            for key in by_column
            if key in columns  # an order has no event_id
            for value in by_column[key]
        ]
        cursor.execute(_event_state_sql(connection, shape), params)
        for source, *values in cursor.fetchall():
            model, _ = _SOURCES[source]
            if (source, values[0]) in found:
                continue
            fields, slots = _layout(source)
            converted: list[Any] = []
            for slot in slots:
                cell = values[slot]
                if cell is not None:
                    name = _SLOTS[slot]
                    if name in _JSON_SLOTS:
                        cell = json.loads(cell)
                    elif sqlite and name in _TIME_SLOTS:
                        cell = _aware(cell)
                    elif sqlite and name == "day":
                        cell = date.fromisoformat(cell)
                converted.append(cell)
            row = model.from_db(connection.alias, fields, converted)
            found[(source, values[0])] = row
            if source == "e":
                state.recorded.append(cast(OrderEvent, row))
            elif source == "w":
                state.waiting.append(cast(WaitingEvent, row))
            else:
                state.orders.append(cast(AcceptedOrder, row))
    return state


# ``_event_state_sql``'s statements by database and shape: a few texts for every batch.
_EVENT_STATE_SQL: dict[tuple[str, tuple[tuple[str, int], ...]], str] = {}


def _event_state_sql(connection: BaseDatabaseWrapper, shape: tuple[tuple[str, int], ...]) -> str:
    """``_event_state``'s UNION ALL for ``shape``, its (column, how many ids) pairs in the
    order their ids are given (``order_id``, then ``event_id``): each source's branch, with
    the ids of the columns it has, in that order. Built once per shape: quoting and
    formatting its 60 identifiers took 30 µs of every batch with events."""
    key = (connection.vendor, shape)
    sql = _EVENT_STATE_SQL.get(key)
    if sql is not None:
        return sql
    quote = connection.ops.quote_name
    nulls = _nulls(connection)
    counts = dict(shape)
    branches: list[str] = []
    for source, (model, columns) in _SOURCES.items():
        keys = [c for c in counts if c in columns]  # an order has no event_id
        if not keys:
            continue
        selected = ", ".join(
            quote(columns[slot]) if slot in columns else nulls[slot] for slot in _SLOTS
        )
        conditions = " OR ".join(
            f"{quote(columns[key])} IN ({', '.join(['%s'] * counts[key])})" for key in keys
        )
        # Only identifiers from the models' meta are formatted in; values are parameters.
        branches.append(
            f"SELECT '{source}', {selected} "  # noqa: S608
            f"FROM {quote(model._meta.db_table)} WHERE {conditions}"
        )
    sql = " UNION ALL ".join(branches) + " ORDER BY 1, 2"
    if sum(counts.values()) <= _CACHED_IDS:
        _EVENT_STATE_SQL[key] = sql
    return sql


def _rejections(candidate: _Candidate, reasons: list[Reason]) -> list[EventRejection]:
    """The rejects of a refused event: one per batch message carrying it, and its waiting
    row's message (received earlier, maybe on another queue)."""
    rejection = event_rejection(candidate.event, reasons)
    found = [EventRejection(message, rejection) for message in candidate.messages]
    row = candidate.waiting
    if row is not None:
        kept = {
            "MessageId": row.message_id,
            "Body": bytes(row.body),
            "Attributes": {"ApproximateReceiveCount": str(row.receive_count)},
        }
        found.append(EventRejection(kept, rejection, row.received_at, row.queue_name))
    return found


def _event_row(
    candidate: _Candidate, order: AcceptedOrder, effect: Effect, received_at: datetime
) -> tuple[Any, ...]:
    """The ``OrderEvent`` values (``_EVENT_COLUMNS`` order) of an accepted event: recorded
    now, under the message that first brought it."""
    event = candidate.event
    if candidate.waiting is not None:
        message_id = candidate.waiting.message_id
    else:
        message_id = candidate.messages[0].get("MessageId", "")
    return (
        event.event_id, event.order_id, order.user_id, event.kind, effect.amount_cents,
        refunded_lines_json(effect.items), event.occurred_at, event.reason or "",
        order.currency, candidate.fingerprint, message_id, received_at,
    )  # fmt: skip


def _waiting_row(
    message: dict[str, Any], event: Event, received_at: datetime, queue_name: str
) -> tuple[Any, ...]:
    """The ``WaitingEvent`` values (``_WAITING_COLUMNS`` order) of an event whose order is
    not in the ledger: the validated event and the message as received."""
    return (
        event.event_id, event.order_id, event.kind, event.amount_cents,
        [{"product_id": i.product_id, "quantity": i.quantity} for i in event.items],
        event.stated_at, event.occurred_at, event.reason or "", event.currency,
        event.fingerprint, message.get("MessageId", ""), queue_name,
        max(int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)), 1),
        encode_body(message.get("Body", "")), received_at,
    )  # fmt: skip


def _recorded_order(row: AcceptedOrder) -> RecordedOrder:
    return RecordedOrder(
        row.order_id, row.user_id, row.value_cents, row.ordered_at, row.day, row.fingerprint,
        row.received_at, lines_of(row.items),
    )  # fmt: skip


# --- An order's events as the orders API and the admin show them -------------------------------
@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """A recorded event as shown with its order (``OrderEvent``'s shown columns)."""

    event_id: str
    kind: EventKind
    amount_cents: int
    items: list[dict[str, Any]]
    occurred_at: datetime
    reason: str


_SHOWN_EVENT_COLUMNS = ("order_id", "event_id", "kind", "amount_cents", "items", "occurred_at",
                        "reason")  # fmt: skip


def events_of_orders(
    order_ids: Collection[str], using: str = "default"
) -> dict[str, list[LedgerEvent]]:
    """The events of these orders, by order, each order's in the order they occurred (ties by
    event_id): one indexed query (``event_order_time_idx``) for a page of orders.

    Plain SQL: for a page of 100 orders the ORM spent 1.0 ms of CPU building the query and
    the rows, the database 0.2 ms (``bench/ledger_read_bench.py``)."""
    found: dict[str, list[LedgerEvent]] = defaultdict(list)
    ids = list(dict.fromkeys(order_ids))
    if not ids:
        return found
    connection = connections[using]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in _SHOWN_EVENT_COLUMNS)
    order_by = ", ".join(quote(name) for name in ("order_id", "occurred_at", "event_id"))
    # Only identifiers from the model's meta are formatted into the SQL; values are parameters.
    select = (
        f"SELECT {columns} FROM {quote(OrderEvent._meta.db_table)} "  # noqa: S608
        f"WHERE {quote('order_id')} IN "
    )
    with connection.cursor() as cursor:
        for start in range(0, len(ids), _INSERT_CHUNK):
            chunk = ids[start : start + _INSERT_CHUNK]
            placeholders = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"{select}({placeholders}) ORDER BY {order_by}", chunk)
            for order_id, event_id, kind, amount, lines, at, reason in cursor.fetchall():
                found[order_id].append(
                    LedgerEvent(
                        event_id, kind, int(amount),
                        json.loads(lines) if isinstance(lines, str) else lines, _aware(at), reason,
                    )
                )  # fmt: skip
    return found


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
        day=now.date(), items=[], fingerprint="", message_id="", received_at=now, currency="",
    )  # fmt: skip
    with contextlib.suppress(_ProbeRolledBackError), transaction.atomic(using=using):
        AcceptedOrder.objects.using(using).bulk_create([probe], ignore_conflicts=True)
        raise _ProbeRolledBackError


# --- What the read model is derived from (rebuild_stats, reconcile_stats) ------------------------
@dataclass(frozen=True, slots=True)
class UserTotals:
    """A user's orders (count, gross spend, first and last order time) and events (refunded
    cents, cancelled orders). A user with events and no order among the rows selected (by
    ``recorded_before``) has ``orders`` 0 and first/last 0."""

    user_id: str
    orders: int
    spend_cents: int
    first_ms: int
    last_ms: int
    refunded_cents: int = 0
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class DayTotals:
    """A day: orders placed on it and their gross value, refunds that occurred on it."""

    day: date
    orders: int
    revenue_cents: int
    refunded_cents: int = 0


@dataclass(frozen=True, slots=True)
class EventRow:
    """A recorded event as the read model counts it (no items, no reason)."""

    event_id: str
    order_id: str
    user_id: str
    kind: str
    amount_cents: int
    occurred_at: datetime
    fingerprint: str
    received_at: datetime

    @property
    def cancels(self) -> bool:
        return self.kind == OrderEvent.Kind.CANCELLED


_RECORDED_FIELDS = (
    "order_id", "user_id", "value_cents", "ordered_at", "day", "fingerprint", "received_at"
)  # fmt: skip
_EVENT_ROW_FIELDS = (
    "event_id", "order_id", "user_id", "kind", "amount_cents", "occurred_at", "fingerprint",
    "received_at",
)  # fmt: skip

_Row = TypeVar("_Row", bound=models.Model)


def _chunked(values: Collection[str], size: int = 5_000) -> Iterator[list[str]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_user(query: models.QuerySet[_Row], *then: str) -> models.QuerySet[_Row]:
    """``query`` in user_id order as Python compares strings (code points), so that two
    streams can be merged by user: PostgreSQL's collation may order otherwise (``C`` is
    byte order, which for UTF-8 is code point order, as is SQLite's default)."""
    if connections[query.db].vendor == "postgresql":
        return query.order_by(Collate("user_id", "C"), *then)
    return query.order_by("user_id", *then)


def _per_user_chunks(
    grouped: models.QuerySet[Any], user_ids: Collection[str] | None
) -> list[models.QuerySet[Any]]:
    if user_ids is None:
        return [grouped]
    return [grouped.filter(user_id__in=chunk) for chunk in _chunked(sorted(user_ids))]


def user_totals(
    user_ids: Collection[str] | None = None,
    recorded_before: datetime | None = None,
    using: str = "default",
    chunk_size: int = 20_000,
) -> Iterator[UserTotals]:
    """Per user: order count, gross spend, first and last order time, refunded cents and
    cancelled orders: two GROUP BYs in the database (orders, events), streamed (server-side
    cursors on PostgreSQL), both in user_id order (``_by_user``) and merged here; all users,
    or those; all rows, or those first recorded before ``recorded_before`` (each event by
    when it was recorded, not its order)."""
    rows = AcceptedOrder.objects.using(using)
    if recorded_before is not None:
        rows = rows.filter(received_at__lt=recorded_before)
    grouped = (
        _by_user(rows)
        .values_list("user_id")
        .annotate(
            n=models.Count("pk"),
            spend=models.Sum("value_cents"),
            first=models.Min("ordered_at"),
            last=models.Max("ordered_at"),
        )
    )
    refunds = _user_refunds(user_ids, recorded_before, using, chunk_size)
    pending = next(refunds, None)
    for query in _per_user_chunks(grouped, user_ids):
        for user_id, n, spend, first, last in query.iterator(chunk_size=chunk_size):
            while pending is not None and pending[0] < user_id:
                yield UserTotals(pending[0], 0, 0, 0, 0, pending[1], pending[2])
                pending = next(refunds, None)
            refunded = cancelled = 0
            if pending is not None and pending[0] == user_id:
                _, refunded, cancelled = pending
                pending = next(refunds, None)
            yield UserTotals(
                user_id, n, int(spend), epoch_ms(first), epoch_ms(last), refunded, cancelled
            )
    while pending is not None:
        yield UserTotals(pending[0], 0, 0, 0, 0, pending[1], pending[2])
        pending = next(refunds, None)


def _user_refunds(
    user_ids: Collection[str] | None,
    recorded_before: datetime | None,
    using: str,
    chunk_size: int,
) -> Iterator[tuple[str, int, int]]:
    """Per user (``_by_user`` order): refunded cents and cancelled orders."""
    rows = OrderEvent.objects.using(using)
    if recorded_before is not None:
        rows = rows.filter(received_at__lt=recorded_before)
    grouped = (
        _by_user(rows)
        .values_list("user_id")
        .annotate(
            refunded=models.Sum("amount_cents"),
            cancelled=models.Count("pk", filter=models.Q(kind=OrderEvent.Kind.CANCELLED)),
        )
    )
    for query in _per_user_chunks(grouped, user_ids):
        for user_id, refunded, cancelled in query.iterator(chunk_size=chunk_size):
            yield user_id, int(refunded), int(cancelled)


def _local_day(zone: tzinfo | None) -> models.F | TruncDate:
    """What an order's day is in ``zone``, in SQL: the stored UTC ``day`` (indexed) for UTC,
    else the date of ``ordered_at`` in the zone (``orderpipe.timeutils.local_day``'s rule;
    ``AT TIME ZONE`` on PostgreSQL, Django's zone-aware function on SQLite)."""
    if zone is None or zone == UTC or getattr(zone, "key", None) == "UTC":
        return models.F("day")
    return TruncDate("ordered_at", tzinfo=zone)


def day_totals(
    zone: tzinfo | None = None, using: str = "default", chunk_size: int = 20_000
) -> list[DayTotals]:
    """Per day of ``zone`` (None: UTC): the orders of that day (grouped in the database), and
    the refunds that occurred on it (each event's day by ``event_day``, summed here,
    streamed)."""
    query = (
        AcceptedOrder.objects.using(using)
        .annotate(local_day=_local_day(zone))
        .order_by("local_day")
        .values_list("local_day")
        .annotate(n=models.Count("pk"), revenue=models.Sum("value_cents"))
    )
    days = {day: [n, int(revenue), 0] for day, n, revenue in query}
    for _user_id, day, refunded in _event_days(zone, using, chunk_size):
        days.setdefault(day, [0, 0, 0])[2] += refunded
    return [DayTotals(day, *days[day]) for day in sorted(days)]


def _event_days(
    zone: tzinfo | None, using: str, chunk_size: int
) -> Iterator[tuple[str, date, int]]:
    """Each event's user, day in ``zone`` (``event_day``) and amount, streamed. In Python so
    that the day is decided by the one function; ~0.1 s per 100,000 events."""
    rows = OrderEvent.objects.using(using).order_by()
    for user_id, occurred_at, amount in rows.values_list(
        "user_id", "occurred_at", "amount_cents"
    ).iterator(chunk_size=chunk_size):
        yield user_id, event_day(occurred_at, zone or UTC), int(amount)


def user_day_totals(
    zone: tzinfo | None = None, using: str = "default", chunk_size: int = 20_000
) -> Iterator[tuple[str, DayTotals]]:
    """Per user and day of ``zone`` (None: UTC; the days of several shards: a shard's share
    of a day is the sum over its users, and the shard of a user is computed in Python, not in
    SQL): the orders grouped, then each event on its own day (orders 0)."""
    query = (
        AcceptedOrder.objects.using(using)
        .annotate(local_day=_local_day(zone))
        .order_by()
        .values_list("user_id", "local_day")
        .annotate(n=models.Count("pk"), revenue=models.Sum("value_cents"))
    )
    for user_id, day, n, revenue in query.iterator(chunk_size=chunk_size):
        yield user_id, DayTotals(day, n, int(revenue))
    for user_id, day, refunded in _event_days(zone, using, chunk_size):
        yield user_id, DayTotals(day, 0, 0, refunded)


@dataclass(frozen=True, slots=True)
class ProductRow:
    """A ledger row as the products' figures count it: an order's lines (``sign`` 1, on its
    day) or what a refund by items or a cancellation took back (``sign`` -1, on the event's
    day); lines as the ledger's JSON or as ``RefundedLine``s."""

    user_id: str
    day: date
    lines: Sequence[Any]
    sign: int


def product_rows(
    zone: tzinfo | None = None,
    order_ids: Collection[str] | None = None,
    event_ids: Collection[str] | None = None,
    using: str = "default",
    chunk_size: int = 5_000,
) -> Iterator[ProductRow]:
    """Every row with products, streamed (the caller sums them, in memory bounded by the
    products and days, not the orders): the orders, the refunds by items, and each
    cancellation with the lines its order's refunds left (``cancelled_lines``, its order and
    refunds read per chunk of cancellations). All rows, or only those ids (a reconcile's
    unapplied rows). Days of ``zone`` (None: UTC) by ``local_day``/``event_day``, the rule
    of the apply script's arguments."""
    zone = zone or UTC
    orders = AcceptedOrder.objects.using(using).order_by()
    events = OrderEvent.objects.using(using).order_by()
    if order_ids is not None:
        orders = orders.filter(order_id__in=list(order_ids))
    if event_ids is not None:
        events = events.filter(event_id__in=list(event_ids))
    if order_ids is None or order_ids:
        # The order's day in SQL, as the days' GROUP BYs take it (the stored UTC day for UTC):
        # a date is read faster than a timestamp converted here.
        days = orders.annotate(local_day=_local_day(zone))
        for user_id, day, items in days.values_list("user_id", "local_day", "items").iterator(
            chunk_size=chunk_size
        ):
            if items:
                yield ProductRow(user_id, day, items, 1)
    if event_ids is not None and not event_ids:
        return
    cancellations: list[tuple[str, str, str, datetime]] = []
    for event_id, order_id, user_id, kind, occurred_at, items in events.values_list(
        "event_id", "order_id", "user_id", "kind", "occurred_at", "items"
    ).iterator(chunk_size=chunk_size):
        if kind == CANCELLED:
            cancellations.append((event_id, order_id, user_id, occurred_at))
            if len(cancellations) >= _INSERT_CHUNK:
                yield from _cancelled_rows(cancellations, zone, using)
                cancellations = []
        elif items:
            yield ProductRow(user_id, event_day(occurred_at, zone), items, -1)
    yield from _cancelled_rows(cancellations, zone, using)


def _cancelled_rows(
    cancellations: Sequence[tuple[str, str, str, datetime]], zone: tzinfo, using: str
) -> Iterator[ProductRow]:
    """The lines each cancellation took back: two queries per chunk (its orders' lines, their
    other events' lines)."""
    if not cancellations:
        return
    order_ids = [order_id for _e, order_id, _u, _at in cancellations]
    lines = dict(
        AcceptedOrder.objects.using(using)
        .filter(order_id__in=order_ids)
        .values_list("order_id", "items")
    )
    refunds: dict[str, list[Any]] = defaultdict(list)
    for order_id, event_id, items in (
        OrderEvent.objects.using(using)
        .filter(order_id__in=order_ids)
        .values_list("order_id", "event_id", "items")
    ):
        refunds[order_id].append((event_id, items))
    for event_id, order_id, user_id, occurred_at in cancellations:
        others = [items for other, items in refunds[order_id] if other != event_id]
        taken = cancelled_lines(lines.get(order_id, []), others)
        if taken:
            yield ProductRow(user_id, event_day(occurred_at, zone), taken, -1)


# Since then every zone's offset is a whole number of quarters of an hour (hour_totals).
_QUARTERS_SINCE = datetime(1973, 1, 1, tzinfo=UTC)


def hour_totals(
    zone: tzinfo, by_user: bool = False, using: str = "default", chunk_size: int = 20_000
) -> Iterator[tuple[str, str, int, int, int]]:
    """(user_id, hour, orders, gross cents, refunded cents) per local hour of ``zone``
    (``hour_key``), and per user when ``by_user`` (else user_id is ""): the orders placed in
    the hour, and the refunds and cancellations that occurred in it (their ``occurred_at``,
    as their day).

    The hour is named in Python by the one rule (``orderpipe.timeutils.hour_key``; SQL's hour
    of a local time merges the two hours a daylight-saving change repeats), for groups the
    database makes first: the orders (and the events) of each UTC quarter of an hour, which
    lie in one local hour of every zone whose offsets are whole quarters of an hour, as all
    are since 1972 (Liberia's -0:44:30 was the last that was not). Older rows, whose zone may
    have had a local mean time's offset, are streamed one by one."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    orders = AcceptedOrder.objects.using(using).order_by()
    for user_id, start, n, cents in _quarter_sums(
        orders, "ordered_at", "value_cents", by_user, chunk_size
    ):
        bucket = sums[(user_id, hour_key(start, zone))]
        bucket[0] += n
        bucket[1] += cents
    events = OrderEvent.objects.using(using).order_by()
    for user_id, start, _n, cents in _quarter_sums(
        events, "occurred_at", "amount_cents", by_user, chunk_size
    ):
        sums[(user_id, hour_key(start, zone))][2] += cents
    for (user_id, hour), (n, revenue, refunded) in sums.items():
        yield user_id, hour, n, revenue, refunded


def _quarter_sums(
    rows: models.QuerySet[Any], when: str, cents: str, by_user: bool, chunk_size: int
) -> Iterator[tuple[str, datetime, int, int]]:
    """(user_id or "", an instant inside the group, rows, summed ``cents``) per UTC quarter
    hour of ``when`` (grouped in the database), and per row for rows before 1973."""
    old = rows.filter(**{f"{when}__lt": _QUARTERS_SINCE}).values_list("user_id", when, cents)
    for user_id, at, amount in old.iterator(chunk_size=chunk_size):
        yield (user_id if by_user else ""), at, 1, int(amount)
    quarters = (
        rows.filter(**{f"{when}__gte": _QUARTERS_SINCE})
        .annotate(
            utc_hour=TruncHour(when, tzinfo=UTC),
            quarter=Floor(
                ExtractMinute(when, tzinfo=UTC) / models.Value(15),
                output_field=models.IntegerField(),
            ),
        )
        .values_list(*(("user_id",) if by_user else ()), "utc_hour", "quarter")
        .annotate(n=models.Count("pk"), total=models.Sum(cents))
    )
    for row in quarters.iterator(chunk_size=chunk_size):
        utc_hour, quarter, n, total = row[-4:]
        start = utc_hour + timedelta(minutes=15 * int(quarter))
        yield (row[0] if by_user else ""), start, n, int(total)


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


def events_recorded_since(
    since: datetime | None,
    by_user: bool = False,
    using: str = "default",
    chunk_size: int = 20_000,
) -> Iterator[EventRow]:
    """Events recorded at or after ``since`` (None: every event): the ones whose marks exist
    if Redis applied them, as for orders; in user_id order (``_by_user``) when ``by_user``."""
    rows = OrderEvent.objects.using(using)
    if since is not None:
        rows = rows.filter(received_at__gte=since)
    ordered = _by_user(rows, "event_id") if by_user else rows.order_by()
    values = ordered.values_list(*_EVENT_ROW_FIELDS).iterator(chunk_size=chunk_size)
    for event_id, order_id, user_id, kind, amount, occurred_at, fingerprint, received in values:
        yield EventRow(
            event_id, order_id, user_id, kind, int(amount), occurred_at, fingerprint, received
        )


def known_users(user_ids: Collection[str], using: str = "default") -> set[str]:
    """Which of ``user_ids`` have orders in the ledger (one indexed query per 5,000)."""
    found: set[str] = set()
    for chunk in _chunked(user_ids):
        query = AcceptedOrder.objects.using(using).filter(user_id__in=chunk).order_by()
        found.update(query.values_list("user_id", flat=True).distinct())
    return found


def ledger_size(using: str = "default") -> int:
    return AcceptedOrder.objects.using(using).count()


def foreign_currency_rows(currency: str, using: str = "default") -> dict[str, int]:
    """How many ledger rows (orders and events) are in each currency other than
    ``currency``: a rebuild for ``currency`` must not add them up with its own (nothing
    converts an amount). Empty when every row is in ``currency``."""
    found: dict[str, int] = {}
    orders = AcceptedOrder.objects.using(using).exclude(currency=currency).order_by()
    events = OrderEvent.objects.using(using).exclude(currency=currency).order_by()
    for rows in (orders.values_list("currency"), events.values_list("currency")):
        for code, n in rows.annotate(n=models.Count("pk")):
            found[code] = found.get(code, 0) + n
    return dict(sorted(found.items()))


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


def erase_event_reasons(order_ids: Collection[str], using: str = "default") -> int:
    """Empty the free-text ``reason`` of the events of ``order_ids`` (one user's orders:
    ``forget_user``); returns how many held one, so a second call returns 0. No figure reads
    it: the trigger lets exactly this UPDATE through."""
    rows = OrderEvent.objects.using(using).filter(order_id__in=list(order_ids))
    return rows.exclude(reason="").erase()
