"""The event messages (``order.refunded``, ``order.cancelled``): every field rule and code,
SentTimestamp dating, the canonical fingerprint (property tests), the message builders of the
codes the ledger decides, and what the callers that record orders only make of an event."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders import validation
from orders.commit import RECORDED_TYPES, validate_batch
from orders.forms import payload_errors
from orders.models import RejectedOrderCode
from orders.tests.conftest import (
    SENT_AT,
    SENT_AT_MS,
    SENT_ATTRIBUTES,
    Raw,
    body_of,
    exact_json,
    spellings,
    valid_doc,
    valid_ids,
)
from orders.validation import (
    ALL_CODES,
    AMOUNT_MISMATCH,
    CANCELLED,
    DUPLICATE_EVENT_ID,
    INVALID_FIELD,
    INVALID_ITEMS,
    INVALID_JSON,
    INVALID_TIMESTAMP,
    LEDGER_CODES,
    MESSAGE_TYPES,
    MISSING_FIELD,
    ORDER_CANCELLED,
    ORDER_VALIDATOR_CODES,
    REFUND_EXCEEDS_ITEMS,
    REFUND_EXCEEDS_ORDER,
    REFUNDED,
    TOO_MANY_DECIMALS,
    TYPE_CANCELLED,
    TYPE_PLACED,
    TYPE_REFUNDED,
    UNKNOWN_ITEM,
    UNKNOWN_TYPE,
    VALIDATOR_CODES,
    Event,
    Order,
    RefundItem,
    Rejection,
    amount_mismatch_reason,
    event_conflict_rejection,
    event_rejection,
    order_cancelled_reason,
    refund_exceeds_items_reasons,
    refund_exceeds_order_reason,
    unknown_item_reasons,
    validate_message,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OCCURRED = datetime(2025, 8, 10, 9, 30, tzinfo=UTC)


def refund_doc() -> dict[str, Any]:
    """A refund of part of the contract's example order, by amount and items."""
    return {
        "type": TYPE_REFUNDED,
        "event_id": "EV-1",
        "order_id": "ORD1000",
        "amount": Raw("19.99"),
        "items": [{"product_id": "P001", "quantity": 1}],
        "occurred_at": "2025-08-10T09:30:00Z",
        "reason": "arrived damaged",
    }


def cancel_doc() -> dict[str, Any]:
    return {
        "type": TYPE_CANCELLED,
        "event_id": "EV-2",
        "order_id": "ORD1000",
        "occurred_at": "2025-08-10T09:30:00Z",
    }


def refund(**changes: Any) -> str:
    """The refund with fields changed (``...`` deletes one)."""
    doc = refund_doc()
    for name, value in changes.items():
        if value is ...:
            del doc[name]
        else:
            doc[name] = value
    return exact_json(doc)


def cancel(**changes: Any) -> str:
    doc = cancel_doc()
    doc.update(changes)
    return exact_json(doc)


def validate(body: Any) -> Order | Event | Rejection:
    return validate_message(body, SENT_ATTRIBUTES)


def event_of(body: Any, attributes: dict[str, str] | None = None) -> Event:
    result = validate_message(body, SENT_ATTRIBUTES if attributes is None else attributes)
    assert isinstance(result, Event), result
    return result


# --- accepted ---------------------------------------------------------------------------------
def test_a_refund_is_an_event_with_every_field_normalized() -> None:
    body = refund(
        event_id="  EV-1 ",
        items=[{"product_id": " P001 ", "quantity": 1, "price_per_unit": 5}],
        occurred_at="2025-08-10T11:30:00+02:00",
        reason="  arrived damaged\u3000",
    )
    assert event_of(body) == Event(
        kind=REFUNDED,
        event_id="EV-1",
        order_id="ORD1000",
        amount_cents=1999,
        items=(RefundItem("P001", 1),),
        stated_at=OCCURRED,
        occurred_at=OCCURRED,
        reason="arrived damaged",
    )


def test_a_refund_by_amount_alone_has_no_items() -> None:
    event = event_of(refund(items=...))
    assert (event.amount_cents, event.items) == (1999, ())


def test_a_refund_by_items_alone_has_no_amount() -> None:
    event = event_of(
        refund(
            amount=...,
            items=[{"product_id": "P042", "quantity": 1}, {"product_id": "P001", "quantity": 2}],
        )
    )
    assert event.amount_cents is None
    assert event.items == (RefundItem("P042", 1), RefundItem("P001", 2))  # message order


