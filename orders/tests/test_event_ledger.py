"""Refunds and cancellations in the ledger: every rule checked against the order's state in
the batch's transaction, duplicates and conflicts by event_id, events that wait for their
order and are recorded (in occurred_at order) by the transaction that records it.

The batches go through ``orders.ledger.record_batch`` as the commit calls it (the rejects
through the whole commit where the ``RejectedOrder`` rows are what is checked). Two
processes at once: tests/test_event_ledger_race.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders.commit import BatchCommitter
from orders.event_rules import Line
from orders.ledger import EventRejection, LedgerOutcome, RecordedEvent, RecordedOrder
from orders.models import AcceptedOrder, OrderEvent, RejectedOrder, WaitingEvent
from orders.tests.conftest import (
    LEDGER_RECEIVED_AT,
    SENT_AT,
    body_of,
    event_body,
    exact_json,
    record,
    sqs_message,
    valid_doc,
)
from orders.validation import (
    AMOUNT_MISMATCH,
    DUPLICATE_EVENT_ID,
    ORDER_CANCELLED,
    REFUND_EXCEEDS_ITEMS,
    REFUND_EXCEEDS_ORDER,
    UNKNOWN_ITEM,
)
from stats.store import AggregateStore

pytestmark = pytest.mark.django_db

ORDER = body_of(valid_doc())  # ORD1000 of U100: 109.97 = 2 x P001 at 19.99 + P042 at 69.99
LATER = LEDGER_RECEIVED_AT + timedelta(hours=1)
OCCURRED = datetime(2025, 8, 10, 9, 30, tzinfo=UTC)
NEXT_DAY = "2025-08-11T00:00:00Z"


def recorded_order() -> Any:
    return record(sqs_message("m-order", ORDER))


def codes(outcome: LedgerOutcome) -> list[tuple[str, tuple[str, ...]]]:
    """(message id, codes) of every event the ledger refused."""
    return [(r.message["MessageId"], r.rejection.codes) for r in outcome.event_rejections]


def ledger_events() -> list[tuple[str, str, int, list[dict[str, Any]]]]:
    return list(
        OrderEvent.objects.order_by("occurred_at", "event_id").values_list(
            "event_id", "kind", "amount_cents", "items"
        )
    )


# --- accepted events --------------------------------------------------------------------------
def test_a_refund_by_amount_is_recorded_with_its_orders_user_and_currency() -> None:
    recorded_order()

    outcome = record(sqs_message("m-rf", event_body("RF-1", amount="10.50", reason="late")),
                     received_at=LATER)  # fmt: skip

    assert outcome.events == [
        RecordedEvent(
            event_id="RF-1", order_id="ORD1000", user_id="U100", kind="refunded",
            amount_cents=1050, items=(), occurred_at=OCCURRED, fingerprint=outcome.events[0]
            .fingerprint, first_recorded_at=LATER, message_id="m-rf", counted=True,
        )
    ]  # fmt: skip
    assert outcome.events[0].fingerprint.startswith("e1:")
    row = OrderEvent.objects.get()
    assert (row.event_id, row.order_id, row.user_id, row.kind, row.amount_cents, row.items,
            row.occurred_at, row.reason, row.currency, row.message_id, row.received_at) == (
        "RF-1", "ORD1000", "U100", "refunded", 1050, [], OCCURRED, "late", "USD", "m-rf", LATER,
    )  # fmt: skip
    # Its order is not in this batch: Redis gets its ledger row alongside (applied if absent),
    # with its lines (its products' figures).
    order = AcceptedOrder.objects.get()
    assert outcome.context_orders[0].order == RecordedOrder(
        "ORD1000", "U100", 10997, order.ordered_at, order.day, order.fingerprint,
        LEDGER_RECEIVED_AT,
        (Line("P001", 2, Decimal("19.99")), Line("P042", 1, Decimal("69.99"))),
    )  # fmt: skip
    assert (outcome.context_orders[0].message, outcome.context_orders[0].first_recorded_at) == (
        {},
        LEDGER_RECEIVED_AT,
    )
    assert (outcome.recorded, outcome.waiting, outcome.event_rejections) == ([], 0, [])


def test_a_refund_by_items_is_priced_at_the_orders_prices() -> None:
    recorded_order()

    outcome = record(sqs_message("m", event_body("RF-1", items=[("P001", 2), ("P042", 1)])))

    assert [(e.amount_cents, e.items) for e in outcome.events] == [
        (
            10997,
            (("P001", 2, Decimal("19.99")), ("P042", 1, Decimal("69.99"))),
        )
    ]
    assert ledger_events() == [
        ("RF-1", "refunded", 10997, [
            {"product_id": "P001", "quantity": 2, "price_per_unit": "19.99"},
            {"product_id": "P042", "quantity": 1, "price_per_unit": "69.99"},
        ]),
    ]  # fmt: skip


def test_units_of_a_product_sold_at_two_prices_are_refunded_in_the_order_of_its_lines() -> None:
    doc = valid_doc() | {
        "order_value": Decimal("30.01"),
        "items": [
            {"product_id": "P1", "quantity": 1, "price_per_unit": Decimal("10.000")},
            {"product_id": "P2", "quantity": 3, "price_per_unit": Decimal("0.0033")},
            {"product_id": "P1", "quantity": 2, "price_per_unit": Decimal("10.00")},
        ],
    }
    record(sqs_message("m-order", exact_json(doc)))

    outcome = record(
        sqs_message("m1", event_body("RF-1", items=[("P1", 2), ("P2", 3)])),
        sqs_message(
            "m2", event_body("RF-2", items=[("P1", 1)], occurred_at="2025-08-11T00:00:00Z")
        ),
    )

    # 3 x 0.0033 = 0.0099 rounds to a cent, as the order's value did.
    assert [(e.event_id, e.amount_cents, e.items) for e in outcome.events] == [
        ("RF-1", 2001, (("P1", 1, Decimal("10.000")), ("P1", 1, Decimal("10.00")),
                        ("P2", 3, Decimal("0.0033")))),
        ("RF-2", 1000, (("P1", 1, Decimal("10.00")),)),
    ]  # fmt: skip
    assert ledger_events()[0][3][0] == {"product_id": "P1", "quantity": 1,
                                         "price_per_unit": "10.000"}  # fmt: skip


def test_amount_and_items_that_agree_are_one_refund() -> None:
    recorded_order()

    outcome = record(sqs_message("m", event_body("RF-1", amount="39.98", items=[("P001", 2)])))

    assert [(e.amount_cents, len(e.items)) for e in outcome.events] == [(3998, 1)]


def test_a_cancellation_refunds_what_is_left_and_ends_the_order() -> None:
    recorded_order()
    record(sqs_message("m1", event_body("RF-1", amount="9.97")))

    outcome = record(sqs_message("m2", event_body("CX-1", kind="cancelled", reason="fraud")))

    # A refund by amount takes no product's units: the cancellation takes back every line
    # (for the products' figures), and its row keeps no items.
    assert [(e.kind, e.amount_cents, e.items) for e in outcome.events] == [
        ("cancelled", 10000, (("P001", 2, Decimal("19.99")), ("P042", 1, Decimal("69.99")))),
    ]  # fmt: skip
    assert ledger_events() == [
        ("CX-1", "cancelled", 10000, []),
        ("RF-1", "refunded", 997, []),
    ]


def test_a_cancellation_takes_back_the_lines_its_refunds_left_also_when_redelivered() -> None:
    recorded_order()
    record(sqs_message("m1", event_body("RF-1", items=[("P001", 1)])))
    first = record(sqs_message("m2", event_body("CX-1", kind="cancelled")))

    again = record(sqs_message("m2", event_body("CX-1", kind="cancelled")))

    left = (("P001", 1, Decimal("19.99")), ("P042", 1, Decimal("69.99")))
    assert [(e.event_id, e.amount_cents, e.items) for e in first.events] == [
        ("CX-1", 10997 - 1999, left)
    ]
    assert [(e.event_id, e.amount_cents, e.items) for e in again.events] == [
        ("CX-1", 10997 - 1999, left)
    ]


def test_a_fully_refunded_order_may_still_be_cancelled_for_nothing() -> None:
    recorded_order()
    record(sqs_message("m1", event_body("RF-1", amount="109.97")))

    outcome = record(sqs_message("m2", event_body("CX-1", kind="cancelled")))

    assert [(e.kind, e.amount_cents) for e in outcome.events] == [("cancelled", 0)]


def test_an_order_and_its_refund_in_one_batch() -> None:
    outcome = record(
        sqs_message("m-rf", event_body("RF-1", amount="1.00")), sqs_message("m-order", ORDER)
    )

    assert [r.order.order_id for r in outcome.recorded] == ["ORD1000"]
    assert [(e.event_id, e.counted) for e in outcome.events] == [("RF-1", True)]
    assert outcome.context_orders == []  # the order is among the batch's own


def test_a_batch_of_events_reads_the_ledger_once_for_its_events_and_orders() -> None:
    """The recorded events, the waiting events and the orders the checks need come in one
    SELECT (``_event_state``), not one per table: the event path's cost was its round trips."""
    recorded_order()
    record(sqs_message("m-rf1", event_body("RF-1", amount="100.00")), received_at=LATER)
    early = event_body("RF-9", order_id="ORD9", amount="1.00")  # its order is not recorded
    record(sqs_message("m-early", early), received_at=LATER)

    with CaptureQueriesContext(connection) as queries:
        outcome = record(
            sqs_message("m-rf2", event_body("RF-2", amount="10.00", occurred_at=NEXT_DAY)),
            sqs_message("m-early", early),
            received_at=LATER,
        )

    # The read saw the earlier refund (so this one exceeds the order) and the waiting event.
    assert codes(outcome) == [("m-rf2", (REFUND_EXCEEDS_ORDER,))]
    assert (outcome.events, outcome.waiting) == ([], 1)
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and "pg_advisory" not in q["sql"]
    ]
    assert len(reads) == 1, reads


