"""The views' plain-dict bodies are exactly what the published serializers produce.

The views skip DRF's serializer machinery on the hot path (``stats.api.serializers.*_body``);
the serializers still define the OpenAPI schema. Each case renders both through the API's
renderer and compares the text, so a field added to one and not the other, a different key
order, or money with another number of decimals fails here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from orderpipe.api.renderers import dumps_exact
from stats.api.metrics import MetricsSnapshot, WaitingEvents
from stats.api.serializers import (
    DateRangeStatsSerializer,
    DayStatsSerializer,
    GlobalStatsSerializer,
    MetricsSerializer,
    ProductStatsSerializer,
    TopBuyerSerializer,
    TopProductSerializer,
    TopSpenderSerializer,
    UserStatsSerializer,
    date_range_body,
    global_stats_body,
    metrics_body,
    product_stats_body,
    top_buyers_body,
    top_products_body,
    top_spenders_body,
    user_stats_body,
)
from stats.store import (
    DayStats,
    GlobalStats,
    IngestionStats,
    ProductFigures,
    Ranked,
    RankedProduct,
    ServerInfo,
    UserStats,
)

WHEN = datetime(2025, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)


def same_text(serializer_data: Any, body: Any) -> None:
    assert dumps_exact(body) == dumps_exact(serializer_data)


@pytest.mark.parametrize(
    "user",
    [
        UserStats("U1", 3, 30000, WHEN, WHEN + timedelta(days=1)),
        UserStats("U/ü", 1, 1, datetime(2024, 2, 29, tzinfo=UTC), None),
        UserStats("U2", 7, 100000000001099, None, None),
        UserStats("U3", 2, 30000, WHEN, WHEN, refunded_cents=30000, cancelled_orders=1),
        UserStats("U4", 3, 1001, WHEN, WHEN, refunded_cents=999),
    ],
)
def test_user_stats_body_is_the_serializers_output(user: UserStats) -> None:
    same_text(UserStatsSerializer(user).data, user_stats_body(user))


@pytest.mark.parametrize(
    "stats",
    [
        GlobalStats(0, 0, 0),
        GlobalStats(3, 100000000001099, 2),
        GlobalStats(2, 3, 1),
        GlobalStats(3, 100000000001099, 2, refunded_cents=100000000000001, cancelled_orders=1),
    ],
)
def test_global_stats_body_is_the_serializers_output(stats: GlobalStats) -> None:
    same_text(GlobalStatsSerializer(stats).data, global_stats_body(stats))


RANKED = [Ranked(1, "U9", 100000000001099), Ranked(2, "U1", 10), Ranked(3, "U2", 0)]


@pytest.mark.parametrize("rows", [[], RANKED])
def test_ranking_bodies_are_the_serializers_output(rows: list[Ranked]) -> None:
    # The DRF stubs cannot say that many=True makes a ListSerializer, which takes a list.
    spenders = TopSpenderSerializer(rows, many=True)  # type: ignore[arg-type]
    buyers = TopBuyerSerializer(rows, many=True)  # type: ignore[arg-type]
    same_text(spenders.data, top_spenders_body(rows))
    same_text(buyers.data, top_buyers_body(rows))


PRODUCT_ROWS = [
    RankedProduct(1, "P1", 3, 100000000001099),
    RankedProduct(2, "a/ü", 0, 0),
    RankedProduct(3, "P:2", -2, -1999),
]


@pytest.mark.parametrize("rows", [[], PRODUCT_ROWS])
def test_top_products_body_is_the_serializers_output(rows: list[RankedProduct]) -> None:
    # The DRF stubs cannot say that many=True makes a ListSerializer, which takes a list.
    serializer = TopProductSerializer(rows, many=True)  # type: ignore[arg-type]
    same_text(serializer.data, top_products_body(rows))


@pytest.mark.parametrize(
    "product",
    [ProductFigures("P1", 3, 2999), ProductFigures("a/ü", 0, 0), ProductFigures("x", -1, -5)],
)
def test_product_stats_body_is_the_serializers_output(product: ProductFigures) -> None:
    same_text(ProductStatsSerializer(product).data, product_stats_body(product))


def test_date_range_body_days_are_the_day_serializers_output_with_their_totals() -> None:
    days = [
        DayStats(date(2024, 2, 28), 2, 100000000001099),
        DayStats(date(2024, 2, 29), 0, 0, refunded_cents=250),
        DayStats(date(2024, 3, 1), 1, 10, refunded_cents=5),
    ]

    body = date_range_body(date(2024, 2, 28), date(2024, 3, 1), days)

    serializer = DayStatsSerializer(days, many=True)  # type: ignore[arg-type] # as above
    same_text(serializer.data, body["days"])
    assert dumps_exact({k: v for k, v in body.items() if k != "days"}) == (
        '{"start_date":"2024-02-28","end_date":"2024-03-01","interval":"day","currency":"USD",'
        '"total_orders":3,'
        '"total_revenue":1000000000008.54,"gross_revenue":1000000000011.09,"refunded":2.55}'
    )
    assert [(d["total_revenue"], d["refunded"]) for d in body["days"]] == [
        (Decimal("1000000000010.99"), Decimal("0.00")),
        (Decimal("-2.50"), Decimal("2.50")),
        (Decimal("0.05"), Decimal("0.05")),
    ]
    fields = list(DateRangeStatsSerializer().fields)
    assert list(body) == [name for name in fields if name in body]
    assert set(fields) - set(body) == {"weeks", "months", "previous"}


@pytest.mark.parametrize(
    "ingestion",
    [
        IngestionStats(0, 0, 0, 0, {}, None, None),
        IngestionStats(5, 3, 1, 2, {"invalid_json": 1, "value_mismatch": 2}, WHEN, WHEN),
        IngestionStats(9, 3, 1, 2, {"refund_exceeds_order": 1}, WHEN, WHEN, 4, 2, 1),
    ],
)
@pytest.mark.parametrize("waiting", [None, WaitingEvents(3, 1)])
@pytest.mark.parametrize(
    "nodes",
    [
        [],
        [
            ServerInfo("10.0.0.1:6379", True, "valkey 9.1.2", "9.1.2", "noeviction"),
            ServerInfo("10.0.0.2:6379", False, error="connection refused"),
        ],
    ],
)
def test_metrics_body_is_the_serializers_output(
    ingestion: IngestionStats, nodes: list[ServerInfo], waiting: WaitingEvents | None
) -> None:
    snapshot = MetricsSnapshot(
        GlobalStats(3, 100000000001099, 2, refunded_cents=1001, cancelled_orders=1),
        ingestion,
        WHEN + timedelta(seconds=42.5),
        nodes,
        waiting,
    )

    same_text(MetricsSerializer(snapshot).data, metrics_body(snapshot))
