"""Personal data: what the ledger keeps of a message, how long a rejected message keeps its
personal fields (prune_rejected), and erasing one user's on request (forget_user)."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from orders.commit import BatchCommitter
from orders.models import AcceptedOrder, OrderEvent, RejectedOrder, RejectionRecord, WaitingEvent
from orders.payloads import without_personal_fields
from orders.tests.conftest import accept, body_of, event_body, record, sqs_message, valid_doc
from orders.validation import Rejection, kept_fields, validate_message

pytestmark = pytest.mark.django_db

PERSONAL = ("123 Main St", "Springfield", "CreditCard", "shipping_address", "payment_method")
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=31)  # past the default 30 days of REJECTED_RETENTION_DAYS
RECENT = NOW - timedelta(days=29)


def stored_row(order_id: str) -> dict[str, Any]:
    """The ledger row as the database holds it, every column."""
    table = AcceptedOrder._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE order_id = %s", [order_id])
        return dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))


# --- the ledger ---------------------------------------------------------------------------------
def test_an_accepted_orders_personal_fields_are_stored_nowhere_in_its_ledger_row() -> None:
    accept(body_of(valid_doc()))  # with shipping_address and payment_method

    row = stored_row("ORD1000")

    text = " ".join(str(value) for value in row.values())
    assert [p for p in PERSONAL if p in text] == []
    assert set(row) == {
        "id", "order_id", "user_id", "value_cents", "ordered_at", "day", "items",
        "fingerprint", "message_id", "received_at", "currency", "extra",
    }  # fmt: skip
    assert json.loads(row["extra"]) == {}
    assert row["currency"] == "USD"


def test_the_ledger_keeps_the_fields_a_shop_lists_and_no_other(settings: Any) -> None:
    settings.LEDGER_EXTRA_FIELDS = ["channel", "discount", "tags", "absent"]
    body = body_of(valid_doc() | {"channel": "web", "tags": ["a", {"b": 1}]})
    accept(body[:-1] + ', "discount": 1.50}')

    row = AcceptedOrder.objects.get(order_id="ORD1000")

    assert row.extra == {"channel": "web", "tags": ["a", {"b": 1}], "discount": "1.50"}
    text = " ".join(str(value) for value in stored_row("ORD1000").values())
    assert [p for p in PERSONAL if p in text] == []


def test_kept_fields_are_storable_and_exact() -> None:
    body = '{"a": 1e2, "b": "x\\u0000y\\ud800", "c": 12345678901234567890123, "d": null}'

    assert kept_fields(body, ["a", "b", "c", "d"]) == {
        "a": "1e2",
        "b": "x\\x00y\\ud800",  # NUL and a lone surrogate as escapes (PostgreSQL refuses both)
        "c": 12345678901234567890123,
        "d": None,
    }
    assert kept_fields("[1]", ["a"]) == {}
    assert kept_fields(body, []) == {}


# --- what stays of a payload --------------------------------------------------------------------
def test_only_the_orders_own_fields_stay_of_a_payload() -> None:
    text = (
        '{"order_id": "O1", "user_id": "U1", "order_value": 19.990, "email": "a@b.c",'
        ' "items": [{"product_id": "P", "quantity": 1, "price_per_unit": 19.990,'
        ' "gift_note": "for Jane"}, "broken"], "shipping_address": "1 Road",'
        ' "order_value": 5, "channel": "web"}'
    )

    stripped = without_personal_fields(text)
    with_channel = without_personal_fields(text, keep=["channel"])

    assert stripped == (
        '{"order_id":"O1","user_id":"U1","order_value":19.990,"items":[{"product_id":"P",'
        '"quantity":1,"price_per_unit":19.990},"broken"],"order_value":5}'
    )  # numbers as sent, both values of a duplicate key, in order
    assert with_channel == stripped[:-1] + ',"channel":"web"}'
    assert without_personal_fields(stripped) == stripped  # idempotent


@pytest.mark.parametrize("text", ["{broken", "[1, 2]", '"a string"', "", "\\xff"])
def test_a_payload_that_is_not_a_json_object_is_not_kept_at_all(text: str) -> None:
    assert without_personal_fields(text) is None


# --- prune_rejected -----------------------------------------------------------------------------
def rejected(message_id: str, body: str | bytes, received_at: datetime, **fields: Any) -> int:
    rejection = validate_message(body, {"SentTimestamp": "1723198500000"})
    assert isinstance(rejection, Rejection)
    RejectedOrder.objects.record_many(
        [RejectionRecord(message_id, body, rejection, "orders", 1, received_at)]
    )
    row = RejectedOrder.objects.filter(message_id=message_id)
    if fields:
        row.update(**fields)
    return row.get().pk


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prune_rejected", *args, stdout=out)
    return out.getvalue()


MISMATCH = valid_doc() | {"order_value": 1, "channel": "web"}


@pytest.fixture
def aged() -> dict[str, int]:
    corrected = body_of(valid_doc() | {"user_id": "U100", "note": "ring twice"})
    return {
        "old": rejected("m-old", body_of(MISMATCH), OLD, corrected_payload=corrected),
        "old-bytes": rejected("m-bytes", b"\xff\xfe 123 Main St", OLD),
        "recent": rejected("m-recent", body_of(MISMATCH), RECENT),
    }


def test_prune_rejected_strips_old_messages_to_the_order_and_keeps_the_review_history(
    aged: dict[str, int], settings: Any
) -> None:
    settings.LEDGER_EXTRA_FIELDS = ["channel"]
    before = RejectedOrder.objects.get(pk=aged["old"])

    output = prune("--batch-size", "1")  # one row per transaction: all of them anyway

    assert "personal data removed from 2 rejected message(s)" in output
    old = RejectedOrder.objects.get(pk=aged["old"])
    body = json.loads(old.body_bytes)
    assert set(body) == {"order_id", "user_id", "order_timestamp", "order_value", "items",
                         "channel"}  # fmt: skip
    assert [p for p in PERSONAL if p in old.body_text + old.corrected_payload] == []
    assert "ring twice" not in old.corrected_payload
    assert json.loads(old.corrected_payload)["order_id"] == "ORD1000"
    assert old.redaction == RejectedOrder.Redaction.FIELDS
    assert old.redacted_at is not None
    for kept in ("message_id", "order_id", "user_id", "reasons", "reason_codes",
                 "received_at", "sent_at", "status", "queue_name"):  # fmt: skip
        assert getattr(old, kept) == getattr(before, kept), kept
    assert old.codes == ["value_mismatch"]
    not_json = RejectedOrder.objects.get(pk=aged["old-bytes"])
    assert (not_json.body_bytes, not_json.redaction) == (b"", RejectedOrder.Redaction.WHOLE)
    recent = RejectedOrder.objects.get(pk=aged["recent"])
    assert recent.redacted_at is None
    assert "123 Main St" in recent.body_text  # still inside its retention


def test_prune_rejected_is_safe_to_run_again_and_with_nothing_to_do(
    aged: dict[str, int],
) -> None:
    prune()
    stripped = {r.pk: (r.body_bytes, r.redacted_at) for r in RejectedOrder.objects.all()}

    again = prune()

    assert "personal data removed from 0 rejected message(s)" in again
    assert {r.pk: (r.body_bytes, r.redacted_at) for r in RejectedOrder.objects.all()} == stripped
    RejectedOrder.objects.all().delete()
    assert "from 0 rejected" in prune()  # an empty table: exit 0, nothing said but that


def test_prune_rejected_takes_another_retention(aged: dict[str, int]) -> None:
    prune("--days", "1")

    assert RejectedOrder.objects.filter(redacted_at__isnull=True).count() == 0


def test_prune_rejected_strips_the_bodies_of_events_waiting_past_the_retention(
    fake_store: Any,
) -> None:
    def waiting(event_id: str, amount: str, received_at: datetime) -> None:
        body = event_body(event_id, amount=amount, reason="Jane Doe moved")[:-1]
        record(sqs_message(f"m-{event_id}", body + ', "email": "jane@example.com"}'),
               received_at=received_at)  # fmt: skip

    waiting("OLD", "200.00", OLD)  # above the order's value: refused when the order comes
    waiting("NEW", "1.00", RECENT)

    output = prune()

    assert "and 1 event(s) waiting for their order" in output
    old = WaitingEvent.objects.get(event_id="OLD")
    assert json.loads(old.body_text) == {
        "type": "order.refunded", "event_id": "OLD", "order_id": "ORD1000", "amount": 200,
        "occurred_at": "2025-08-10T09:30:00Z",
    }  # fmt: skip
    assert old.redacted_at is not None
    assert old.reason == "Jane Doe moved"  # the event itself stays whole until recorded
    assert "jane@example.com" in WaitingEvent.objects.get(event_id="NEW").body_text
    assert "and 0 event(s) waiting" in prune()  # nothing left to strip

    # The order comes: the refused one's reject holds the stripped body, the other is recorded.
    BatchCommitter(fake_store, "orders").commit([sqs_message("m-order", body_of(valid_doc()))],
                                                 NOW)  # fmt: skip
    assert RejectedOrder.objects.get(message_id="m-OLD").body_bytes == bytes(old.body)
    assert OrderEvent.objects.values_list("event_id", "reason").get() == ("NEW", "Jane Doe moved")


def test_the_admin_says_what_was_removed(admin_client: Client, aged: dict[str, int]) -> None:
    prune()

    def page(key: str) -> str:
        url = reverse("admin:orders_rejectedorder_change", args=[aged[key]])
        return admin_client.get(url).content.decode()

    assert "Removed whole: it was not a JSON object" in page("old-bytes")
    assert "(removed: it was not a JSON object, so none of it could be kept)" in page("old-bytes")
    assert "Personal fields removed: only the order&#x27;s own fields are kept" in page("old")
    assert "kept as received (until its retention ends)" in page("recent")


# --- forget_user --------------------------------------------------------------------------------
def forget(user_id: str) -> str:
    out = io.StringIO()
    call_command("forget_user", user_id, stdout=out)
    return out.getvalue()


@pytest.fixture
def two_users(settings: Any) -> None:
    settings.LEDGER_EXTRA_FIELDS = ["channel"]
    for order_id, user_id in (("O1", "U-ANNA"), ("O2", "U-ANNA"), ("O3", "U-BEN")):
        accept(body_of(valid_doc() | {"order_id": order_id, "user_id": user_id,
                                      "channel": "web"}), f"msg-{order_id}")  # fmt: skip
    for message_id, user_id in (("r1", "U-ANNA"), ("r2", "U-BEN")):
        doc = MISMATCH | {"order_id": f"ORD-{message_id}", "user_id": user_id}
        rejected(message_id, body_of(doc), RECENT, staff_note="customer called: 555-0100",
                 corrected_payload=body_of(valid_doc() | {"user_id": user_id}))  # fmt: skip


def test_forget_user_erases_that_users_personal_data_everywhere_and_keeps_the_amounts(
    two_users: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orders.privacy")

    output = forget("U-ANNA")

    assert output.startswith(
        "forget_user U-ANNA: extra fields emptied on 2 ledger row(s), reasons emptied on 0 "
        "refund(s) or cancellation(s), personal data removed from 1 rejected message(s), 1 "
        "staff note(s) emptied"
    )
    anna = AcceptedOrder.objects.filter(user_id="U-ANNA").order_by("order_id")
    assert [(o.order_id, o.value_cents, o.extra) for o in anna] == [
        ("O1", 10997, {}), ("O2", 10997, {}),
    ]  # fmt: skip
    assert AcceptedOrder.objects.get(order_id="O3").extra == {"channel": "web"}
    r1 = RejectedOrder.objects.get(message_id="r1")
    assert json.loads(r1.body_bytes) == {
        k: v
        for k, v in (MISMATCH | {"order_id": "ORD-r1", "user_id": "U-ANNA"}).items()
        if k in ("order_id", "user_id", "order_timestamp", "order_value", "items")
    }  # not even the listed extra fields
    assert [p for p in PERSONAL if p in r1.body_text + r1.corrected_payload] == []
    assert (r1.staff_note, r1.codes, r1.user_id) == ("", ["value_mismatch"], "U-ANNA")
    r2 = RejectedOrder.objects.get(message_id="r2")
    assert "123 Main St" in r2.body_text
    assert r2.staff_note == "customer called: 555-0100"
    [record] = [r for r in caplog.records if r.name == "orders.privacy"]
    assert record.levelname == "INFO"
    assert record.getMessage() == (
        "forget_user user_id=U-ANNA: extra fields emptied on 2 ledger rows, reasons emptied on "
        "0 refunds or cancellations, personal data removed from 1 rejected messages, 1 staff "
        "notes emptied"
    )


def test_forget_user_is_idempotent(two_users: None) -> None:
    forget("U-ANNA")
    state = [(r.pk, r.body_bytes, r.redacted_at) for r in RejectedOrder.objects.order_by("pk")]

    again = forget("U-ANNA")

    assert again.startswith(
        "forget_user U-ANNA: extra fields emptied on 0 ledger row(s), reasons emptied on 0 "
        "refund(s) or cancellation(s), personal data removed from 0 rejected message(s), 0 "
        "staff note(s) emptied (nothing left to erase)"
    )
    assert [
        (r.pk, r.body_bytes, r.redacted_at) for r in RejectedOrder.objects.order_by("pk")
    ] == state


def test_forget_user_after_the_retention_removes_the_fields_retention_kept(
    two_users: None, settings: Any
) -> None:
    RejectedOrder.objects.update(received_at=OLD)
    prune()
    assert "channel" in RejectedOrder.objects.get(message_id="r1").body_text  # listed: kept

    forget("U-ANNA")

    assert "channel" not in RejectedOrder.objects.get(message_id="r1").body_text


# --- the migration that dropped the bodies ------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_the_listed_fields_of_old_bodies_then_drops_the_bodies(
    settings: Any,
) -> None:
    from django.db.migrations.executor import MigrationExecutor

    settings.LEDGER_EXTRA_FIELDS = ["channel"]
    before = [("orders", "0005_rejectedordercode")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("orders", "AcceptedOrder")
    for order_id, doc in (("O1", valid_doc() | {"channel": "web"}), ("O2", valid_doc())):
        old.objects.create(
            order_id=order_id, user_id="U1", value_cents=10997, ordered_at=NOW, day=NOW.date(),
            items=[], fingerprint="f", message_id=f"m-{order_id}", received_at=NOW,
            body=body_of(doc),
        )  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert dict(AcceptedOrder.objects.values_list("order_id", "extra")) == {
        "O1": {"channel": "web"},
        "O2": {},
    }
    with connection.cursor() as cursor:
        table = connection.introspection.get_table_description(cursor, "orders_acceptedorder")
    assert "body" not in {column.name for column in table}
    text = " ".join(str(value) for value in stored_row("O1").values())
    assert [p for p in PERSONAL if p in text] == []


def test_forget_user_finds_the_refunds_of_the_users_orders(two_users: None) -> None:
    def refund(order_id: str) -> str:
        return json.dumps({
            "type": "order.refunded", "event_id": f"E-{order_id}", "order_id": order_id,
            "amount": -5, "reason": "Jane Doe, 12 Elm St: parcel lost",
        })  # fmt: skip

    rejected("r-anna-refund", refund("O1"), RECENT)
    rejected("r-ben-refund", refund("O3"), RECENT)

    output = forget("U-ANNA")

    assert "personal data removed from 2 rejected message(s)" in output
    anna = json.loads(RejectedOrder.objects.get(message_id="r-anna-refund").body_bytes)
    assert anna == {"type": "order.refunded", "order_id": "O1", "event_id": "E-O1", "amount": -5}
    assert "Jane Doe" in RejectedOrder.objects.get(message_id="r-ben-refund").body_text


def test_forget_user_empties_the_reasons_of_the_refunds_of_the_users_orders(
    two_users: None,
) -> None:
    for event_id, order_id in (("E1", "O1"), ("E2", "O2"), ("E3", "O3")):
        record(sqs_message(f"m-{event_id}", event_body(
            event_id, order_id, amount="1.00", reason="Jane Doe, 12 Elm St: parcel lost"
        )))  # fmt: skip
    record(sqs_message("m-E4", event_body("E4", "O1", kind="cancelled")))  # no reason

    output = forget("U-ANNA")

    assert "reasons emptied on 2 refund(s) or cancellation(s)" in output
    assert sorted(OrderEvent.objects.values_list("event_id", "amount_cents", "reason")) == [
        ("E1", 100, ""), ("E2", 100, ""), ("E3", 100, "Jane Doe, 12 Elm St: parcel lost"),
        ("E4", 10897, ""),
    ]  # fmt: skip
    assert "reasons emptied on 0 refund(s)" in forget("U-ANNA")


# --- the migration that added the currency ------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_orders_recorded_before_the_currency_was_kept_are_in_the_shops_currency(
    settings: Any,
) -> None:
    from django.db.migrations.executor import MigrationExecutor

    before = [("orders", "0008_rejectedorder_review_and_retention")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("orders", "AcceptedOrder")
    old.objects.create(
        order_id="O1", user_id="U1", value_cents=1200, ordered_at=NOW, day=NOW.date(),
        items=[], fingerprint="f", message_id="m-O1", received_at=NOW,
    )  # fmt: skip
    settings.STATS_CURRENCY = "JPY"  # read when the migration runs
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert AcceptedOrder.objects.values_list("order_id", "currency").get() == ("O1", "JPY")
