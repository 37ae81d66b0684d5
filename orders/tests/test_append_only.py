"""The ledger is append-only where it lives: on PostgreSQL the database refuses UPDATE and
DELETE of its rows from any client (raw SQL here, as a ``psql`` shell or another program
would send it); forget_user's erasure of the extra fields is the one change let through.
Everywhere, the model and its queryset refuse too (tests/test_projection.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from orders import ledger
from orders.append_only import erasable_fields
from orders.models import AcceptedOrder, LedgerIsAppendOnlyError, OrderEvent
from orders.tests.conftest import accept, body_of, event_body, record, sqs_message, valid_doc

pytestmark = pytest.mark.django_db

TABLE = AcceptedOrder._meta.db_table
EVENTS = OrderEvent._meta.db_table


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only (TEST_DATABASE_URL)")


@pytest.fixture
def recorded(settings: Any) -> AcceptedOrder:
    """An order and one refund of it, each the only row of its table."""
    settings.LEDGER_EXTRA_FIELDS = ["channel"]
    accept(body_of(valid_doc() | {"channel": "web"}))
    record(sqs_message("m-rf", event_body("RF-1", amount="5.00", reason="Jane Doe moved")))
    return AcceptedOrder.objects.get(order_id="ORD1000")


def raw(sql: str, params: list[Any] | None = None) -> int:
    """One statement through a plain cursor, in a savepoint (a refused one rolls back alone)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return int(cursor.rowcount)


def row_as_stored(table: str) -> dict[str, Any]:
    """The one row of ``table`` as the database holds it, every column."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        names = [c[0] for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


@pytest.mark.parametrize(
    ("table", "statement"),
    [
        pytest.param(TABLE, f"UPDATE {TABLE} SET value_cents = 1", id="amount"),
        pytest.param(TABLE, f"UPDATE {TABLE} SET user_id = 'U-OTHER'", id="user"),
        pytest.param(TABLE, f"UPDATE {TABLE} SET order_id = order_id || '-2'", id="order-id"),
        pytest.param(TABLE, f"UPDATE {TABLE} SET ordered_at = ordered_at + interval '1 day'",
                     id="time"),
        pytest.param(TABLE, f"UPDATE {TABLE} SET items = '[]'", id="items"),
        pytest.param(TABLE, f'UPDATE {TABLE} SET extra = \'{{"channel": "app"}}\'',
                     id="extra-changed"),
        pytest.param(TABLE, f"UPDATE {TABLE} SET extra = '{{}}', value_cents = 1",
                     id="erase-and-more"),
        pytest.param(TABLE, f"DELETE FROM {TABLE}", id="delete"),
        pytest.param(TABLE, f"DELETE FROM {TABLE} WHERE order_id = 'ORD1000'", id="delete-one"),
        pytest.param(EVENTS, f"UPDATE {EVENTS} SET amount_cents = 1", id="event-amount"),
        pytest.param(EVENTS, f"UPDATE {EVENTS} SET kind = 'cancelled'", id="event-kind"),
        pytest.param(EVENTS, f"UPDATE {EVENTS} SET order_id = 'ORD-OTHER'", id="event-order"),
        pytest.param(EVENTS, f"UPDATE {EVENTS} SET reason = 'changed'", id="reason-changed"),
        pytest.param(EVENTS, f"UPDATE {EVENTS} SET reason = '', amount_cents = 1",
                     id="erase-reason-and-more"),
        pytest.param(EVENTS, f"DELETE FROM {EVENTS}", id="event-delete"),
    ],
)  # fmt: skip
def test_postgresql_refuses_to_change_history(
    postgres: None, recorded: AcceptedOrder, table: str, statement: str
) -> None:
    before = row_as_stored(table)

    with pytest.raises(IntegrityError, match=f"{table} is append-only"):
        raw(statement)

    assert row_as_stored(table) == before


def test_postgresql_lets_only_the_erasure_of_the_extra_fields_through(
    postgres: None, recorded: AcceptedOrder
) -> None:
    before = row_as_stored(TABLE)

    changed = raw(f"UPDATE {TABLE} SET extra = '{{}}' WHERE order_id = 'ORD1000'")

    after = row_as_stored(TABLE)
    assert changed == 1
    assert json.loads(before["extra"]) == {"channel": "web"}
    assert json.loads(after.pop("extra")) == {}
    before.pop("extra")
    assert after == before  # nothing else moved


def test_postgresql_refuses_an_update_of_a_row_through_the_orm_too(
    postgres: None, recorded: AcceptedOrder
) -> None:
    """Even code that goes around the model's own refusal (the base QuerySet's update)."""
    from django.db.models import QuerySet

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        QuerySet.update(AcceptedOrder.objects.all(), value_cents=0)

    assert AcceptedOrder.objects.get(order_id="ORD1000").value_cents == 10997


def test_the_erasure_empties_only_the_extra_fields_and_only_once(
    recorded: AcceptedOrder,
) -> None:
    accept(body_of(valid_doc() | {"order_id": "ORD-OTHER", "user_id": "U-OTHER"}), "msg-2")

    first = ledger.erase_extra("U100")
    second = ledger.erase_extra("U100")

    assert (first, second) == (1, 0)
    row = AcceptedOrder.objects.get(order_id="ORD1000")
    assert row.extra == {}
    assert (row.value_cents, row.user_id, row.fingerprint) == (
        recorded.value_cents, recorded.user_id, recorded.fingerprint,
    )  # fmt: skip
    assert erasable_fields(AcceptedOrder) == ("extra",)


# --- the ledger of events: the same protection, its reason the erasable field ------------------


def test_postgresql_lets_only_the_erasure_of_an_events_reason_through(
    postgres: None, recorded: AcceptedOrder
) -> None:
    before = row_as_stored(EVENTS)

    assert raw(f"UPDATE {EVENTS} SET reason = ''") == 1

    after = row_as_stored(EVENTS)
    assert (before.pop("reason"), after.pop("reason")) == ("Jane Doe moved", "")
    assert after == before


def test_an_event_row_is_refused_change_and_removal_by_the_model_on_every_database(
    recorded: AcceptedOrder,
) -> None:
    refunded = OrderEvent.objects.get()
    with pytest.raises(LedgerIsAppendOnlyError):
        refunded.save()
    with pytest.raises(LedgerIsAppendOnlyError):
        refunded.delete()
    with pytest.raises(LedgerIsAppendOnlyError):
        OrderEvent.objects.update(amount_cents=0)
    with pytest.raises(LedgerIsAppendOnlyError):
        OrderEvent.objects.all().delete()
    assert erasable_fields(OrderEvent) == ("reason",)
    assert OrderEvent.objects.get().amount_cents == 500