def test_a_cancellation_is_an_event_without_amount_or_items() -> None:
    assert event_of(cancel(reason="customer asked")) == Event(
        kind=CANCELLED,
        event_id="EV-2",
        order_id="ORD1000",
        amount_cents=None,
        items=(),
        stated_at=OCCURRED,
        occurred_at=OCCURRED,
        reason="customer asked",
    )


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"amount": None, "items": None}, id="cancel-null-amount-and-items"),
        pytest.param({"user_id": "U100", "note": [1, 2]}, id="cancel-extra-fields-ignored"),
    ],
)
def test_a_cancellation_tolerates_nulls_and_ignores_unknown_fields(changes: dict[str, Any]) -> None:
    assert event_of(cancel(**changes)).amount_cents is None


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        pytest.param("19.99", 1999, id="two-decimals"),
        pytest.param("10.5", 1050, id="one-decimal"),
        pytest.param("10.50", 1050, id="trailing-zero"),
        pytest.param("10.500", 1050, id="more-decimals-all-zero"),
        pytest.param("10.5" + "0" * 3000, 1050, id="three-thousand-trailing-zeros"),
        pytest.param("1.05e1", 1050, id="exponent"),
        pytest.param("1050E-2", 1050, id="negative-exponent"),
        pytest.param("7", 700, id="integer"),
        pytest.param("0.01", 1, id="one-cent"),
        pytest.param("1e9", 100_000_000_000, id="max"),
        pytest.param("1000000000.00", 100_000_000_000, id="max-with-decimals"),
    ],
)
def test_an_amount_is_exact_in_cents_whatever_its_spelling(amount: str, cents: int) -> None:
    assert event_of(refund(amount=Raw(amount))).amount_cents == cents


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        pytest.param(..., None, id="absent"),
        pytest.param(None, None, id="null"),
        pytest.param("", None, id="empty"),
        pytest.param(" \t ", None, id="blank"),
        pytest.param("  trimmed\u3000", "trimmed", id="trimmed"),
        pytest.param("Damaged, box #4! 50% off?", "Damaged, box #4! 50% off?", id="punctuation"),
        pytest.param("Rückgabe 日本 🛒", "Rückgabe 日本 🛒", id="unicode"),
        pytest.param("x" * 1000, "x" * 1000, id="1000-chars"),
    ],
)
def test_reason_is_optional_free_text(reason: Any, stored: str | None) -> None:
    assert event_of(refund(reason=reason)).reason == stored


# --- dating -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        pytest.param("2025-08-10T09:30:00Z", OCCURRED, id="z"),
        pytest.param("2025-08-10T09:30:00", OCCURRED, id="naive-is-utc"),
        pytest.param("2025-08-10T02:30:00-07:00", OCCURRED, id="west"),
        pytest.param("2025-08-10", datetime(2025, 8, 10, tzinfo=UTC), id="date-only"),
    ],
)
def test_occurred_at_is_utc(stamp: str, expected: datetime) -> None:
    event = event_of(refund(occurred_at=stamp))
    assert event.stated_at == event.occurred_at == expected


@pytest.mark.parametrize("absent", [..., None], ids=["absent", "null"])
def test_without_occurred_at_the_sent_timestamp_dates_the_event(absent: Any) -> None:
    event = event_of(refund(occurred_at=absent))
    assert event.stated_at is None
    assert event.occurred_at == SENT_AT


def test_received_at_is_the_last_resort_for_an_event() -> None:
    now = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    result = validate_message(refund(occurred_at=...), {"SentTimestamp": "x"}, received_at=now)
    assert isinstance(result, Event)
    assert result.occurred_at == now


def test_an_undatable_event_is_rejected() -> None:
    result = validate_message(cancel(occurred_at=None))
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {
            "code": INVALID_TIMESTAMP,
            "field": "occurred_at",
            "message": "occurred_at is absent and the message has no SentTimestamp to date it",
        }
    ]


# --- rejected: one case per rule --------------------------------------------------------------
def bad_item(entry: dict[str, Any], field: str, case_id: str) -> Any:
    """A refund of the one item ``entry``, rejected for its ``field``."""
    return pytest.param(refund(items=[entry]), INVALID_ITEMS, f"items[0].{field}", id=case_id)


