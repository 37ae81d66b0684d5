"""/stats/by-hour: every local hour of a day of the shop's zone (23, 24 or 25), orders, net,
gross revenue and the refunds that occurred in it, the day before beside it; the whole body
(fakeredis)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from stats.store import AggregateStore
from tests.event_helpers import apply_events, cancel, refund
from tests.ingestion_helpers import make_order

pytestmark = pytest.mark.django_db


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def in_zone(fake_store: AggregateStore, settings: Any, zone: str) -> AggregateStore:
    """The shop's zone set, and a consumer's store in it."""
    settings.STATS_TIME_ZONE = ZoneInfo(zone)
    return AggregateStore(fake_store.client, fake_store.prefix, zone=zone)


def hour(start: str, orders: int = 0, gross: Any = 0, refunded: Any = 0) -> dict[str, Any]:
    """An hour's entry as the body has it, in by-date's order (net = gross - refunded)."""
    net = float(Decimal(str(gross)) - Decimal(str(refunded)))
    return {
        "hour": start,
        "total_orders": orders,
        "total_revenue": net,
        "gross_revenue": gross,
        "refunded": refunded,
    }


def test_the_day_daylight_saving_ends_has_25_hours_and_the_repeated_one_twice(
    fake_store: AggregateStore, settings: Any, api: APIClient
) -> None:
    """Refunds and a cancellation count in the local hour they occurred (the repeated hour's
    two passes apart), not their order's: an hour of refunds without orders has a negative
    net."""
    store = in_zone(fake_store, settings, "America/New_York")
    orders = [
        make_order("H1", "U1", 1000, utc("2025-11-02T04:00:00")),  # 00:00 EDT
        make_order("H2", "U1", 2000, utc("2025-11-02T05:30:00")),  # 01:30 EDT
        make_order("H3", "U2", 3000, utc("2025-11-02T06:30:00")),  # 01:30 EST
        make_order("H4", "U2", 4000, utc("2025-11-03T04:59:59")),  # 23:59:59 EST
        make_order("H5", "U3", 500, utc("2025-11-01T15:00:00")),  # the day before, 11:00
    ]
    store.apply_orders(orders)
    apply_events(
        store,
        [
            refund("R0", orders[4], 100, utc("2025-11-01T21:00:00")),  # 17:00 EDT the day before
            cancel("C1", orders[4], 400, utc("2025-11-02T05:10:00")),  # 01:10 EDT
            refund("R1", orders[1], 750, utc("2025-11-02T06:45:00")),  # 01:45 EST
            refund("R2", orders[0], 250, utc("2025-11-02T09:00:00")),  # 04:00 EST
        ],
    )

    response = api.get("/stats/by-hour", {"date": "2025-11-02", "compare": "previous"})

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "date": "2025-11-02",
        "time_zone": "America/New_York",
        "currency": "USD",
        "total_orders": 4,
        "total_revenue": 86.0,
        "gross_revenue": 100.0,
        "refunded": 14.0,
        "hours": [
            hour("2025-11-02T00:00:00-04:00", 1, 10.0),
            hour("2025-11-02T01:00:00-04:00", 1, 20.0, 4.0),
            hour("2025-11-02T01:00:00-05:00", 1, 30.0, 7.5),
            *(hour(f"2025-11-02T{h:02d}:00:00-05:00") for h in range(2, 4)),
            hour("2025-11-02T04:00:00-05:00", 0, 0, 2.5),
            *(hour(f"2025-11-02T{h:02d}:00:00-05:00") for h in range(5, 23)),
            hour("2025-11-02T23:00:00-05:00", 1, 40.0),
        ],
        "previous": {
            "date": "2025-11-01",
            "total_orders": 1,
            "total_revenue": 4.0,
            "gross_revenue": 5.0,
            "refunded": 1.0,
            "hours": [
                hour(
                    f"2025-11-01T{h:02d}:00:00-04:00",
                    int(h == 11),
                    5.0 if h == 11 else 0,
                    1.0 if h == 17 else 0,
                )
                for h in range(24)
            ],
        },
    }
    # The keys in by-date's order: orders, net, gross, refunded.
    figures = ["total_orders", "total_revenue", "gross_revenue", "refunded"]
    assert list(body) == ["date", "time_zone", "currency", *figures, "hours", "previous"]
    assert list(body["previous"]) == ["date", *figures, "hours"]
    assert list(body["hours"][0]) == ["hour", *figures]


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
        "total_revenue": 19.99,
        "gross_revenue": 19.99,
        "refunded": 0,
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
        "total_revenue": 12.34,
        "gross_revenue": 12.34,
        "refunded": 0,
        "hours": [
            hour(
                f"2025-08-09T{h:02d}:00:00{offset}",
                int(h == local_hour),
                12.34 if h == local_hour else 0,
            )
            for h in range(24)
        ],
    }


def test_a_refund_counts_in_the_local_hour_it_occurred_in_a_half_hour_zone(
    fake_store: AggregateStore, settings: Any, api: APIClient
) -> None:
    """Kolkata (+05:30): an order at 23:30 IST on the 8th refunded at 00:10 IST on the 9th
    (18:40 UTC on the 8th) counts in the 9th's first hour; a refund at 10:59:59 IST in the
    hour of that day's only order."""
    store = in_zone(fake_store, settings, "Asia/Kolkata")
    late, morning = (
        make_order("K1", "U1", 10000, utc("2025-08-08T18:00:00")),  # 23:30 IST on the 8th
        make_order("K2", "U2", 1234, utc("2025-08-09T05:00:00")),  # 10:30 IST
    )
    store.apply_orders([late, morning])
    apply_events(
        store,
        [
            refund("KR1", late, 3000, utc("2025-08-08T18:40:00")),  # 00:10 IST on the 9th
            refund("KR2", late, 2000, utc("2025-08-09T05:29:59")),  # 10:59:59 IST
        ],
    )

    response = api.get("/stats/by-hour", {"date": "2025-08-09"})

    assert response.status_code == 200
    assert response.json() == {
        "date": "2025-08-09",
        "time_zone": "Asia/Kolkata",
        "currency": "USD",
        "total_orders": 1,
        "total_revenue": -37.66,
        "gross_revenue": 12.34,
        "refunded": 50.0,
        "hours": [
            hour("2025-08-09T00:00:00+05:30", 0, 0, 30.0),
            *(hour(f"2025-08-09T{h:02d}:00:00+05:30") for h in range(1, 10)),
            hour("2025-08-09T10:00:00+05:30", 1, 12.34, 20.0),
            *(hour(f"2025-08-09T{h:02d}:00:00+05:30") for h in range(11, 24)),
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
