"""/stats/by-hour: every local hour of a day of the shop's zone (23, 24 or 25), orders and
gross revenue, the day before beside it; the whole body (fakeredis)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from stats.store import AggregateStore
from tests.ingestion_helpers import make_order

pytestmark = pytest.mark.django_db


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def in_zone(fake_store: AggregateStore, settings: Any, zone: str) -> AggregateStore:
    """The shop's zone set, and a consumer's store in it."""
    settings.STATS_TIME_ZONE = ZoneInfo(zone)
    return AggregateStore(fake_store.client, fake_store.prefix, zone=zone)


def hour(start: str, orders: int = 0, revenue: Any = 0) -> dict[str, Any]:
    return {"hour": start, "total_orders": orders, "gross_revenue": revenue}


def test_the_day_daylight_saving_ends_has_25_hours_and_the_repeated_one_twice(
    fake_store: AggregateStore, settings: Any, api: APIClient
) -> None:
    store = in_zone(fake_store, settings, "America/New_York")
    store.apply_orders(
        [
            make_order("H1", "U1", 1000, utc("2025-11-02T04:00:00")),  # 00:00 EDT
            make_order("H2", "U1", 2000, utc("2025-11-02T05:30:00")),  # 01:30 EDT
            make_order("H3", "U2", 3000, utc("2025-11-02T06:30:00")),  # 01:30 EST
            make_order("H4", "U2", 4000, utc("2025-11-03T04:59:59")),  # 23:59:59 EST
            make_order("H5", "U3", 500, utc("2025-11-01T15:00:00")),  # the day before, 11:00
        ]
    )

    response = api.get("/stats/by-hour", {"date": "2025-11-02", "compare": "previous"})

    assert response.status_code == 200
    assert response.json() == {
        "date": "2025-11-02",
        "time_zone": "America/New_York",
        "currency": "USD",
        "total_orders": 4,
        "gross_revenue": 100.0,
        "hours": [
            hour("2025-11-02T00:00:00-04:00", 1, 10.0),
            hour("2025-11-02T01:00:00-04:00", 1, 20.0),
            hour("2025-11-02T01:00:00-05:00", 1, 30.0),
            *(hour(f"2025-11-02T{h:02d}:00:00-05:00") for h in range(2, 23)),
            hour("2025-11-02T23:00:00-05:00", 1, 40.0),
        ],
        "previous": {
            "date": "2025-11-01",
            "total_orders": 1,
            "gross_revenue": 5.0,
            "hours": [
                hour(f"2025-11-01T{h:02d}:00:00-04:00", int(h == 11), 5.0 if h == 11 else 0)
                for h in range(24)
            ],
        },
    }


def test_the_day_daylight_saving_starts_has_23_hours(
    fake_store: AggregateStore, settings: Any, api: APIClient
) -> None:
    store = in_zone(fake_store, settings, "America/New_York")
    store.apply_orders([make_order("S1", "U1", 1999, utc("2025-03-09T07:00:00"))])  # 03:00 EDT

    response = api.get("/stats/by-hour", {"date": "2025-03-09"})

    assert response.status_code == 200
    assert response.json() == {
        "date": "2025-03-09",
        "time_zone": "America/New_York",
        "currency": "USD",
        "total_orders": 1,
        "gross_revenue": 19.99,
        "hours": [
            hour("2025-03-09T00:00:00-05:00"),
            hour("2025-03-09T01:00:00-05:00"),
            hour("2025-03-09T03:00:00-04:00", 1, 19.99),
            *(hour(f"2025-03-09T{h:02d}:00:00-04:00") for h in range(4, 24)),
        ],
    }


@pytest.mark.parametrize(
    ("zone", "instant", "local_hour", "offset"),
    [
        ("Asia/Kolkata", "2025-08-09T18:29:59", 23, "+05:30"),  # 23:59:59 IST
        ("Pacific/Chatham", "2025-08-09T11:14:59", 23, "+12:45"),  # 23:59:59 CHAST
        ("Asia/Kolkata", "2025-08-08T18:30:00", 0, "+05:30"),  # 00:00 IST on the 9th
    ],
)
def test_hours_of_zones_off_the_utc_hour(
    fake_store: AggregateStore,
    settings: Any,
    api: APIClient,
    zone: str,
    instant: str,
    local_hour: int,
    offset: str,
) -> None:
    store = in_zone(fake_store, settings, zone)
    store.apply_orders([make_order("Z1", "U1", 1234, utc(instant))])

    response = api.get("/stats/by-hour", {"date": "2025-08-09"})

    assert response.status_code == 200
    assert response.json() == {
        "date": "2025-08-09",
        "time_zone": zone,
        "currency": "USD",
        "total_orders": 1,
        "gross_revenue": 12.34,
        "hours": [
            hour(
                f"2025-08-09T{h:02d}:00:00{offset}",
                int(h == local_hour),
                12.34 if h == local_hour else 0,
            )
            for h in range(24)
        ],
    }


def test_the_default_day_is_today_in_the_shops_zone(
    fake_store: AggregateStore, settings: Any, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_zone(fake_store, settings, "Asia/Kolkata")
    monkeypatch.setattr("django.utils.timezone.now", lambda: utc("2025-08-09T18:45:00"))

    body = api.get("/stats/by-hour").json()

    assert (body["date"], len(body["hours"])) == ("2025-08-10", 24)  # 00:15 IST on the 10th


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        (
            {"date": "2025-1-1"},
            {"date": ["Must be a date in the form YYYY-MM-DD (got '2025-1-1')."]},
        ),
        ({"date": "9999-12-31"}, {"date": ["Must be a day from 0001-01-02 to 9999-12-30."]}),
        (
            {"date": "0001-01-02", "compare": "previous"},
            {"date": ["Must be a day from 0001-01-03 to 9999-12-30."]},
        ),
        ({"date": "2025-01-01", "compare": "next"}, {"compare": ['"next" is not a valid choice.']}),
    ],
)
def test_bad_by_hour_parameters_are_400s_naming_the_rule(
    fake_store: AggregateStore, api: APIClient, query: dict[str, str], errors: dict[str, Any]
) -> None:
    response = api.get("/stats/by-hour", query)

    assert response.status_code == 400
    assert response.json() == errors