REJECTED = [
    # type
    pytest.param(refund(type="order.shipped"), UNKNOWN_TYPE, "type", id="type-unknown"),
    pytest.param(refund(type="ORDER.REFUNDED"), UNKNOWN_TYPE, "type", id="type-case"),
    pytest.param(refund(type=" order.refunded"), UNKNOWN_TYPE, "type", id="type-untrimmed"),
    pytest.param(refund(type=""), UNKNOWN_TYPE, "type", id="type-empty"),
    pytest.param(refund(type=5), UNKNOWN_TYPE, "type", id="type-number"),
    pytest.param(refund(type=[TYPE_REFUNDED]), UNKNOWN_TYPE, "type", id="type-array"),
    pytest.param(
        body_of(valid_doc() | {"type": "order"}), UNKNOWN_TYPE, "type", id="order-unknown-type"
    ),
    # ids
    pytest.param(refund(event_id=...), MISSING_FIELD, "event_id", id="event-id-missing"),
    pytest.param(refund(event_id=None), INVALID_FIELD, "event_id", id="event-id-null"),
    pytest.param(refund(event_id=""), INVALID_FIELD, "event_id", id="event-id-empty"),
    pytest.param(refund(event_id=12), INVALID_FIELD, "event_id", id="event-id-number"),
    pytest.param(refund(event_id="x" * 129), INVALID_FIELD, "event_id", id="event-id-long"),
    pytest.param(refund(event_id="E\x00"), INVALID_FIELD, "event_id", id="event-id-nul"),
    pytest.param(refund(event_id="\ud800"), INVALID_FIELD, "event_id", id="event-id-surrogate"),
    pytest.param(cancel(order_id=None), INVALID_FIELD, "order_id", id="order-id-null"),
    pytest.param(refund(order_id=...), MISSING_FIELD, "order_id", id="order-id-missing"),
    pytest.param(refund(order_id="O\n1"), INVALID_FIELD, "order_id", id="order-id-newline"),
    # occurred_at
    pytest.param(refund(occurred_at="yesterday"), INVALID_TIMESTAMP, "occurred_at", id="ts-word"),
    pytest.param(refund(occurred_at=1723198500), INVALID_TIMESTAMP, "occurred_at", id="ts-number"),
    pytest.param(refund(occurred_at=""), INVALID_TIMESTAMP, "occurred_at", id="ts-empty"),
    pytest.param(cancel(occurred_at="2025-02-30"), INVALID_TIMESTAMP, "occurred_at", id="ts-date"),
    # reason
    pytest.param(refund(reason=5), INVALID_FIELD, "reason", id="reason-number"),
    pytest.param(refund(reason=["x"]), INVALID_FIELD, "reason", id="reason-array"),
    pytest.param(refund(reason="x" * 1001), INVALID_FIELD, "reason", id="reason-1001-chars"),
    pytest.param(refund(reason="line\nbreak"), INVALID_FIELD, "reason", id="reason-newline"),
    pytest.param(cancel(reason="bell\x07"), INVALID_FIELD, "reason", id="reason-control"),
    pytest.param(refund(reason="\udfff"), INVALID_FIELD, "reason", id="reason-surrogate"),
    # amount
    pytest.param(refund(amount=Raw("0")), INVALID_FIELD, "amount", id="amount-zero"),
    pytest.param(refund(amount=Raw("0.00")), INVALID_FIELD, "amount", id="amount-zero-cents"),
    pytest.param(refund(amount=Raw("-0")), INVALID_FIELD, "amount", id="amount-minus-zero"),
    pytest.param(refund(amount=Raw("-5")), INVALID_FIELD, "amount", id="amount-negative"),
    pytest.param(
        refund(amount=Raw("1000000000.01")), INVALID_FIELD, "amount", id="amount-over-max"
    ),
    pytest.param(refund(amount=Raw("1e400")), INVALID_FIELD, "amount", id="amount-huge"),
    pytest.param(
        refund(amount=Raw("1e999999999999999999999")),
        INVALID_FIELD,
        "amount",
        id="amount-unholdable",
    ),
    pytest.param(refund(amount="19.99"), INVALID_FIELD, "amount", id="amount-string"),
    pytest.param(refund(amount=True), INVALID_FIELD, "amount", id="amount-bool"),
    pytest.param(refund(amount=[19.99]), INVALID_FIELD, "amount", id="amount-array"),
    pytest.param(refund(amount=Raw("10.505")), TOO_MANY_DECIMALS, "amount", id="amount-half-cent"),
    pytest.param(refund(amount=Raw("0.001")), TOO_MANY_DECIMALS, "amount", id="amount-tenth-cent"),
    pytest.param(
        refund(amount=Raw("10.5" + "0" * 3000 + "1")),
        TOO_MANY_DECIMALS,
        "amount",
        id="amount-digit-far-below-a-cent",
    ),
    pytest.param(
        refund(amount=Raw("1e-99999999")), TOO_MANY_DECIMALS, "amount", id="amount-extreme-exponent"
    ),
    pytest.param(refund(amount=..., items=...), MISSING_FIELD, "amount", id="refund-of-nothing"),
    pytest.param(refund(amount=None, items=None), MISSING_FIELD, "amount", id="refund-of-nulls"),
    # items
    pytest.param(refund(items=[]), INVALID_ITEMS, "items", id="items-empty"),
    pytest.param(refund(items="P001"), INVALID_ITEMS, "items", id="items-string"),
    pytest.param(refund(items={"P001": 1}), INVALID_ITEMS, "items", id="items-object"),
    pytest.param(refund(items=["P001"]), INVALID_ITEMS, "items[0]", id="item-not-object"),
    pytest.param(
        refund(items=[{"product_id": "P1", "quantity": 1}] * 1001),
        INVALID_ITEMS,
        "items",
        id="items-over-1000",
    ),
    bad_item({"quantity": 1}, "product_id", "product-missing"),
    bad_item({"product_id": None, "quantity": 1}, "product_id", "product-null"),
    bad_item({"product_id": 1, "quantity": 1}, "product_id", "product-number"),
    bad_item({"product_id": "  ", "quantity": 1}, "product_id", "product-blank"),
    bad_item({"product_id": "P" * 129, "quantity": 1}, "product_id", "product-long"),
    bad_item({"product_id": "P\x1f", "quantity": 1}, "product_id", "product-control"),
    bad_item({"product_id": "P1"}, "quantity", "qty-missing"),
    bad_item({"product_id": "P1", "quantity": 0}, "quantity", "qty-zero"),
    bad_item({"product_id": "P1", "quantity": Raw("2.0")}, "quantity", "qty-fraction"),
    bad_item({"product_id": "P1", "quantity": True}, "quantity", "qty-bool"),
    bad_item({"product_id": "P1", "quantity": "1"}, "quantity", "qty-string"),
    pytest.param(
        refund(items=[{"product_id": "P1", "quantity": 1}, {"product_id": " P1", "quantity": 2}]),
        INVALID_ITEMS,
        "items[1].product_id",
        id="product-twice",
    ),
    # a cancellation refunds what is left: no amount, no items
    pytest.param(cancel(amount=Raw("5")), INVALID_FIELD, "amount", id="cancel-with-amount"),
    pytest.param(
        cancel(items=[{"product_id": "P001", "quantity": 1}]),
        INVALID_FIELD,
        "items",
        id="cancel-with-items",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), REJECTED)
