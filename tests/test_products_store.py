"""Per-product figures through the store's script (``apply_batch.lua``): units and revenue
net of refunds by items and cancellations, overall and per day, each order and event once,
on fakeredis and on one real node."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from orders.validation import Item
from stats.store import AggregateStore, ApplyStatus, ProductFigures, RankedProduct
from tests.product_helpers import (
    CANCEL,
    DAY1,
    DAY2,
    DAY3,
    O1,
    O2,
    O3,
    REFUND_AMOUNT,
    REFUND_ITEMS,
    apply,
    order,
)


@pytest.fixture(params=["fake", "real"])
def product_store(request) -> AggregateStore:
    fixture = {"real": "store", "fake": "fake_store"}[request.param]
    store: AggregateStore = request.getfixturevalue(fixture)
    return store


def figures(store: AggregateStore, *product_ids: str) -> list[ProductFigures | None]:
    return [store.product_stats(p) for p in product_ids]


def test_orders_add_their_products_units_and_revenue_overall_and_on_their_day(
    product_store: AggregateStore,
) -> None:
    apply(product_store, orders=(O1, O2, O3))

    assert figures(product_store, "P1", "P2", "P3", "nope") == [
        ProductFigures("P1", 3, 3000), ProductFigures("P2", 1, 550),
        ProductFigures("P3", 3, 333), None,
    ]  # fmt: skip
    assert product_store.top_products(10, "revenue") == [
        RankedProduct(1, "P1", 3, 3000), RankedProduct(2, "P2", 1, 550),
        RankedProduct(3, "P3", 3, 333),
    ]  # fmt: skip
    # By units: P1 and P3 tie at 3, by product_id ascending.
    assert [(r.rank, r.product_id) for r in product_store.top_products(2, "units")] == [
        (1, "P1"), (2, "P3"),
    ]  # fmt: skip
    assert product_store.top_products(10, "revenue", DAY1, DAY1) == [
        RankedProduct(1, "P1", 2, 2000), RankedProduct(2, "P2", 1, 550),
    ]  # fmt: skip
    assert product_store.top_products(10, "revenue", DAY2, DAY3) == [
        RankedProduct(1, "P1", 1, 1000), RankedProduct(2, "P3", 3, 333),
    ]  # fmt: skip


def test_refunds_by_items_and_cancellations_come_off_their_products_on_their_own_day(
    product_store: AggregateStore,
) -> None:
    apply(product_store, orders=(O1, O2, O3))

    assert apply(product_store, REFUND_ITEMS, REFUND_AMOUNT) == [ApplyStatus.APPLIED] * 2
    # The refund by amount changed no product; the one by items took one P1 off.
    assert figures(product_store, "P1", "P2") == [
        ProductFigures("P1", 2, 2000), ProductFigures("P2", 1, 550),
    ]  # fmt: skip
    assert apply(product_store, CANCEL, REFUND_ITEMS) == [
        ApplyStatus.APPLIED, ApplyStatus.DUPLICATE,
    ]  # fmt: skip

    # The cancelled order's products are gone (P2 stays known at 0); O2's P1 remains whole
    # although 3.00 of O2 was refunded by amount.
    assert figures(product_store, "P1", "P2", "P3") == [
        ProductFigures("P1", 1, 1000), ProductFigures("P2", 0, 0), ProductFigures("P3", 3, 333),
    ]  # fmt: skip
    assert product_store.global_stats().refunded_cents == 1000 + 300 + 1650
    # Sales on the orders' days, refunds on the events' day (08-12: only what was taken off).
    assert product_store.top_products(10, "revenue", DAY1, DAY1) == [
        RankedProduct(1, "P1", 2, 2000), RankedProduct(2, "P2", 1, 550),
    ]  # fmt: skip
    assert product_store.top_products(10, "units", DAY3, DAY3) == [
        RankedProduct(1, "P2", -1, -550), RankedProduct(2, "P1", -2, -2000),
    ]  # fmt: skip
    assert product_store.top_products(10, "revenue", DAY1, DAY3) == [
        RankedProduct(1, "P1", 1, 1000), RankedProduct(2, "P3", 3, 333),
        RankedProduct(3, "P2", 0, 0),
    ]  # fmt: skip


def test_an_order_redelivered_counts_its_products_once(product_store: AggregateStore) -> None:
    apply(product_store, orders=(O1,))
    assert apply(product_store, orders=(O1,)) == [ApplyStatus.DUPLICATE]

    assert figures(product_store, "P1") == [ProductFigures("P1", 2, 2000)]


def test_a_product_id_with_colons_and_a_sub_cent_price_round_half_up_per_order(
    product_store: AggregateStore,
) -> None:
    when = datetime(2025, 8, 9, 10, 0, tzinfo=UTC)
    odd = order("O9", "U9", 1, when, Item("a:b:units", 3, Decimal("0.005")))

    apply(product_store, orders=(odd,))

    assert figures(product_store, "a:b:units", "a:b") == [ProductFigures("a:b:units", 3, 2), None]
