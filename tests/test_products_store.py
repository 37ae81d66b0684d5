"""Per-product figures through the store's script (``apply_batch.lua``): units and revenue
net of refunds by items and cancellations, overall and per day, each order and event once,
on fakeredis and on one real node."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis

from devtools.servers import RedisServer
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


def _calls(client: redis.Redis) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in client.info("commandstats").items()
    }


def test_a_calls_lines_are_summed_and_each_product_hash_written_once(
    private_redis: RedisServer,
) -> None:
    # Ten orders of the same three products on one day: without products the call's
    # commands; with them a TYPE per product hash (overall and the day) and an HINCRBY per
    # hash and field (12), not four HINCRBY per line (120).
    client = redis.Redis.from_url(private_redis.url)
    when = datetime(2025, 8, 9, 10, 0, tzinfo=UTC)
    lines = (Item("P1", 1, Decimal("1")), Item("P2", 2, Decimal("2")), Item("P3", 3, Decimal("3")))
    apply(AggregateStore(client, prefix="warm"), orders=(O2,))  # loads the script
    calls = []
    for prefix, items in (("bare", ()), ("sold", lines)):
        batch = tuple(order(f"O{n}", f"U{n}", 1400, when, *items) for n in range(10))
        client.config_resetstat()
        apply(AggregateStore(client, prefix=prefix), orders=batch)
        calls.append(_calls(client))
    bare, sold = calls

    more = {name: sold[name] - bare.get(name, 0) for name in sold}
    assert {name: extra for name, extra in more.items() if extra} == {"type": 2, "hincrby": 12}
    store = AggregateStore(client, prefix="sold")
    assert figures(store, "P1", "P3") == [
        ProductFigures("P1", 10, 1000), ProductFigures("P3", 30, 9000),
    ]  # fmt: skip


def test_product_totals_beyond_a_doubles_exact_integers_stay_exact(store: AggregateStore) -> None:
    # The script sums lines in Lua numbers (doubles) only while that is exact; Redis adds
    # the sums to what is stored in 64-bit integers.
    store.client.hset(store.keys.products(0, 0), mapping={"P1:units": 5, "P1:revenue": 2**60})

    apply(store, orders=(O2,))

    assert figures(store, "P1") == [ProductFigures("P1", 6, 2**60 + 1000)]


def test_lines_too_large_to_sum_in_lua_are_added_one_by_one_exactly(
    store: AggregateStore,
) -> None:
    when = datetime(2025, 8, 9, 10, 0, tzinfo=UTC)
    big = [
        order(f"O{n}", f"U{n}", cents, when, Item("P1", 1, Decimal(cents) / 100))
        for n, cents in enumerate((2**52 + 1, 2**52))
    ]

    apply(store, orders=tuple(big))

    assert figures(store, "P1") == [ProductFigures("P1", 2, 2**53 + 1)]


def test_summed_lines_count_only_the_orders_applied_in_the_call(
    product_store: AggregateStore,
) -> None:
    # O1 again (a duplicate) with two new orders of its P1 on its day: the call sums its
    # lines per field, and O1's are left out.
    apply(product_store, orders=(O1,))
    more = [
        order(f"O{n}", "U1", 1000, O1.occurred_at, Item("P1", 1, Decimal("10"))) for n in (4, 5)
    ]

    assert apply(product_store, orders=(O1, *more)) == [
        ApplyStatus.DUPLICATE, ApplyStatus.APPLIED, ApplyStatus.APPLIED,
    ]  # fmt: skip
    assert figures(product_store, "P1", "P2") == [
        ProductFigures("P1", 4, 4000), ProductFigures("P2", 1, 550),
    ]  # fmt: skip
    assert product_store.top_products(10, "units", DAY1, DAY1) == [
        RankedProduct(1, "P1", 4, 4000), RankedProduct(2, "P2", 1, 550),
    ]  # fmt: skip
