"""Every stats endpoint's figures with refunds and cancellations in the data (Shopify's rule:
gross on the order's day, refunds on the day they occurred, net = gross - refunds), and the
same endpoints on data without events, whose figures are those of before."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from stats.store import AggregateStore
from tests.event_helpers import (
    ALICE_BODY,
    BY_DATE_BODY,
    BY_DATE_EXACT_TEXT,
    CAROL_BODY,
    GLOBAL_BODY,
    ORDERS,
    TOP_SPENDERS_BODY,
    fill_with_refunds,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def refunded(fake_store: AggregateStore) -> AggregateStore:
    return fill_with_refunds(fake_store)


def test_global_stats_are_net_with_gross_refunds_and_cancellations(
    refunded: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/global")

    assert response.status_code == 200
    assert response.json() == GLOBAL_BODY
    assert response.content == (
        b'{"total_orders":7,"total_revenue":1000000000360.02,"gross_revenue":1000000000811.01,'
        b'"refunded":450.99,"cancelled_orders":1,"unique_users":4,'
        b'"average_order_value":142857142973.00,"currency":"USD"}'
    )


@pytest.mark.parametrize(("user", "body"), [("alice", ALICE_BODY), ("carol", CAROL_BODY)])
def test_user_stats_are_net_spend_with_gross_refunds_and_cancellations(
    refunded: AggregateStore, api: APIClient, user: str, body: dict[str, object]
) -> None:
    response = api.get(f"/users/{user}/stats")

    assert response.status_code == 200
    assert response.json() == body


def test_user_money_is_exact_text(refunded: AggregateStore, api: APIClient) -> None:
    response = api.get("/users/carol/stats")

    assert response.content.startswith(
        b'{"user_id":"carol","order_count":1,"total_spend":0.00,"gross_spend":400.00,'
        b'"refunded":400.00,"cancelled_orders":1,"average_order_value":400.00,'
    )


def test_top_spenders_rank_by_net_spend(refunded: AggregateStore, api: APIClient) -> None:
    response = api.get("/stats/top-spenders", {"limit": 10})

    assert response.status_code == 200
    assert response.json() == TOP_SPENDERS_BODY


def test_top_buyers_still_count_cancelled_orders(refunded: AggregateStore, api: APIClient) -> None:
    response = api.get("/stats/top-buyers", {"limit": 10})

    assert response.status_code == 200
    assert response.json() == [
        {"rank": 1, "user_id": "dave", "order_count": 3},
        {"rank": 2, "user_id": "alice", "order_count": 2},
        {"rank": 3, "user_id": "bob", "order_count": 1},
        {"rank": 4, "user_id": "carol", "order_count": 1},
    ]


def test_by_date_counts_refunds_on_the_day_they_occurred(
    refunded: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/by-date", {"start_date": "2025-08-08", "end_date": "2025-08-12"})

    assert response.status_code == 200
    assert response.json() == BY_DATE_BODY
    assert BY_DATE_EXACT_TEXT in response.content


def test_a_range_holding_only_a_refunds_day_is_negative_net(
    refunded: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/by-date", {"start_date": "2025-08-12", "end_date": "2025-08-12"})

    assert response.status_code == 200
    assert response.content == (
        b'{"start_date":"2025-08-12","end_date":"2025-08-12","interval":"day","currency":"USD",'
        b'"total_orders":0,'
        b'"total_revenue":-400.00,"gross_revenue":0.00,"refunded":400.00,"days":[{"date":'
        b'"2025-08-12","total_orders":0,"total_revenue":-400.00,"gross_revenue":0.00,'
        b'"refunded":400.00}]}'
    )


# --- Without events: the figures of before, net = gross ---------------------------------------
@pytest.fixture
def orders_only(fake_store: AggregateStore) -> AggregateStore:
    fake_store.apply_orders(ORDERS)
    return fake_store


def test_without_events_global_stats_are_todays_numbers(
    orders_only: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/global")

    assert response.status_code == 200
    assert response.content == (
        b'{"total_orders":7,"total_revenue":1000000000811.01,"gross_revenue":1000000000811.01,'
        b'"refunded":0.00,"cancelled_orders":0,"unique_users":4,'
        b'"average_order_value":142857142973.00,"currency":"USD"}'
    )


def test_without_events_user_stats_and_ranking_are_todays_numbers(
    orders_only: AggregateStore, api: APIClient
) -> None:
    user = api.get("/users/carol/stats")
    spenders = api.get("/stats/top-spenders", {"limit": 10})

    assert (user.status_code, spenders.status_code) == (200, 200)
    assert user.json() == CAROL_BODY | {"total_spend": 400.0, "refunded": 0, "cancelled_orders": 0}
    assert spenders.json() == [
        {"rank": 1, "user_id": "bob", "total_spend": 1000000000010.99},
        {"rank": 2, "user_id": "carol", "total_spend": 400.0},
        {"rank": 3, "user_id": "alice", "total_spend": 399.99},
        {"rank": 4, "user_id": "dave", "total_spend": 0.03},
    ]


def test_without_events_by_date_is_todays_numbers(
    orders_only: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/by-date", {"start_date": "2025-08-10", "end_date": "2025-08-11"})

    assert response.status_code == 200
    assert response.json() == {
        "start_date": "2025-08-10",
        "end_date": "2025-08-11",
        "interval": "day",
        "currency": "USD",
        "total_orders": 5,
        "total_revenue": 500.03,
        "gross_revenue": 500.03,
        "refunded": 0,
        "days": [
            {
                "date": "2025-08-10",
                "total_orders": 0,
                "total_revenue": 0,
                "gross_revenue": 0,
                "refunded": 0,
            },
            {
                "date": "2025-08-11",
                "total_orders": 5,
                "total_revenue": 500.03,
                "gross_revenue": 500.03,
                "refunded": 0,
            },
        ],
    }
