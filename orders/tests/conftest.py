"""Shared fixtures for the orders app tests: a valid order document and helpers around it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from orders.ledger import record_orders
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