# --- the rules --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("events", "refused"),
    [
        pytest.param([event_body("E", amount="110.00")], [("m0", (REFUND_EXCEEDS_ORDER,))],
                     id="above-the-value"),
        pytest.param(
            [event_body("E1", amount="100.00"),
             event_body("E2", amount="10.00", occurred_at="2025-08-11T00:00:00Z")],
            [("m1", (REFUND_EXCEEDS_ORDER,))], id="above-the-value-with-an-earlier-refund",
        ),
        pytest.param([event_body("E", items=[("P999", 1), ("P001", 1)])],
                     [("m0", (UNKNOWN_ITEM,))], id="unknown-item"),
        pytest.param([event_body("E", items=[("P001", 3)])], [("m0", (REFUND_EXCEEDS_ITEMS,))],
                     id="more-units-than-sold"),
        pytest.param(
            [event_body("E1", items=[("P001", 1)]),
             event_body("E2", items=[("P001", 2)], occurred_at="2025-08-11T00:00:00Z")],
            [("m1", (REFUND_EXCEEDS_ITEMS,))], id="more-units-than-remain",
        ),
        pytest.param([event_body("E", amount="19.98", items=[("P001", 1)])],
                     [("m0", (AMOUNT_MISMATCH,))], id="amount-mismatch"),
        pytest.param([event_body("E", amount="150.00", items=[("P001", 1)])],
                     [("m0", (AMOUNT_MISMATCH, REFUND_EXCEEDS_ORDER))], id="mismatch-and-above"),
        pytest.param(
            [event_body("E1", kind="cancelled"),
             event_body("E2", amount="1.00", occurred_at="2025-08-11T00:00:00Z"),
             event_body("E3", kind="cancelled", occurred_at="2025-08-12T00:00:00Z")],
            [("m1", (ORDER_CANCELLED,)), ("m2", (ORDER_CANCELLED,))], id="cancelled",
        ),
    ],
)  # fmt: skip
def test_an_event_its_order_does_not_allow_is_refused(
    events: list[str], refused: list[tuple[str, tuple[str, ...]]]
) -> None:
    recorded_order()

    outcome = record(*(sqs_message(f"m{i}", body) for i, body in enumerate(events)))

    assert codes(outcome) == refused
    assert len(outcome.events) == len(events) - len(refused)
    assert OrderEvent.objects.count() == len(events) - len(refused)


