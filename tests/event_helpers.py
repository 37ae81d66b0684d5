"""Refunds and cancellations for the API tests: applied through the store as a consumer's
batch applies them, and one set of orders and events the API tests share, with the figures
every endpoint must then serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from orders.ledger import RecordedEvent
from orders.validation import Order
from stats.store import AggregateStore, PendingEvent
from tests.ingestion_helpers import make_event, make_order


def refund(event_id: str, order: Order, cents: int, when: datetime) -> RecordedEvent:
    return make_event(event_id, order, cents, when)


def cancel(event_id: str, order: Order, cents: int, when: datetime) -> RecordedEvent:
    """``cents``: what was left of the order unrefunded, which the cancellation refunds."""
    return make_event(event_id, order, cents, when, kind="cancelled")


def apply_events(store: AggregateStore, events: Sequence[RecordedEvent]) -> None:
    """Apply ``events`` as one batch of their messages (each counted as received), through
    ``apply_batch`` (``apply_batch.lua``): each once, by its own mark, recorded just now."""
    store.apply_batch([], events=[PendingEvent(e, None, e.counted) for e in events])


# --- The shared data: seven orders of four users, then a refund, a partial refund and a
# cancellation, one of them on a day without orders. ----------------------------------------
ORDERS = [
    make_order("O1", "alice", 29999, datetime(2025, 8, 9, 10, 15, tzinfo=UTC)),
    make_order("O2", "alice", 10000, datetime(2025, 8, 11, 8, 0, 0, 250000, tzinfo=UTC)),
    make_order("O3", "bob", 100000000001099, datetime(2025, 8, 9, 23, 59, 59, tzinfo=UTC)),
    make_order("O4", "carol", 40000, datetime(2025, 8, 11, 0, 0, tzinfo=UTC)),
    make_order("O5", "dave", 1, datetime(2025, 8, 11, 0, 0, tzinfo=UTC)),
    make_order("O6", "dave", 1, datetime(2025, 8, 11, 0, 0, 1, tzinfo=UTC)),
    make_order("O7", "dave", 1, datetime(2025, 8, 11, 0, 0, 2, tzinfo=UTC)),
]
EVENTS = [
    # 50.00 of alice's first order back on 08-10, a day without orders: its net is -50.00.
    refund("E1", ORDERS[0], 5000, datetime(2025, 8, 10, 9, 0, tzinfo=UTC)),
    # 0.99 of bob's order, on 08-11 (counted there, not on 08-09, the order's day).
    refund("E2", ORDERS[2], 99, datetime(2025, 8, 11, 12, 0, tzinfo=UTC)),
    # carol's only order cancelled on 08-12: all of its 400.00 back, her net spend 0.
    cancel("E3", ORDERS[3], 40000, datetime(2025, 8, 12, 7, 30, tzinfo=UTC)),
]


def fill_with_refunds(store: AggregateStore) -> AggregateStore:
    """``ORDERS`` in one batch, ``EVENTS`` in the next."""
    store.apply_orders(ORDERS)
    apply_events(store, EVENTS)
    return store


# What the API serves for that data (gross 1000000000811.01, refunded 450.99).
GLOBAL_BODY = {
    "total_orders": 7,
    "total_revenue": 1000000000360.02,
    "gross_revenue": 1000000000811.01,
    "refunded": 450.99,
    "cancelled_orders": 1,
    "unique_users": 4,
    "average_order_value": 142857142973.00,  # gross / 7 orders, as without refunds
    "currency": "USD",
}
ALICE_BODY = {
    "user_id": "alice",
    "order_count": 2,
    "total_spend": 349.99,
    "gross_spend": 399.99,
    "refunded": 50.0,
    "cancelled_orders": 0,
    "average_order_value": 200.0,  # gross 399.99 / 2, half up
    "first_order_at": "2025-08-09T10:15:00Z",
    "last_order_at": "2025-08-11T08:00:00.250000Z",
    "currency": "USD",
}
CAROL_BODY = {
    "user_id": "carol",
    "order_count": 1,
    "total_spend": 0,
    "gross_spend": 400.0,
    "refunded": 400.0,
    "cancelled_orders": 1,
    "average_order_value": 400.0,
    "first_order_at": "2025-08-11T00:00:00Z",
    "last_order_at": "2025-08-11T00:00:00Z",
    "currency": "USD",
}
# By net spend: carol (400.00 gross, all refunded) falls from second to last.
TOP_SPENDERS_BODY = [
    {"rank": 1, "user_id": "bob", "total_spend": 1000000000010.0},
    {"rank": 2, "user_id": "alice", "total_spend": 349.99},
    {"rank": 3, "user_id": "dave", "total_spend": 0.03},
    {"rank": 4, "user_id": "carol", "total_spend": 0},
]


def day(iso: str, orders: int, net: float, gross: float, refunded: float) -> dict[str, object]:
    return {
        "date": iso,
        "total_orders": orders,
        "total_revenue": net,
        "gross_revenue": gross,
        "refunded": refunded,
    }


BY_DATE_BODY = {
    "start_date": "2025-08-08",
    "end_date": "2025-08-12",
    "interval": "day",
    "currency": "USD",
    "total_orders": 7,
    "total_revenue": 1000000000360.02,
    "gross_revenue": 1000000000811.01,
    "refunded": 450.99,
    "days": [
        day("2025-08-08", 0, 0, 0, 0),
        day("2025-08-09", 2, 1000000000310.98, 1000000000310.98, 0),
        day("2025-08-10", 0, -50.0, 0, 50.0),
        day("2025-08-11", 5, 499.04, 500.03, 0.99),
        day("2025-08-12", 0, -400.0, 0, 400.0),
    ],
}
# The exact text of the 08-10 and 08-11 entries (JSON numbers with the currency's 2 decimals).
BY_DATE_EXACT_TEXT = (
    b'{"date":"2025-08-10","total_orders":0,"total_revenue":-50.00,"gross_revenue":0.00,'
    b'"refunded":50.00},{"date":"2025-08-11","total_orders":5,"total_revenue":499.04,'
    b'"gross_revenue":500.03,"refunded":0.99}'
)