def test_rejected_event(body: str, code: str, field: str) -> None:
    result = validate(body)
    assert isinstance(result, Rejection), result
    assert result.codes == (code,)
    assert [r.field for r in result.reasons] == [field]
    for reason in result.reasons:
        assert reason.message
        reason.message.encode("utf-8")  # storable: no lone surrogates
        assert "\x00" not in reason.message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(
            refund(type="order.shipped"),
            "type 'order.shipped' is not one of 'order.placed', 'order.refunded', "
            "'order.cancelled'",
            id="unknown",
        ),
        pytest.param(refund(type=7), "type must be a string, got 7", id="not-a-string"),
        pytest.param(
            refund(amount=Raw("10.505")),
            "amount 10.505 has more decimals than USD has (2)",
            id="too-many-decimals",
        ),
        pytest.param(refund(amount=Raw("-0")), "amount must be greater than 0", id="not-positive"),
        pytest.param(
            refund(amount=..., items=...), "a refund needs an amount, items or both", id="nothing"
        ),
        pytest.param(
            refund(
                items=[{"product_id": "P1", "quantity": 1}, {"product_id": "P1", "quantity": 1}]
            ),
            "product_id 'P1' is already in items[0]: give each product once, with its units",
            id="product-twice",
        ),
        pytest.param(
            cancel(amount=Raw("5")),
            "amount is not part of order.cancelled: a cancellation refunds whatever is not "
            "refunded yet (send order.refunded for a part)",
            id="cancel-with-amount",
        ),
        pytest.param(
            refund(reason="x" * 1001), "reason must be at most 1000 characters, got 1001", id="long"
        ),
        pytest.param(refund(reason="a\nb"), "reason contains control characters", id="control"),
    ],
)
def test_event_messages_say_what_is_wrong(body: str, reason: str) -> None:
    result = validate(body)
    assert isinstance(result, Rejection)
    assert [r.message for r in result.reasons] == [reason]


