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


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only (TEST_DATABASE_URL)")


@pytest.fixture
def recorded(settings: Any) -> AcceptedOrder:
    settings.LEDGER_EXTRA_FIELDS = ["channel"]
    accept(body_of(valid_doc() | {"channel": "web"}))
    return AcceptedOrder.objects.get(order_id="ORD1000")


def raw(sql: str, params: list[Any] | None = None) -> int:
    """One statement through a plain cursor, in a savepoint (a refused one rolls back alone)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return int(cursor.rowcount)


def row_as_stored(order_id: str) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {TABLE} WHERE order_id = %s", [order_id])
        names = [c[0] for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(f"UPDATE {TABLE} SET value_cents = 1", id="amount"),
        pytest.param(f"UPDATE {TABLE} SET user_id = 'U-OTHER'", id="user"),
        pytest.param(f"UPDATE {TABLE} SET order_id = order_id || '-2'", id="order-id"),
        pytest.param(f"UPDATE {TABLE} SET ordered_at = ordered_at + interval '1 day'", id="time"),
        pytest.param(f"UPDATE {TABLE} SET items = '[]'", id="items"),
        pytest.param(f'UPDATE {TABLE} SET extra = \'{{"channel": "app"}}\'', id="extra-changed"),
        pytest.param(f"UPDATE {TABLE} SET extra = '{{}}', value_cents = 1", id="erase-and-more"),
        pytest.param(f"DELETE FROM {TABLE}", id="delete"),
        pytest.param(f"DELETE FROM {TABLE} WHERE order_id = 'ORD1000'", id="delete-one"),
    ],
)
def test_postgresql_refuses_to_change_history(
    postgres: None, recorded: AcceptedOrder, statement: str
) -> None:
    before = row_as_stored("ORD1000")

    with pytest.raises(IntegrityError, match=f"{TABLE} is append-only"):
        raw(statement)

    assert row_as_stored("ORD1000") == before


def test_postgresql_lets_only_the_erasure_of_the_extra_fields_through(
    postgres: None, recorded: AcceptedOrder
) -> None:
    before = row_as_stored("ORD1000")

    changed = raw(f"UPDATE {TABLE} SET extra = '{{}}' WHERE order_id = 'ORD1000'")

    after = row_as_stored("ORD1000")
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
EVENTS = OrderEvent._meta.db_table


@pytest.fixture
def refunded(recorded: AcceptedOrder) -> OrderEvent:
    record(sqs_message("m-rf", event_body("RF-1", amount="5.00", reason="Jane Doe moved")))
    return OrderEvent.objects.get()


def event_as_stored() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {EVENTS}")
        return dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(f"UPDATE {EVENTS} SET amount_cents = 1", id="amount"),
        pytest.param(f"UPDATE {EVENTS} SET kind = 'cancelled'", id="kind"),
        pytest.param(f"UPDATE {EVENTS} SET order_id = 'ORD-OTHER'", id="order-id"),
        pytest.param(f"UPDATE {EVENTS} SET reason = 'changed'", id="reason-changed"),
        pytest.param(f"UPDATE {EVENTS} SET reason = '', amount_cents = 1", id="erase-and-more"),
        pytest.param(f"DELETE FROM {EVENTS}", id="delete"),
    ],
)
def test_postgresql_refuses_to_change_an_events_history(
    postgres: None, refunded: OrderEvent, statement: str
) -> None:
    before = event_as_stored()

    with pytest.raises(IntegrityError, match=f"{EVENTS} is append-only"):
        raw(statement)

    assert event_as_stored() == before


def test_postgresql_lets_only_the_erasure_of_an_events_reason_through(
    postgres: None, refunded: OrderEvent
) -> None:
    before = event_as_stored()

    assert raw(f"UPDATE {EVENTS} SET reason = ''") == 1

    after = event_as_stored()
    assert (before.pop("reason"), after.pop("reason")) == ("Jane Doe moved", "")
    assert after == before


def test_an_event_row_is_refused_change_and_removal_by_the_model_on_every_database(
    refunded: OrderEvent,
) -> None:
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
