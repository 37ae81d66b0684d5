"""The stats API's money: exact digits on the browsable API's page too, averages rounded
half up in minor units, and exactly the shop currency's decimals."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from stats.api.serializers import average_cents
from stats.dashboard import money
from stats.store import AggregateStore
from tests.event_helpers import apply_events, refund
from tests.ingestion_helpers import make_order


@pytest.mark.django_db
def test_browsable_api_renders_the_page_with_exact_money(
    fake_store: AggregateStore, api: APIClient
) -> None:
    fake_store.apply_orders([make_order("O1", "U1", 100000000001099), make_order("O2", "U1", 10)])

    response = api.get("/users/U1/stats", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    page = response.content.decode()
    assert "<title>Stats \u2013 Django REST framework</title>" in page
    assert (
        "{\n    &quot;user_id&quot;: &quot;U1&quot;,\n    &quot;order_count&quot;: 2,\n"
        "    &quot;total_spend&quot;: 1000000000011.09,\n"
        "    &quot;gross_spend&quot;: 1000000000011.09,\n"
        "    &quot;refunded&quot;: 0.00,\n"
        "    &quot;cancelled_orders&quot;: 0,\n"
        "    &quot;average_order_value&quot;: 500000000005.55,\n"
    ) in page


@pytest.mark.parametrize(
    ("total", "count", "average"),
    [(0, 0, 0), (3, 2, 2), (1, 2, 1), (1, 3, 0), (2, 3, 1), (5, 2, 3), (10, 4, 3), (9, 4, 2)],
)
def test_average_is_rounded_half_up_in_cents(total: int, count: int, average: int) -> None:
    assert average_cents(total, count) == average


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "spend", "zero", "average", "dashboard", "prometheus"),
    [
        ("JPY", "1251", "0", "626", "123,456,789", 1251.0),
        ("KWD", "1.251", "0.000", "0.626", "123,456.789", 1.251),
        ("USD", "12.51", "0.00", "6.26", "1,234,567.89", 12.51),
    ],
)
def test_money_has_exactly_the_shops_currencys_decimals(
    fake_store: AggregateStore,
    api: APIClient,
    settings: Any,
    code: str,
    spend: str,
    zero: str,
    average: str,
    dashboard: str,
    prometheus: float,
) -> None:
    settings.STATS_CURRENCY = code
    # A consumer of that currency: the aggregates record it, as the web process expects.
    store = AggregateStore(fake_store.client, fake_store.prefix, currency=code)
    store.apply_orders([make_order("O1", "U1", 1250), make_order("O2", "U1", 1)])

    body = api.get("/users/U1/stats").content.decode()
    metrics = api.get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4").content.decode()

    assert (
        f'"total_spend":{spend},"gross_spend":{spend},"refunded":{zero},"cancelled_orders":0,'
        f'"average_order_value":{average},'
    ) in body
    assert money(123456789) == dashboard
    revenue = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "orderpipe_revenue_total"
    ]
    assert revenue == [prometheus]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "net", "gross", "refunded"),
    [
        ("JPY", "1249", "1250", "1"),
        ("KWD", "1.249", "1.250", "0.001"),
        ("USD", "12.49", "12.50", "0.01"),
    ],
)
def test_refunds_and_net_have_exactly_the_shops_currencys_decimals(
    fake_store: AggregateStore,
    api: APIClient,
    settings: Any,
    code: str,
    net: str,
    gross: str,
    refunded: str,
) -> None:
    settings.STATS_CURRENCY = code
    store = AggregateStore(fake_store.client, fake_store.prefix, currency=code)  # as above
    placed = make_order("O1", "U1", 1250)
    store.apply_orders([placed])
    apply_events(store, [refund("E1", placed, 1, placed.occurred_at)])

    body = api.get("/stats/global").content.decode()

    assert body.startswith(
        f'{{"total_orders":1,"total_revenue":{net},"gross_revenue":{gross},"refunded":{refunded},'
    )