def test_every_event_reason_is_listed_with_its_field() -> None:
    body = exact_json(
        {
            "type": TYPE_REFUNDED,
            "event_id": 5,
            "items": [{"product_id": "P1", "quantity": 0}, "x"],
            "amount": Raw("1.001"),
            "occurred_at": "soon",
            "reason": 1,
        }
    )
    result = validate(body)
    assert isinstance(result, Rejection)
    assert [(r.code, r.field) for r in result.reasons] == [
        (INVALID_FIELD, "event_id"),
        (MISSING_FIELD, "order_id"),
        (TOO_MANY_DECIMALS, "amount"),
        (INVALID_ITEMS, "items[0].quantity"),
        (INVALID_ITEMS, "items[1]"),
        (INVALID_TIMESTAMP, "occurred_at"),
        (INVALID_FIELD, "reason"),
    ]


def test_refund_item_reasons_are_capped() -> None:
    result = validate(refund(items=[{"product_id": "P", "quantity": i % 2} for i in range(500)]))
    assert isinstance(result, Rejection)
    assert len(result.reasons) == 11
    assert result.reasons[-1].message == "…and 240 more item problems"


def test_a_rejected_event_is_filed_under_its_order_and_event_ids() -> None:
    result = validate(refund(event_id=" EV-9 ", amount=Raw("1.001")))
    assert isinstance(result, Rejection)
    assert (result.order_id, result.user_id, result.event_id) == ("ORD1000", None, "EV-9")
    assert result.sent_at == SENT_AT


def test_an_event_with_a_duplicate_key_keeps_its_ids() -> None:
    body = refund().replace('"amount": 19.99', '"amount": 19.99, "amount": 5')
    result = validate(body)
    assert isinstance(result, Rejection)
    assert result.codes == (INVALID_JSON,)
    assert (result.order_id, result.event_id) == ("ORD1000", "EV-1")


def test_an_unknown_type_keeps_every_id_it_carries() -> None:
    result = validate(body_of(valid_doc() | {"type": "order.updated", "event_id": "E7"}))
    assert isinstance(result, Rejection)
    assert (result.order_id, result.user_id, result.event_id) == ("ORD1000", "U100", "E7")


# --- orders, with and without a type ----------------------------------------------------------
@pytest.mark.parametrize("spelled", [TYPE_PLACED, None], ids=["order.placed", "null"])
def test_an_order_with_its_type_is_the_same_order(spelled: str | None) -> None:
    plain = validate(body_of(valid_doc()))
    typed = validate(body_of(valid_doc() | {"type": spelled}))
    assert isinstance(plain, Order)
    assert typed == plain
    assert typed.fingerprint == plain.fingerprint


def test_a_broken_order_with_its_type_gets_the_same_reasons() -> None:
    doc = valid_doc() | {"order_value": 1, "user_id": ""}
    plain, typed = validate(body_of(doc)), validate(body_of(doc | {"type": TYPE_PLACED}))
    assert isinstance(plain, Rejection)
    assert typed == plain
    assert typed.event_id is None


# --- callers that record orders only ----------------------------------------------------------
def test_a_caller_that_takes_orders_only_gets_unknown_type_for_an_event() -> None:
    result = validate_message(refund(), SENT_ATTRIBUTES, types=(TYPE_PLACED,))
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {
            "code": UNKNOWN_TYPE,
            "field": "type",
            "message": "type 'order.refunded' is not accepted here (accepted: 'order.placed')",
        }
    ]
    assert (result.order_id, result.event_id, result.sent_at) == ("ORD1000", "EV-1", SENT_AT)
    assert isinstance(validate_message(body_of(valid_doc()), types=(TYPE_PLACED,)), Order)


def test_the_consumer_takes_orders_refunds_and_cancellations() -> None:
    assert RECORDED_TYPES == MESSAGE_TYPES
    messages = [
        {"MessageId": "m-order", "Body": body_of(valid_doc()), "Attributes": SENT_ATTRIBUTES},
        {"MessageId": "m-refund", "Body": refund(), "Attributes": SENT_ATTRIBUTES},
        {"MessageId": "m-cancel", "Body": cancel(), "Attributes": SENT_ATTRIBUTES},
        {"MessageId": "m-other", "Body": refund(type="order.shipped"), "Attributes": {}},
    ]
    batch = validate_batch(messages, datetime.now(UTC))
    assert [m["MessageId"] for m, _ in batch.orders] == ["m-order"]
    assert [(m["MessageId"], e.kind, e.event_id) for m, e in batch.events] == [
        ("m-refund", "refunded", "EV-1"),
        ("m-cancel", "cancelled", "EV-2"),
    ]
    assert [(m["MessageId"], r.codes, r.event_id) for m, r in batch.rejected] == [
        ("m-other", (UNKNOWN_TYPE,), "EV-1"),
    ]


