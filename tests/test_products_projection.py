"""Products in the read model's derivation: the consumers count each product net of refunds
by items and cancellations (a refund by amount changes none), rebuild_stats writes what they
applied, key for key, and reconcile_stats finds and repairs a changed product figure.

Orders and events go through the real commit path (``BatchCommitter``: ledger, then the
script) on a real Redis server, one shard and 8.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest

from orders.tests.conftest import Raw, exact_json
from stats.store import AggregateStore, ProductFigures, RankedProduct
from tests.projection_helpers import (
    NOW,
    commit,
    event_message,
    rebuild,
    reconcile,
    whole_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ORDER_DAY, REFUND_DAY, CANCEL_DAY = date(2025, 8, 9), date(2025, 8, 12), date(2025, 8, 13)


def order_message(
    order_id: str, user_id: str, *items: tuple[str | None, int, str], day: date = ORDER_DAY
) -> dict:
    """An order of ``items`` (product_id or None, quantity, price as exact text)."""
    value = sum((Decimal(price) * quantity for _p, quantity, price in items), Decimal(0))
    lines = [
        {"quantity": q, "price_per_unit": Raw(price)} | ({} if p is None else {"product_id": p})
        for p, q, price in items
    ]
    body = exact_json(
        {"order_id": order_id, "user_id": user_id, "order_timestamp": f"{day}T10:15:00Z",
         "order_value": Raw(str(value)), "items": lines}
    )  # fmt: skip
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "h",
        "Body": body,
        "Attributes": {"SentTimestamp": "1754734500000", "ApproximateReceiveCount": "1"},
    }


def refund_items(event_id: str, order_id: str, items: list[tuple[str, int]], at: str) -> dict:
    from orders.tests.conftest import event_body

    message = event_message(event_id, order_id, occurred_at=at)
    return {**message, "Body": event_body(event_id, order_id, items=items, occurred_at=at)}


def commit_a_stream_with_products(store: AggregateStore) -> None:
    """Three orders (one with a line of no product), one P1 of O1 refunded by items, 3.00 of
    O2 by amount, O1 cancelled (what its refund left: one P1 and the P2), the refund by
    items redelivered."""
    commit(
        store,
        [
            order_message("O1", "U1", ("P1", 2, "10.00"), ("P2", 1, "5.50"), (None, 1, "1.00")),
            order_message("O2", "U2", ("P1", 1, "10.00"), day=date(2025, 8, 10)),
            order_message("O3", "U3", ("P3", 3, "1.11")),
        ],
    )
    by_items = refund_items("E1", "O1", [("P1", 1)], "2025-08-12T08:00:00Z")
    commit(store, [by_items, event_message("E2", "O2", "3.00", occurred_at="2025-08-12T09:00:00Z")])
    cancel = event_message("C1", "O1", kind="cancelled", occurred_at="2025-08-13T10:00:00Z")
    commit(store, [cancel, by_items])


@pytest.fixture(params=["one shard", "8 shards"])
def with_products(request, settings) -> AggregateStore:
    store: AggregateStore = request.getfixturevalue("store")
    if request.param == "8 shards":
        store = AggregateStore(
            request.getfixturevalue("live_redis"),
            prefix=store.prefix,
            dedup_ttl=store.dedup_ttl,
            shards=8,
        )
    settings.REDIS_SHARDS = store.shards
    commit_a_stream_with_products(store)
    return store


def test_the_consumers_count_products_net_of_refunds_by_items_and_cancellations(
    with_products: AggregateStore,
) -> None:
    store = with_products
    # P1: 3 sold (30.00), one refunded by items, one taken back by the cancellation; O2's
    # refund by amount took nothing off P1. P2 all taken back, known at 0.
    assert [store.product_stats(p) for p in ("P1", "P2", "P3")] == [
        ProductFigures("P1", 1, 1000), ProductFigures("P2", 0, 0), ProductFigures("P3", 3, 333),
    ]  # fmt: skip
    assert store.top_products(5, "revenue", REFUND_DAY, CANCEL_DAY) == [
        RankedProduct(1, "P2", -1, -550), RankedProduct(2, "P1", -2, -2000),
    ]  # fmt: skip
    ingest = store.ingestion()
    assert (ingest.events_applied, ingest.events_duplicates) == (3, 1)


def test_a_rebuild_writes_the_products_the_consumers_applied_key_for_key(
    with_products: AggregateStore,
) -> None:
    before = whole_state(with_products)
    assert any(":products" in key for key in before)
    assert any(":pdays:2025-08-13" in key for key in before)
    from tests.ingestion_helpers import prefix_keys

    for key in prefix_keys(with_products.client, with_products.prefix):
        with_products.client.delete(key)

    out = rebuild()

    assert "3 products" in out
    assert whole_state(with_products) == before
    assert reconcile()[0] == 0


def test_reconcile_detects_a_changed_product_figure_and_repairs_it(
    with_products: AggregateStore,
) -> None:
    store = with_products
    before = whole_state(store)
    s1 = store.shard_of("U1")
    store.client.hincrby(store.keys.products(s1, 0), "P2:units", 2)
    store.client.hdel(store.keys.product_day("2025-08-13", s1, 0), "P1:revenue")
    where = f" (shard {s1})" if store.shards > 1 else ""

    exit_code, out = reconcile()

    assert exit_code == 1
    assert f"product P2{where}: 2 units, 0 cents (ledger 0, 0)" in out
    assert f"product P1 on 2025-08-13{where}: -1 units, 0 cents (ledger -1, -1000)" in out

    exit_code, out = reconcile("--repair")
    assert exit_code == 0, out
    assert whole_state(store) == before


def test_a_cancellation_redis_never_applied_is_no_product_difference_and_repair_counts_it(
    store: AggregateStore,
) -> None:
    """Committed to the ledger, then Redis failed for good: reconcile reports it unapplied
    (its products are not a difference of their own); --repair counts its products once,
    with its mark, so its redelivery changes nothing."""
    commit(store, [order_message("O1", "U1", ("P1", 2, "10.00"), ("P2", 1, "5.50"))])
    cancel = event_message("C1", "O1", kind="cancelled", occurred_at="2025-08-13T10:00:00Z")
    real = store.apply_batch
    store.apply_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        commit(store, [cancel], NOW - timedelta(minutes=10))
    store.apply_batch = real  # type: ignore[method-assign]

    exit_code, out = reconcile()
    assert exit_code == 1
    assert "1 ledger events (refunds, cancellations) recorded but never applied" in out
    assert "product " not in out

    exit_code, out = reconcile("--repair")
    assert exit_code == 0, out
    assert [store.product_stats(p) for p in ("P1", "P2")] == [
        ProductFigures("P1", 0, 0), ProductFigures("P2", 0, 0),
    ]  # fmt: skip
    assert store.top_products(5, "units", CANCEL_DAY, CANCEL_DAY) == [
        RankedProduct(1, "P2", -1, -550), RankedProduct(2, "P1", -2, -2000),
    ]  # fmt: skip
    commit(store, [cancel])
    assert store.product_stats("P1") == ProductFigures("P1", 0, 0)
