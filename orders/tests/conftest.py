"""Shared fixtures for the orders app tests: a valid order document and helpers around it,
and the exact JSON writing and hypothesis strategies the message contract's tests share."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import transaction
from hypothesis import strategies as st

from orders.commit import validate_batch
from orders.ledger import LedgerOutcome, record_batch, record_orders
from orders.validation import Order, validate_message

SENT_AT_MS = "1723198500000"  # 2024-08-09T10:15:00Z
SENT_ATTRIBUTES = {"SentTimestamp": SENT_AT_MS}
SENT_AT = datetime(2024, 8, 9, 10, 15, tzinfo=UTC)
LEDGER_RECEIVED_AT = datetime(2025, 8, 9, 10, 16, 0, 123456, tzinfo=UTC)


def valid_doc() -> dict[str, Any]:
    """The order contract's example order (order_value 109.97 = 2 x 19.99 + 69.99)."""
    return {
        "order_id": "ORD1000",
        "user_id": "U100",
        "order_timestamp": "2025-08-09T10:15:00Z",
        "order_value": 109.97,
        "items": [
            {"product_id": "P001", "quantity": 2, "price_per_unit": 19.99},
            {"product_id": "P042", "quantity": 1, "price_per_unit": 69.99},
        ],
        "shipping_address": "123 Main St, Springfield",
        "payment_method": "CreditCard",
    }


def body_of(doc: Any) -> str:
    return json.dumps(doc)


def accept(
    body: str, message_id: str = "msg-1", received_at: datetime = LEDGER_RECEIVED_AT
) -> Order:
    """Record a valid order in the ledger the way the consumer does (``record_orders``)."""
    order = validate_message(body, SENT_ATTRIBUTES)
    assert isinstance(order, Order), order
    outcome = record_orders([({"MessageId": message_id, "Body": body}, order)], received_at)
    assert outcome.conflicts == []
    return order


@pytest.fixture
def order_doc() -> dict[str, Any]:
    return valid_doc()


def crafted_cursor(position: str, reverse: bool = False) -> str:
    """A cursor in DRF's encoding (what a next/previous link carries) around ``position``,
    ``<time> <order_id>`` (``orders.api.pagination``)."""
    tokens = {"p": position} | ({"r": "1"} if reverse else {})
    return base64.b64encode(urlencode(tokens).encode("ascii")).decode("ascii")


class Raw(str):
    """A JSON token written into the text as it is (a number spelled a chosen way)."""

    __slots__ = ()


def exact_json(value: Any, duplicate: tuple[int, str] | None = None) -> str:
    """JSON text with Decimals written digit for digit (json.dumps would need floats).

    ``duplicate`` = (id of a dict in ``value``, one of its keys): that key is written twice.
    """
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        pairs = [f"{json.dumps(k)}: {exact_json(v, duplicate)}" for k, v in value.items()]
        if duplicate is not None and duplicate[0] == id(value):
            pairs.append(f"{json.dumps(duplicate[1])}: {exact_json(value[duplicate[1]])}")
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(exact_json(v, duplicate) for v in value) + "]"
    return json.dumps(value)


# Ids the validator accepts as they are (nothing to trim).
valid_ids = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=128
).filter(lambda s: 1 <= len(s.strip()) <= 128 and s.strip() == s)


@st.composite
def spellings(draw: st.DrawFn, value: Decimal) -> Raw:
    """Another JSON spelling of ``value``: trailing zeros, exponent form, -0 for zero."""
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # a finite Decimal's ("n", "N", "F": NaN, infinity)
    extra = draw(st.integers(0, 6))
    coefficient = ("".join(map(str, digits)) + "0" * extra).lstrip("0") or "0"
    exponent -= extra
    style = draw(st.sampled_from(["fixed", "e", "E"]))
    if style == "fixed":
        text = format(Decimal(f"{coefficient}e{exponent}"), "f")
    else:
        text = f"{coefficient}{style}{exponent}"
    if value == 0 and draw(st.booleans()):
        text = "-" + text
    assert Decimal(text) == value
    return Raw(text)


def event_body(
    event_id: str,
    order_id: str = "ORD1000",
    *,
    kind: str = "refunded",
    amount: str | None = None,
    items: list[tuple[str, int]] | None = None,
    occurred_at: str | None = "2025-08-10T09:30:00Z",
    reason: str | None = None,
) -> str:
    """A refund or cancellation message's body (amount as exact text)."""
    doc: dict[str, Any] = {"type": f"order.{kind}", "event_id": event_id, "order_id": order_id}
    if amount is not None:
        doc["amount"] = Raw(amount)
    if items is not None:
        doc["items"] = [{"product_id": p, "quantity": q} for p, q in items]
    if occurred_at is not None:
        doc["occurred_at"] = occurred_at
    if reason is not None:
        doc["reason"] = reason
    return exact_json(doc)


def sqs_message(message_id: str, body: str) -> dict[str, Any]:
    """A received SQS message as the consumer hands it on."""
    return {
        "MessageId": message_id,
        "Body": body,
        "Attributes": {"SentTimestamp": SENT_AT_MS, "ApproximateReceiveCount": "1"},
    }


def record(*messages: dict[str, Any], received_at: datetime = LEDGER_RECEIVED_AT) -> LedgerOutcome:
    """Validate ``messages`` and record them in one transaction, as a batch's commit does."""
    batch = validate_batch(messages, received_at)
    assert batch.rejected == [], batch.rejected
    with transaction.atomic():
        return record_batch(batch.orders, batch.events, received_at, queue_name="orders")