def test_the_resubmit_form_takes_an_event_as_the_consumer_does() -> None:
    assert payload_errors(cancel()) == []
    assert payload_errors(refund(type="order.shipped")) == [
        "unknown_type (type): type 'order.shipped' is not one of 'order.placed', "
        "'order.refunded', 'order.cancelled'"
    ]


# --- the ledger's codes: messages built here --------------------------------------------------
def by_items(**changes: Any) -> Event:
    doc = refund_doc() | {
        "items": [{"product_id": "P042", "quantity": 1}, {"product_id": "P001", "quantity": 3}]
    }
    doc.pop("occurred_at")
    doc.update(changes)
    return event_of(exact_json(doc))


def test_event_conflict_rejection() -> None:
    event = by_items()
    rejection = event_conflict_rejection(event)
    assert rejection.as_dicts() == [
        {
            "code": DUPLICATE_EVENT_ID,
            "field": "event_id",
            "message": "event 'EV-1' was already recorded with a different payload; the first "
            "version stands",
        }
    ]
    # Undated: dated by its SentTimestamp, which a resubmission keeps.
    assert (rejection.order_id, rejection.user_id, rejection.event_id) == ("ORD1000", None, "EV-1")
    assert rejection.sent_at == SENT_AT
    dated = event_conflict_rejection(event_of(refund()))
    assert dated.sent_at is None


def test_ledger_reasons_name_the_amounts_and_the_items() -> None:
    event = by_items()
    reasons = [
        amount_mismatch_reason(event, 11996),
        refund_exceeds_order_reason(event, 1999, 9998, 10997),
        *unknown_item_reasons(event, {"P001"}),
        *refund_exceeds_items_reasons(event, {"P001": 2, "P042": 1}),
        order_cancelled_reason(event),
    ]
    assert event_rejection(event, reasons).as_dicts() == [
        {
            "code": AMOUNT_MISMATCH,
            "field": "amount",
            "message": "amount 19.99 does not equal the refunded items' value 119.96 at the "
            "order's prices",
        },
        {
            "code": REFUND_EXCEEDS_ORDER,
            "field": "amount",
            "message": "a refund of 19.99 would bring order 'ORD1000''s refunded total to "
            "119.97, above its value 109.97 (9.99 is left to refund)",
        },
        {
            "code": UNKNOWN_ITEM,
            "field": "items[0].product_id",
            "message": "product_id 'P042' is not in order 'ORD1000'",
        },
        {
            "code": REFUND_EXCEEDS_ITEMS,
            "field": "items[1].quantity",
            "message": "3 units of 'P001' refunded, but only 2 of order 'ORD1000''s are not "
            "refunded yet",
        },
        {
            "code": ORDER_CANCELLED,
            "field": "order_id",
            "message": "order 'ORD1000' is already cancelled: nothing is left to refund",
        },
    ]


def test_ledger_reasons_of_a_refund_by_items_and_of_a_cancellation() -> None:
    items_only = by_items(amount=None)
    assert refund_exceeds_order_reason(items_only, 500, 10997, 10997).field == "items"
    assert refund_exceeds_order_reason(items_only, 500, 10997, 10997).message.endswith(
        "(0.00 is left to refund)"
    )
    assert order_cancelled_reason(event_of(cancel())).message == (
        "order 'ORD1000' is already cancelled: nothing is left to cancel"
    )


# --- codes ------------------------------------------------------------------------------------
def test_every_code_is_listed_once_and_fits_the_code_column() -> None:
    constants = {
        value
        for name, value in vars(validation).items()
        if name.isupper()
        and not name.startswith("_")
        and isinstance(value, str)
        and value.islower()
        and "_" in value
        and "." not in value
    }
    assert len(ALL_CODES) == len(set(ALL_CODES))
    assert constants == set(ALL_CODES)
    assert set(VALIDATOR_CODES) | set(LEDGER_CODES) == set(ALL_CODES)
    assert not set(VALIDATOR_CODES) & set(LEDGER_CODES)
    assert set(ORDER_VALIDATOR_CODES) < set(VALIDATOR_CODES)
    width = RejectedOrderCode._meta.get_field("code").max_length
    assert width is not None
    assert max(map(len, ALL_CODES)) <= width
    assert MESSAGE_TYPES == ("order.placed", "order.refunded", "order.cancelled")


