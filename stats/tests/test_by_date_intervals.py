"""/stats/by-date by ISO week and calendar month, and compared with the period before: the
whole body, and the 400s of the new parameters (fakeredis)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from stats.store import AggregateStore
from tests.ingestion_helpers import make_order

pytestmark = pytest.mark.django_db


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=UTC)


def bucket(day: str, orders: int, revenue: Any) -> dict[str, Any]:
    return {
        "date": day,
        "total_orders": orders,
        "total_revenue": revenue,
        "gross_revenue": revenue,
        "refunded": 0,
    }


@pytest.fixture
def year_end(fake_store: AggregateStore) -> AggregateStore:
    """Orders around ISO week 53 of 2026 (Monday 2026-12-28 to Sunday 2027-01-03)."""
    fake_store.apply_orders(
        [
            make_order("W0", "U1", 100, at("2026-12-28")),  # Monday of week 53, before the range
            make_order("W1", "U1", 200, at("2026-12-30")),
            make_order("W2", "U2", 300, at("2027-01-03")),  # Sunday of week 53
            make_order("W3", "U2", 400, at("2027-01-04")),  # week 1 of 2027
            make_order("W4", "U3", 500, at("2027-01-06")),  # after the range
        ]
    )
    return fake_store


def test_weeks_are_iso_weeks_named_by_their_monday_counting_only_the_range(
    year_end: AggregateStore, api: APIClient
) -> None:
    response = api.get(
        "/stats/by-date", {"start_date": "2026-12-29", "end_date": "2027-01-05", "interval": "week"}
    )

    assert response.status_code == 200
    assert response.json() == {
        "start_date": "2026-12-29",
        "end_date": "2027-01-05",
        "interval": "week",
        "currency": "USD",
        "total_orders": 3,
        "total_revenue": 9.0,
        "gross_revenue": 9.0,
        "refunded": 0,
        "weeks": [bucket("2026-12-28", 2, 5.0), bucket("2027-01-04", 1, 4.0)],
    }
    assert b'"total_revenue":9.00' in response.content  # the currency's two decimals


def test_months_and_the_months_before_side_by_side(
    fake_store: AggregateStore, api: APIClient
) -> None:
    fake_store.apply_orders(
        [
            make_order("M1", "U1", 1000, at("2024-11-30")),
            make_order("M2", "U1", 2000, at("2024-12-01")),
            make_order("M3", "U2", 3000, at("2025-01-31")),
            make_order("M4", "U2", 4000, at("2025-02-01")),
            make_order("M5", "U3", 5000, at("2025-04-01")),  # after the range
        ]
    )

    response = api.get(
        "/stats/by-date",
        {
            "start_date": "2025-01-01",
            "end_date": "2025-03-31",
            "interval": "month",
            "compare": "previous",
        },
    )

    assert response.status_code == 200
    assert response.json() == {
        "start_date": "2025-01-01",
        "end_date": "2025-03-31",
        "interval": "month",
        "currency": "USD",
        "total_orders": 2,
        "total_revenue": 70.0,
        "gross_revenue": 70.0,
        "refunded": 0,
        "months": [
            bucket("2025-01-01", 1, 30.0),
            bucket("2025-02-01", 1, 40.0),
            bucket("2025-03-01", 0, 0),
        ],
        "previous": {
            "start_date": "2024-10-01",
            "end_date": "2024-12-31",
            "total_orders": 2,
            "total_revenue": 30.0,
            "gross_revenue": 30.0,
            "refunded": 0,
            "months": [
                bucket("2024-10-01", 0, 0),
                bucket("2024-11-01", 1, 10.0),
                bucket("2024-12-01", 1, 20.0),
            ],
        },
    }


def test_days_compared_with_as_many_days_before(year_end: AggregateStore, api: APIClient) -> None:
    response = api.get(
        "/stats/by-date",
        {"start_date": "2027-01-03", "end_date": "2027-01-04", "compare": "previous"},
    )

    assert response.status_code == 200
    assert response.json() == {
        "start_date": "2027-01-03",
        "end_date": "2027-01-04",
        "interval": "day",
        "currency": "USD",
        "total_orders": 2,
        "total_revenue": 7.0,
        "gross_revenue": 7.0,
        "refunded": 0,
        "days": [bucket("2027-01-03", 1, 3.0), bucket("2027-01-04", 1, 4.0)],
        "previous": {
            "start_date": "2027-01-01",
            "end_date": "2027-01-02",
            "total_orders": 0,
            "total_revenue": 0,
            "gross_revenue": 0,
            "refunded": 0,
            "days": [bucket("2027-01-01", 0, 0), bucket("2027-01-02", 0, 0)],
        },
    }


def test_months_cover_years_up_to_366_buckets(fake_store: AggregateStore, api: APIClient) -> None:
    fake_store.apply_orders([make_order("Y1", "U1", 12345, at("2015-06-15"))])

    response = api.get(
        "/stats/by-date",
        {"start_date": "2000-01-01", "end_date": "2030-06-30", "interval": "month"},
    )

    assert response.status_code == 200
    body = response.json()
    assert len(body["months"]) == 366
    assert body["months"][185] == bucket("2015-06-01", 1, 123.45)
    assert (body["total_orders"], body["total_revenue"]) == (1, 123.45)


def test_amounts_are_written_with_the_currencys_decimals_and_its_code(
    fake_store: AggregateStore, api: APIClient, settings: Any
) -> None:
    settings.STATS_CURRENCY = "KWD"
    kwd = AggregateStore(fake_store.client, fake_store.prefix, currency="KWD")
    kwd.apply_orders([make_order("K1", "U1", 1250, at("2025-03-03"))])

    response = api.get(
        "/stats/by-date", {"start_date": "2025-03-03", "end_date": "2025-03-09", "interval": "week"}
    )

    assert response.status_code == 200
    assert response.content == (
        b'{"start_date":"2025-03-03","end_date":"2025-03-09","interval":"week","currency":"KWD",'
        b'"total_orders":1,"total_revenue":1.250,"gross_revenue":1.250,"refunded":0.000,'
        b'"weeks":[{"date":"2025-03-03","total_orders":1,"total_revenue":1.250,'
        b'"gross_revenue":1.250,"refunded":0.000}]}'
    )


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        (
            {"start_date": "2025-01-06", "end_date": "2032-01-12", "interval": "week"},
            {
                "end_date": [
                    "A response has at most 366 buckets: the range may touch at most 366 weeks; "
                    "this one touches 367."
                ]
            },
        ),
        (
            {"start_date": "2000-01-01", "end_date": "2030-07-01", "interval": "month"},
            {
                "end_date": [
                    "A response has at most 366 buckets: the range may touch at most 366 "
                    "months; this one touches 367."
                ]
            },
        ),
        (
            {"start_date": "2025-01-01", "end_date": "2025-01-02", "interval": "year"},
            {"interval": ['"year" is not a valid choice.']},
        ),
        (
            {"start_date": "2025-01-01", "end_date": "2025-01-02", "compare": "next"},
            {"compare": ['"next" is not a valid choice.']},
        ),
        (
            {"start_date": "0001-01-01", "end_date": "0001-01-02", "compare": "previous"},
            {"compare": ["The period before 0001-01-01 would start before 0001-01-01."]},
        ),
    ],
)
def test_bad_intervals_and_comparisons_are_400s_naming_the_rule(
    fake_store: AggregateStore, api: APIClient, query: dict[str, str], errors: dict[str, Any]
) -> None:
    response = api.get("/stats/by-date", query)

    assert response.status_code == 400
    assert response.json() == errors