def test_the_reasons_name_the_order_and_what_is_left() -> None:
    recorded_order()
    record(sqs_message("m1", event_body("RF-1", amount="100.00")))

    outcome = record(
        sqs_message("m2", event_body("RF-2", amount="10.00", items=[("P001", 1), ("X", 1)]))
    )

    [refused] = outcome.event_rejections
    assert refused.rejection.as_dicts() == [
        {"code": "unknown_item", "field": "items[1].product_id",
         "message": "product_id 'X' is not in order 'ORD1000'"},
        {"code": "refund_exceeds_order", "field": "amount",
         "message": "a refund of 10.00 would bring order 'ORD1000''s refunded total to 110.00, "
                    "above its value 109.97 (9.97 is left to refund)"},
    ]  # fmt: skip
    assert (refused.rejection.order_id, refused.rejection.event_id) == ("ORD1000", "RF-2")
    assert (refused.received_at, refused.queue_name) == (None, None)  # this batch's message


def test_events_of_one_batch_are_judged_in_the_order_they_occurred() -> None:
    recorded_order()

    outcome = record(
        sqs_message("m-late", event_body("B", amount="60.00", occurred_at="2025-08-12T00:00:00Z")),
        sqs_message("m-early", event_body("A", amount="60.00", occurred_at="2025-08-11T00:00:00Z")),
    )

    assert [e.event_id for e in outcome.events] == ["A"]
    assert codes(outcome) == [("m-late", (REFUND_EXCEEDS_ORDER,))]