# --- properties -------------------------------------------------------------------------------
product_ids = st.text(alphabet="PQR0123456789-", min_size=1, max_size=12)


@st.composite
def valid_refunds(draw: st.DrawFn) -> tuple[dict[str, Any], int | None, datetime | None]:
    """A valid refund (or, now and then, cancellation) document, its amount in cents (exact
    integer arithmetic; None when it gives none) and its stated UTC time."""
    kind = draw(st.sampled_from([TYPE_REFUNDED, TYPE_REFUNDED, TYPE_CANCELLED]))
    doc: dict[str, Any] = {
        "type": kind,
        "event_id": draw(valid_ids),
        "order_id": draw(valid_ids),
    }
    cents = None
    if kind == TYPE_REFUNDED:
        shape = draw(st.sampled_from(["amount", "items", "both"]))
        if shape != "items":
            cents = draw(st.integers(1, 100_000_000_000))
            doc["amount"] = Decimal(cents).scaleb(-2)
        if shape != "amount":
            products = draw(st.lists(product_ids, min_size=1, max_size=6, unique=True))
            doc["items"] = [
                {"product_id": p, "quantity": draw(st.integers(1, 50))} for p in products
            ]
    when = None
    if draw(st.booleans()):
        when = draw(
            st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1))
        ).replace(tzinfo=UTC)
        offset = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
        doc["occurred_at"] = when.astimezone(offset).isoformat()
    if draw(st.booleans()):
        doc["reason"] = draw(
            st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=60)
        ).strip()
    return doc, cents, when


@PROPERTY
@given(valid_refunds())
def test_valid_events_are_accepted_with_exact_cents(
    case: tuple[dict[str, Any], int | None, datetime | None],
) -> None:
    doc, cents, when = case
    event = event_of(exact_json(doc))
    assert event.kind == (REFUNDED if doc["type"] == TYPE_REFUNDED else CANCELLED)
    assert (event.event_id, event.order_id) == (doc["event_id"], doc["order_id"])
    assert event.amount_cents == cents
    assert event.items == tuple(RefundItem(**i) for i in doc.get("items", ()))
    assert event.stated_at == when
    assert event.occurred_at == (when or SENT_AT)
    assert event.reason == (doc.get("reason") or None)


@PROPERTY
@given(valid_refunds(), st.data())
def test_an_event_spelled_otherwise_has_the_same_fingerprint(
    case: tuple[dict[str, Any], int | None, datetime | None], data: st.DataObject
) -> None:
    doc, _, when = case
    original = event_of(exact_json(doc))
    respelled = dict(doc)
    respelled["event_id"] = data.draw(st.sampled_from(["", " ", "\t"])) + doc["event_id"] + " "
    if "amount" in doc:
        respelled["amount"] = data.draw(spellings(doc["amount"]))
    if "items" in doc:
        respelled["items"] = data.draw(st.permutations(doc["items"]))
    if when is not None:
        offset = timezone(timedelta(minutes=data.draw(st.integers(-14 * 60, 14 * 60))))
        respelled["occurred_at"] = when.astimezone(offset).isoformat()
    if not doc.get("reason"):
        respelled["reason"] = data.draw(st.sampled_from([None, "", "  ", ...]))
        if respelled["reason"] is ...:
            del respelled["reason"]
    if data.draw(st.booleans()):  # keys in another order
        respelled = dict(reversed(list(respelled.items())))
    # Another SentTimestamp: an undated event re-sent later is still the same event.
    again = event_of(exact_json(respelled), {"SentTimestamp": str(int(SENT_AT_MS) + 60_000)})
    assert again.fingerprint == original.fingerprint
    assert again.occurred_at == (when or SENT_AT + timedelta(minutes=1))


def _changes(doc: dict[str, Any]) -> list[str]:
    """The payload changes that apply to ``doc``."""
    names = ["event_id", "order_id", "occurred_at", "reason", "kind"]
    if "amount" in doc:
        names.append("amount")
    if "items" in doc:
        names += ["quantity", "another_item"]
    return names


