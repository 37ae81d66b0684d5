"""Orders with products and their refunds and cancellation, for the products' store and API
tests: applied through the store as a consumer's batch applies them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from orders.ledger import RecordedEvent
from orders.validation import Item, Order
from stats.store import AggregateStore, ApplyStatus, PendingEvent, PendingOrder
from tests.ingestion_helpers import make_event

DAY1, DAY2, DAY3 = date(2025, 8, 9), date(2025, 8, 10), date(2025, 8, 12)


def order(order_id: str, user_id: str, cents: int, when: datetime, *items: Item) -> Order:
    return Order(order_id, user_id, cents, items, when, when)


O1 = order(
    "O1", "U1", 2650, datetime(2025, 8, 9, 10, 0, tzinfo=UTC),
    Item("P1", 2, Decimal("10.00")), Item("P2", 1, Decimal("5.50")), Item(None, 1, Decimal("1")),
)  # fmt: skip
O2 = order("O2", "U2", 1000, datetime(2025, 8, 10, 9, 0, tzinfo=UTC), Item("P1", 1, Decimal("10")))
O3 = order("O3", "U3", 333, datetime(2025, 8, 10, 9, 0, tzinfo=UTC), Item("P3", 3, Decimal("1.11")))


def with_items(event: RecordedEvent, *items: tuple[str, int, Decimal]) -> RecordedEvent:
    return RecordedEvent(
        event.event_id, event.order_id, event.user_id, event.kind, event.amount_cents,
        tuple(items), event.occurred_at, event.fingerprint, event.first_recorded_at,
        event.message_id, event.counted,
    )  # fmt: skip


# A refund of one P1 of O1 (by items), 3.00 of O2 by amount (no product's), and O1 cancelled:
# what its refund left (one P1, the P2; its product-less line is no product's).
REFUND_ITEMS = with_items(
    make_event("E1", O1, 1000, datetime(2025, 8, 12, 8, 0, tzinfo=UTC)),
    ("P1", 1, Decimal("10.00")),
)
REFUND_AMOUNT = make_event("E2", O2, 300, datetime(2025, 8, 12, 9, 0, tzinfo=UTC))
CANCEL = with_items(
    make_event("E3", O1, 1650, datetime(2025, 8, 12, 10, 0, tzinfo=UTC), kind="cancelled"),
    ("P1", 1, Decimal("10.00")),
    ("P2", 1, Decimal("5.50")),
)


def apply(
    store: AggregateStore, *events: RecordedEvent, orders: tuple[Order, ...] = ()
) -> list[ApplyStatus]:
    """``orders`` and ``events`` as one batch (each counted as received)."""
    done = store.apply_batch(
        [PendingOrder(o) for o in orders], events=[PendingEvent(e) for e in events]
    )
    return [*done.statuses, *done.event_statuses]


def fill_with_products(store: AggregateStore) -> AggregateStore:
    """O1-O3, then the refund by items and by amount, then the cancellation."""
    apply(store, orders=(O1, O2, O3))
    apply(store, REFUND_ITEMS, REFUND_AMOUNT)
    apply(store, CANCEL)
    return store