# --- the same event again -----------------------------------------------------------------------
def test_a_redelivered_event_changes_nothing_and_redis_sees_it_again() -> None:
    recorded_order()
    body = event_body("RF-1", amount="5.00", occurred_at=None)  # dated by its SentTimestamp
    first = record(sqs_message("m-rf", body))

    again = {**sqs_message("m-rf-2", body), "Attributes": {"SentTimestamp": "1754900000000"}}
    outcome = record(again, received_at=LATER)

    assert OrderEvent.objects.count() == 1
    # As the ledger holds it: the first time, the first SentTimestamp.
    assert outcome.events == [RecordedEvent(**{**_fields(first.events[0]), "message_id": "m-rf-2"})]
    assert outcome.events[0].occurred_at == SENT_AT
    assert (outcome.event_conflicts, outcome.event_rejections, outcome.waiting) == ([], [], 0)


def _fields(event: RecordedEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in RecordedEvent.__slots__}


def test_the_same_event_twice_in_one_batch_is_recorded_once() -> None:
    recorded_order()

    outcome = record(
        sqs_message("m1", event_body("RF-1", amount="5.00")),
        sqs_message("m2", event_body("RF-1", amount="5.0")),  # the same amount spelled otherwise
    )

    assert [(e.message_id, e.counted) for e in outcome.events] == [("m1", True), ("m2", True)]
    assert OrderEvent.objects.count() == 1


@pytest.mark.parametrize("where", ["recorded", "waiting", "same-batch"])
def test_the_same_event_id_with_another_payload_is_a_conflict_forever(where: str) -> None:
    if where != "waiting":
        recorded_order()
    first = sqs_message("m1", event_body("RF-1", amount="5.00"))
    other = sqs_message("m2", event_body("RF-1", amount="6.00"))
    if where == "same-batch":
        outcome = record(first, other)
    else:
        record(first)
        outcome = record(other, received_at=LATER + timedelta(days=400))

    assert [(m["MessageId"], e.amount_cents) for m, e in outcome.event_conflicts] == [("m2", 600)]
    assert OrderEvent.objects.count() + WaitingEvent.objects.count() == 1