@PROPERTY
@given(valid_refunds(), st.data())
def test_any_change_of_the_payload_changes_the_fingerprint(
    case: tuple[dict[str, Any], int | None, datetime | None], data: st.DataObject
) -> None:
    doc, cents, when = case
    original = event_of(exact_json(doc))
    change = data.draw(st.sampled_from(_changes(doc)))
    changed = json.loads(json.dumps(doc, default=str))  # a deep copy
    if "amount" in doc:
        changed["amount"] = doc["amount"]
    if change in ("event_id", "order_id"):
        changed[change] = doc[change] + "x" if len(doc[change]) < 128 else doc[change][:-1]
    elif change == "occurred_at":
        # Microseconds count; a stated time differs from none (the SentTimestamp's instant).
        changed["occurred_at"] = ((when or SENT_AT) + timedelta(microseconds=1)).isoformat()
        if when is None and data.draw(st.booleans()):
            changed["occurred_at"] = SENT_AT.isoformat()
    elif change == "reason":
        changed["reason"] = (doc.get("reason") or "") + "!"
    elif change == "kind":
        if doc["type"] == TYPE_CANCELLED:
            changed.update(type=TYPE_REFUNDED, amount=Decimal(1))
        else:
            changed.update(type=TYPE_CANCELLED)
            changed.pop("amount", None)
            changed.pop("items", None)
    elif change == "amount":
        step = 1 if cents == 1 else data.draw(st.sampled_from([1, -1]))
        if cents == 100_000_000_000:
            step = -1
        assert cents is not None
        changed["amount"] = Decimal(cents + step).scaleb(-2)
    elif change == "quantity":
        changed["items"][0]["quantity"] += 1
    else:
        taken = {i["product_id"] for i in doc["items"]}
        changed["items"].append(
            {"product_id": "new-" + "-".join(sorted(taken))[:100], "quantity": 1}
        )
    other = event_of(exact_json(changed))
    assert other.fingerprint != original.fingerprint


def test_the_event_fingerprint_is_versioned() -> None:
    version, digest = event_of(refund()).fingerprint.split(":")
    assert version == "e1"
    assert len(digest) == 32 and int(digest, 16) >= 0


def test_the_kind_alone_changes_the_fingerprint() -> None:
    cancellation = event_of(cancel())
    assert replace(cancellation, kind=REFUNDED).fingerprint != cancellation.fingerprint


BREAKERS: list[tuple[str, str, Any]] = [
    # (field, code, new value); a value of ... deletes the field
    ("type", UNKNOWN_TYPE, "order.returned"),
    ("event_id", MISSING_FIELD, ...),
    ("event_id", INVALID_FIELD, ""),
    ("event_id", INVALID_FIELD, "E\x7f"),
    ("order_id", MISSING_FIELD, ...),
    ("order_id", INVALID_FIELD, 1000),
    ("occurred_at", INVALID_TIMESTAMP, "not a date"),
    ("reason", INVALID_FIELD, "x" * 1001),
    ("reason", INVALID_FIELD, {"text": "x"}),
]
REFUND_BREAKERS: list[tuple[str, str, Any]] = [
    ("amount", INVALID_FIELD, Decimal("-1")),
    ("amount", INVALID_FIELD, "10"),
    ("amount", TOO_MANY_DECIMALS, Decimal("0.005")),
    ("items", INVALID_ITEMS, []),
    ("items", INVALID_ITEMS, [{"product_id": "P", "quantity": -1}]),
]


@PROPERTY
@given(valid_refunds(), st.data())
def test_one_broken_event_field_gives_that_fields_code(
    case: tuple[dict[str, Any], int | None, datetime | None], data: st.DataObject
) -> None:
    doc, _, _ = case
    refund_fields = [b for b in REFUND_BREAKERS if b[0] in doc]
    name, code, bad = data.draw(st.sampled_from(BREAKERS + refund_fields))
    if bad is ...:
        del doc[name]
    else:
        doc[name] = bad
    result = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    assert isinstance(result, Rejection), (doc, result)
    assert result.codes == (code,)
    assert {r.field.split("[")[0].split(".")[0] for r in result.reasons} == {name}


event_shaped = st.dictionaries(
    st.sampled_from(["type", "event_id", "order_id", "amount", "items", "occurred_at", "reason"]),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(MESSAGE_TYPES)
    | st.text()
    | st.lists(
        st.dictionaries(
            st.sampled_from(["product_id", "quantity"]),
            st.none() | st.integers() | st.text() | st.floats(allow_nan=False),
        )
    ),
)


@PROPERTY
@given(event_shaped)
def test_any_event_shaped_json_never_raises(value: dict[str, Any]) -> None:
    result = validate_message(json.dumps(value), SENT_ATTRIBUTES)
    assert isinstance(result, Order | Event | Rejection)
