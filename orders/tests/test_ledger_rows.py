"""The consumer's cheaper ways of writing the same ledger rows: an order's fingerprints worked
out once, a batch's orders inserted on PostgreSQL as one JSON parameter (``_json_insert``)
with the very values the ``VALUES`` form (``_insert``) writes, and read back in the same
statement."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders import ledger
from orders.models import AcceptedOrder
from orders.tests.conftest import SENT_ATTRIBUTES, body_of, valid_doc
from orders.validation import Order, validate_message

COLUMNS = [c for c in ledger._ORDER_COLUMNS if c != "order_id"]


def order_of(doc: dict[str, Any]) -> Order:
    order = validate_message(body_of(doc), SENT_ATTRIBUTES)
    assert isinstance(order, Order), order
    return order


def test_an_orders_fingerprints_are_worked_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    order = order_of(valid_doc())
    fresh = order_of(valid_doc())
    fingerprint, legacy = fresh.fingerprint, fresh.legacy_fingerprint
    calls: list[str] = []
    work_out = Order._work_out_fingerprint

    def counted(self: Order) -> str:
        calls.append(self.order_id)
        return work_out(self)

    monkeypatch.setattr(Order, "_work_out_fingerprint", counted)
    assert [order.fingerprint for _ in range(4)] == [fingerprint] * 4
    assert order.legacy_fingerprint == legacy
    assert calls == ["ORD1000"]
    # Kept out of equality and hashing: an order is the same order whether it was asked or not.
    assert order == order_of(valid_doc())
    assert hash(order) == hash(order_of(valid_doc()))


def test_a_changed_order_has_its_own_fingerprint() -> None:
    order = order_of(valid_doc())
    assert order.fingerprint
    later = replace(order, ordered_at=datetime(2025, 8, 9, 11, tzinfo=UTC))
    assert later.fingerprint != order.fingerprint
    assert later.fingerprint == later._work_out_fingerprint()
    assert replace(order, order_id="ORD2").legacy_fingerprint != order.legacy_fingerprint


def rows(prefix: str) -> list[tuple[Any, ...]]:
    """Ledger rows (``_ORDER_COLUMNS`` order) with every kind of value a row holds: text
    beyond ASCII, quotes, large integers, datetimes with microseconds in other offsets, JSON
    with nested objects, empty JSON."""
    received = datetime(2025, 8, 9, 10, 16, 0, 123456, tzinfo=UTC)
    east = timezone(timedelta(hours=5, minutes=30))
    return [
        (f"{prefix}-1", "Ü-\"quoted\" 用户", 999_999_999_99, datetime(2025, 1, 2, 3, 4, 5, 6, east),
         date(2025, 1, 1), [{"product_id": "P\\1", "quantity": 2, "price_per_unit": "19.990"}],
         "2:abc", "m-1", received, "USD", {"channel": "web", "n": [1, "2", None]}),
        (f"{prefix}-2", "U2", 0, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
         date(1999, 12, 31), [], "2:def", "", received, "JPY", {}),
    ]  # fmt: skip


def json_insert(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
    insert, keys, converters = ledger._json_insert(
        connection, AcceptedOrder, ledger._ORDER_COLUMNS, ""
    )
    cursor.execute(insert, [ledger._json_rows(keys, converters, rows)])


@pytest.mark.django_db
def test_the_json_insert_writes_what_the_values_insert_writes() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("json_to_recordset is PostgreSQL's; elsewhere VALUES is the only form")
    with connection.cursor() as cursor:
        ledger._insert(connection, cursor, AcceptedOrder, ledger._ORDER_COLUMNS, rows("V"))
        json_insert(cursor, rows("J"))
    written = {row[0]: row[1:] for row in AcceptedOrder.objects.values_list("order_id", *COLUMNS)}
    assert written["J-1"] == written["V-1"]
    assert written["J-2"] == written["V-2"]
    assert written["J-1"][0] == 'Ü-"quoted" 用户'
    assert written["J-1"][2] == datetime(2025, 1, 1, 21, 34, 5, 6, tzinfo=UTC)


def test_a_naive_time_is_refused_rather_than_guessed() -> None:
    naive = [(*rows("N")[0][:3], datetime(2025, 1, 2, 3, 4), *rows("N")[0][4:])]
    converters = [ledger._json_converter(f) for f in ledger._columns_of(
        AcceptedOrder, ledger._ORDER_COLUMNS)[0]]  # fmt: skip
    with pytest.raises(ValueError, match="naive datetime"):
        ledger._json_rows(ledger._ORDER_COLUMNS, converters, naive)


@pytest.mark.django_db
def test_a_batch_of_orders_is_written_and_read_back_in_one_statement_on_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: psycopg re-parses a statement of more than 50 parameters")
    before = datetime(2025, 8, 9, 9, 16, tzinfo=UTC)
    received = before + timedelta(hours=1)
    orders = [
        ({"MessageId": f"m{i}", "Body": "{}"}, order_of(valid_doc() | {"order_id": f"ORD{i}"}))
        for i in range(10)
    ]
    with CaptureQueriesContext(connection) as queries:
        first = ledger.record_orders(orders[:1], before)
        outcome = ledger.record_orders(orders[1:], received)
    # For each batch of new orders: the locks, then one statement, the INSERT of the batch
    # (one JSON parameter) and what the ledger holds of each id.
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 4
    for locks, write in (statements[:2], statements[2:]):
        assert locks.startswith("SELECT pg_advisory_xact_lock")
        assert write.startswith("WITH n AS (INSERT") and "json_to_recordset" in write
    assert [r.order.order_id for r in first.recorded + outcome.recorded] == [
        f"ORD{i}" for i in range(10)
    ]
    # An order seen again is read back from the rows recorded before (the statement's SELECT),
    # the same id with another payload is a conflict.
    changed = order_of(valid_doc() | {"order_id": "ORD0", "user_id": "U999"})
    again = ledger.record_orders(
        [orders[0], ({"MessageId": "m-changed", "Body": "{}"}, changed)], received
    )
    assert [(r.order.order_id, r.first_recorded_at) for r in again.recorded] == [("ORD0", before)]
    assert [(m["MessageId"], o.user_id) for m, o in again.conflicts] == [("m-changed", "U999")]
    assert AcceptedOrder.objects.count() == 10


@pytest.mark.django_db
def test_the_batch_cursor_reads_timestamps_as_django_does() -> None:
    """``_load_times_in_c``: psycopg's loader in place of Django's gives the same datetimes,
    to the microsecond, with the very tzinfo Django's gives."""
    if connection.vendor != "postgresql":
        pytest.skip("psycopg's loaders are PostgreSQL's")
    east = timezone(timedelta(hours=5, minutes=30))
    moments = [
        datetime(2025, 8, 9, 10, 16, 0, 123456, tzinfo=UTC),
        datetime(2025, 1, 2, 3, 4, 5, 6, east),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    ]
    query = "SELECT " + ", ".join(["%s::timestamptz"] * len(moments))
    with connection.cursor() as plain, connection.cursor() as fast:
        ledger._load_times_in_c(connection, fast)
        assert fast.cursor.adapters.get_loader(1184, 0) is not (
            plain.cursor.adapters.get_loader(1184, 0)
        )
        plain.execute(query, moments)
        fast.execute(query, moments)
        expected, got = plain.fetchone(), fast.fetchone()
        # The plain cursor keeps Django's loader: only the batch's cursor changed.
        plain.execute("SELECT %s::timestamptz", moments[:1])
        assert plain.fetchone()[0].tzinfo is UTC
    assert got == expected == tuple(moments)
    assert [g.tzinfo for g in got] == [e.tzinfo for e in expected]
    assert all(g.tzinfo is e.tzinfo for g, e in zip(got, expected, strict=True))


@pytest.mark.django_db
def test_a_connection_not_in_utc_keeps_djangos_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database TIME_ZONE (or no USE_TZ) makes Django read times otherwise: left to it."""
    if connection.vendor != "postgresql":
        pytest.skip("psycopg's loaders are PostgreSQL's")
    monkeypatch.setitem(connection.__dict__, "timezone", ZoneInfo("UTC"))
    with connection.cursor() as cursor:
        before = cursor.cursor.adapters.get_loader(1184, 0)
        ledger._load_times_in_c(connection, cursor)
        assert cursor.cursor.adapters.get_loader(1184, 0) is before