def test_a_refused_event_may_come_again_corrected_under_its_id() -> None:
    recorded_order()
    assert codes(record(sqs_message("m1", event_body("RF-1", amount="500.00")))) == [
        ("m1", (REFUND_EXCEEDS_ORDER,))
    ]

    outcome = record(sqs_message("m2", event_body("RF-1", amount="50.00")))

    assert [e.amount_cents for e in outcome.events] == [5000]


# --- events before their order ----------------------------------------------------------------
def test_an_event_before_its_order_waits_and_is_recorded_with_the_order() -> None:
    waiting = record(sqs_message("m-rf", event_body("RF-1", amount="5.00", reason="early")))

    assert (waiting.events, waiting.event_rejections, waiting.waiting) == ([], [], 1)
    row = WaitingEvent.objects.get()
    assert (row.event_id, row.order_id, row.kind, row.amount_cents, row.occurred_at, row.reason,
            row.message_id, row.queue_name, row.received_at, bytes(row.body)) == (
        "RF-1", "ORD1000", "refunded", 500, OCCURRED, "early", "m-rf", "orders",
        LEDGER_RECEIVED_AT, event_body("RF-1", amount="5.00", reason="early").encode(),
    )  # fmt: skip
    assert OrderEvent.objects.count() == 0

    outcome = record(sqs_message("m-order", ORDER), received_at=LATER)

    assert [r.order.order_id for r in outcome.recorded] == ["ORD1000"]
    assert [(e.event_id, e.message_id, e.counted, e.first_recorded_at) for e in outcome.events] == [
        ("RF-1", "", False, LATER)  # its message was deleted when it started waiting
    ]
    assert WaitingEvent.objects.count() == 0
    # Recorded when attached (the marks' window rule), under the message that brought it.
    assert OrderEvent.objects.values_list("message_id", "received_at", "reason").get() == (
        "m-rf",
        LATER,
        "early",
    )


def test_waiting_events_are_judged_in_the_order_they_occurred_not_arrived() -> None:
    record(sqs_message("m-b", event_body("B", amount="60.00", occurred_at="2025-08-12T00:00:00Z")))
    record(sqs_message("m-a", event_body("A", amount="60.00", occurred_at="2025-08-11T00:00:00Z")),
           received_at=LATER)  # fmt: skip

    outcome = record(sqs_message("m-order", ORDER), received_at=LATER + timedelta(hours=1))

    assert [e.event_id for e in outcome.events] == ["A"]
    [refused] = outcome.event_rejections
    assert refused == EventRejection(
        {"MessageId": "m-b",
         "Body": event_body("B", amount="60.00", occurred_at="2025-08-12T00:00:00Z").encode(),
         "Attributes": {"ApproximateReceiveCount": "1"}},
        refused.rejection, LEDGER_RECEIVED_AT, "orders",
    )  # fmt: skip
    assert refused.rejection.codes == (REFUND_EXCEEDS_ORDER,)
    assert WaitingEvent.objects.count() == 0


def test_a_waiting_event_redelivered_waits_on_once() -> None:
    body = event_body("RF-1", amount="5.00")
    record(sqs_message("m1", body))

    outcome = record(sqs_message("m1", body), sqs_message("m2", body), received_at=LATER)

    assert (outcome.waiting, outcome.events, outcome.event_conflicts) == (2, [], [])
    assert WaitingEvent.objects.values_list("message_id", "received_at").get() == (
        "m1",
        LEDGER_RECEIVED_AT,
    )


