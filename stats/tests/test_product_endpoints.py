"""/stats/top-products and /products/{product_id}/stats: whole bodies after orders, a refund
by items, a refund by amount (no product changes) and a cancellation; ties by product_id;
date ranges; the 400s and the 404."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from orders.validation import MAX_ID_LENGTH, Item
from stats.store import AggregateStore
from tests.product_helpers import O1, O2, O3, apply, fill_with_products, order

pytestmark = pytest.mark.django_db


@pytest.fixture
def products(app_store: AggregateStore) -> AggregateStore:
    return fill_with_products(app_store)


def row(rank: int, product_id: str, units: int, revenue: float) -> dict[str, object]:
    return {
        "rank": rank,
        "product_id": product_id,
        "units": units,
        "revenue": revenue,
        "currency": "USD",
    }


def test_top_products_rank_net_revenue_after_refunds_and_a_cancellation(
    products: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/top-products")

    assert response.status_code == 200
    # P1: 3 sold, one refunded by items, one taken back by O1's cancellation; O2's refund by
    # amount (3.00) took nothing off it. P2 all taken back: listed at 0.
    assert response.json() == [row(1, "P1", 1, 10.0), row(2, "P3", 3, 3.33), row(3, "P2", 0, 0)]
    assert response.content == (
        b'[{"rank":1,"product_id":"P1","units":1,"revenue":10.00,"currency":"USD"},'
        b'{"rank":2,"product_id":"P3","units":3,"revenue":3.33,"currency":"USD"},'
        b'{"rank":3,"product_id":"P2","units":0,"revenue":0.00,"currency":"USD"}]'
    )


def test_top_products_by_units_break_ties_by_product_id_ascending(
    app_store: AggregateStore, api: APIClient
) -> None:
    apply(app_store, orders=(O3, O1, O2))  # P1 and P3: 3 units each

    response = api.get("/stats/top-products?by=units&limit=2")

    assert response.status_code == 200
    assert response.json() == [row(1, "P1", 3, 30.0), row(2, "P3", 3, 3.33)]


def test_top_products_by_revenue_break_ties_by_product_id_ascending(
    app_store: AggregateStore, api: APIClient
) -> None:
    when = O1.occurred_at
    apply(
        app_store,
        orders=(
            order("T1", "U7", 500, when, Item("b", 1, Decimal("5"))),
            order("T2", "U8", 500, when, Item("a", 2, Decimal("2.50"))),
            order("T3", "U9", 500, when, Item("c", 5, Decimal("1"))),
        ),
    )

    response = api.get("/stats/top-products?by=revenue")

    assert response.status_code == 200
    assert response.json() == [row(1, "a", 2, 5.0), row(2, "b", 1, 5.0), row(3, "c", 5, 5.0)]


@pytest.mark.parametrize(
    ("query", "body"),
    [
        # The orders' days: sales only.
        ("start_date=2025-08-09&end_date=2025-08-10",
         [row(1, "P1", 3, 30.0), row(2, "P2", 1, 5.5), row(3, "P3", 3, 3.33)]),
        # The events' day: only what was taken back, negative.
        ("start_date=2025-08-12&end_date=2025-08-12&by=units",
         [row(1, "P2", -1, -5.5), row(2, "P1", -2, -20.0)]),
        # Every day: the all-time figures.
        ("start_date=2025-08-01&end_date=2025-08-31",
         [row(1, "P1", 1, 10.0), row(2, "P3", 3, 3.33), row(3, "P2", 0, 0)]),
        # A range without sales or refunds.
        ("start_date=2025-09-01&end_date=2025-09-30", []),
    ],
    ids=["orders-days", "refunds-day", "whole-month", "empty"],
)  # fmt: skip
def test_top_products_over_a_range_count_sales_on_their_day_and_refunds_on_theirs(
    products: AggregateStore, api: APIClient, query: str, body: list[dict[str, object]]
) -> None:
    response = api.get(f"/stats/top-products?{query}")

    assert response.status_code == 200
    assert response.json() == body


def test_a_products_stats_are_its_net_units_and_revenue(
    products: AggregateStore, api: APIClient
) -> None:
    response = api.get("/products/P1/stats")

    assert response.status_code == 200
    assert response.content == (b'{"product_id":"P1","units":1,"revenue":10.00,"currency":"USD"}')
    assert api.get("/products/P2/stats").json() == {
        "product_id": "P2", "units": 0, "revenue": 0, "currency": "USD",
    }  # fmt: skip


def test_a_product_id_with_a_slash_and_unicode_is_found_percent_encoded(
    app_store: AggregateStore, api: APIClient
) -> None:
    odd = order("S1", "U1", 250, O1.occurred_at, Item("a/ü", 1, Decimal("2.5")))
    apply(app_store, orders=(odd,))

    response = api.get(f"/products/{quote('a/ü', safe='')}/stats")

    assert response.status_code == 200
    assert response.json() == {
        "product_id": "a/ü", "units": 1, "revenue": 2.5, "currency": "USD",
    }  # fmt: skip


def test_an_unknown_product_is_a_404(products: AggregateStore, api: APIClient) -> None:
    response = api.get("/products/nope/stats")

    assert response.status_code == 404
    assert response.json() == {"detail": "No orders recorded with product nope."}


def test_a_product_id_too_long_is_a_400_naming_it(products: AggregateStore, api: APIClient) -> None:
    response = api.get(f"/products/{'p' * (MAX_ID_LENGTH + 1)}/stats")

    assert response.status_code == 400
    assert response.json() == {"product_id": [f"Must be at most {MAX_ID_LENGTH} characters long."]}


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("limit=0", {"limit": ["Ensure this value is greater than or equal to 1."]}),
        ("limit=101", {"limit": ["Ensure this value is less than or equal to 100."]}),
        ("limit=x", {"limit": ["A valid integer is required."]}),
        ("limit=5&limit=x", {"limit": ["Give this parameter once."]}),
        ("by=price", {"by": ['"price" is not a valid choice.']}),
        ("start_date=2025-08-01",
         {"end_date": ["Required with start_date: a range names both of its days."]}),
        ("end_date=2025-08-01",
         {"start_date": ["Required with end_date: a range names both of its days."]}),
        ("start_date=2025-08-02&end_date=2025-08-01",
         {"end_date": ["Must not be before start_date (2025-08-02)."]}),
        ("start_date=2024-01-01&end_date=2025-01-01",
         {"end_date": ["The range may span at most 366 days; this one spans 367."]}),
        ("start_date=2025-02-30&end_date=2025-03-01",
         {"start_date": ["2025-02-30 is not a calendar date."]}),
        ("start_date=20250801&end_date=2025-08-02",
         {"start_date": ["Must be a date in the form YYYY-MM-DD (got '20250801')."]}),
    ],
)  # fmt: skip
def test_top_products_parameters_are_checked_like_the_other_endpoints(
    products: AggregateStore, api: APIClient, query: str, body: dict[str, list[str]]
) -> None:
    response = api.get(f"/stats/top-products?{query}")

    assert response.status_code == 400
    assert response.json() == body