def test_a_waiting_event_redelivered_with_its_order_is_counted_with_its_message() -> None:
    body = event_body("RF-1", amount="5.00")
    record(sqs_message("m1", body))

    outcome = record(sqs_message("m-order", ORDER), sqs_message("m1", body), received_at=LATER)

    assert [(e.event_id, e.message_id, e.counted) for e in outcome.events] == [("RF-1", "m1", True)]
    assert (OrderEvent.objects.count(), WaitingEvent.objects.count(), outcome.waiting) == (1, 0, 0)


def test_an_event_whose_order_never_comes_keeps_waiting_and_becomes_an_orphan() -> None:
    record(sqs_message("m1", event_body("RF-1", amount="5.00", order_id="NEVER")))
    record(sqs_message("m2", event_body("RF-2", amount="5.00", order_id="NEVER")),
           received_at=LEDGER_RECEIVED_AT + timedelta(days=13))  # fmt: skip
    for n in range(3):  # other orders come and go
        record(sqs_message(f"o{n}", body_of(valid_doc() | {"order_id": f"O{n}"})))

    now = LEDGER_RECEIVED_AT + timedelta(days=14, hours=1)
    assert list(WaitingEvent.objects.orphans(now, days=14).values_list("event_id", flat=True)) == [
        "RF-1"
    ]
    assert WaitingEvent.objects.count() == 2
    assert OrderEvent.objects.count() == 0


# --- through the commit: rejects are RejectedOrder rows ----------------------------------------
def test_refused_and_conflicting_events_become_rejected_rows(fake_store: AggregateStore) -> None:
    committer = BatchCommitter(fake_store, "orders")
    committer.commit([sqs_message("m-order", ORDER)], LEDGER_RECEIVED_AT)
    committer.commit(
        [sqs_message("m-early", event_body("CX-9", order_id="ORD2", kind="cancelled"))],
        LEDGER_RECEIVED_AT,
    )

    result = committer.commit(
        [
            sqs_message("m-ok", event_body("RF-1", amount="9.97")),
            sqs_message("m-over", event_body("RF-2", amount="100.01", occurred_at=NEXT_DAY)),
            sqs_message("m-again", event_body("RF-1", amount="9.98")),
            sqs_message("m-order2", body_of(valid_doc() | {"order_id": "ORD2"})),
            sqs_message("m-late", event_body("RF-3", order_id="ORD2", amount="1.00",
                                             occurred_at="2025-08-11T00:00:00Z")),
        ],
        LATER,
    )  # fmt: skip

    assert (result.received, result.rejected) == (5, 3)
    rows = RejectedOrder.objects.order_by("message_id").values_list(
        "message_id", "order_id", "user_id", "reason_codes", "queue_name", "received_at"
    )
    assert list(rows) == [
        ("m-again", "ORD1000", None, f",{DUPLICATE_EVENT_ID},", "orders", LATER),
        ("m-late", "ORD2", None, f",{ORDER_CANCELLED},", "orders", LATER),
        ("m-over", "ORD1000", None, f",{REFUND_EXCEEDS_ORDER},", "orders", LATER),
    ]
    assert sorted(OrderEvent.objects.values_list("event_id", "amount_cents")) == [
        ("CX-9", 10997),
        ("RF-1", 997),
    ]


def test_a_reseen_orders_cancellation_is_handed_on_with_the_lines_it_took_back() -> None:
    """A redelivered order brings its recorded events to Redis again (counted nowhere): a
    cancellation among them carries what its order's refunds left, as when it was recorded."""
    recorded_order()
    record(sqs_message("m1", event_body("RF-1", items=[("P001", 1)])))
    record(sqs_message("m2", event_body("CX-1", kind="cancelled")))

    again = record(sqs_message("m-order", ORDER), received_at=LATER)

    # Both occurred at the same time: in event_id order.
    assert [(e.event_id, e.counted, e.items) for e in again.events] == [
        ("CX-1", False, (("P001", 1, Decimal("19.99")), ("P042", 1, Decimal("69.99")))),
        ("RF-1", False, (("P001", 1, Decimal("19.99")),)),
    ]
