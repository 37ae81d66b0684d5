"""/metrics as JSON and as Prometheus / OpenMetrics text, parsed back with prometheus-client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from stats.store import AggregateStore
from tests.event_helpers import apply_events, cancel, refund
from tests.ingestion_helpers import make_order

pytestmark = pytest.mark.django_db

WRITE_TIME = datetime(2025, 9, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2025, 9, 1, 12, 0, 42, 500000, tzinfo=UTC)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def filled(fake_redis: fakeredis.FakeRedis, settings, monkeypatch) -> AggregateStore:
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    store = AggregateStore(fake_redis, prefix=settings.REDIS_KEY_PREFIX, clock=WRITE_TIME.timestamp)
    store.apply_orders([make_order("O1", "U1", 29999), make_order("O2", "U2", 1001)], received=3)
    store.apply_orders([make_order("O1", "U1", 29999)])
    store.record_rejections({"m1": ("invalid_json",), "m2": ("value_mismatch",)})
    store.heartbeat()
    return store


Sample = tuple[str, tuple[tuple[str, str], ...]]  # name, sorted labels


def samples(text: str) -> dict[Sample, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# What fakeredis tells of itself: no INFO, so no version and no eviction policy.
FAKE_NODE = {"node": "localhost:6379", "reachable": True, "version": None, "eviction_policy": None}
FAKE_NODE_SAMPLE: dict[Sample, float] = {
    (
        "orderpipe_redis_info",
        (
            ("eviction_policy", ""),
            ("node", "localhost:6379"),
            ("reachable", "true"),
            ("version", ""),
        ),
    ): 1.0
}
# The events' families: counters from Redis, the waiting gauges from the database.
NO_EVENTS: dict[Sample, float] = {
    ("orderpipe_refunded_total", ()): 0.0,
    ("orderpipe_cancelled_orders_total", ()): 0.0,
    ("orderpipe_events_received_total", ()): 0.0,
    ("orderpipe_events_applied_total", ()): 0.0,
    ("orderpipe_events_duplicate_total", ()): 0.0,
    ("orderpipe_events_waiting", ()): 0.0,
    ("orderpipe_events_orphaned", ()): 0.0,
}
EXPECTED = {
    **FAKE_NODE_SAMPLE,
    **NO_EVENTS,
    ("orderpipe_orders_total", ()): 2.0,
    ("orderpipe_revenue_total", ()): 310.0,
    ("orderpipe_net_revenue", ()): 310.0,
    ("orderpipe_unique_users", ()): 2.0,
    ("orderpipe_average_order_value", ()): 155.0,
    ("orderpipe_messages_received_total", ()): 4.0,
    ("orderpipe_orders_applied_total", ()): 2.0,
    ("orderpipe_orders_duplicate_total", ()): 1.0,
    ("orderpipe_messages_rejected_total", ()): 2.0,
    ("orderpipe_rejection_reasons_total", (("code", "invalid_json"),)): 1.0,
    ("orderpipe_rejection_reasons_total", (("code", "value_mismatch"),)): 1.0,
    ("orderpipe_consumer_heartbeat_timestamp_seconds", ()): WRITE_TIME.timestamp(),
    ("orderpipe_consumer_lag_seconds", ()): 42.5,
    ("orderpipe_last_batch_timestamp_seconds", ()): WRITE_TIME.timestamp(),
}


def test_metrics_json_is_the_default(filled: AggregateStore, api: APIClient) -> None:
    response = api.get("/metrics")

    assert response.status_code == 200
    assert response.json() == {
        "total_orders": 2,
        "total_revenue": 310.0,
        "gross_revenue": 310.0,
        "refunded": 0,
        "cancelled_orders": 0,
        "unique_users": 2,
        "average_order_value": 155.0,
        "timestamp": "2025-09-01T12:00:42.500000Z",
        "ingestion": {
            "received": 4,
            "applied": 2,
            "duplicates": 1,
            "rejected": 2,
            "rejected_by_code": {"invalid_json": 1, "value_mismatch": 1},
            "events_received": 0,
            "events_applied": 0,
            "events_duplicates": 0,
            "events_waiting": 0,
            "events_orphaned": 0,
            "last_batch_at": "2025-09-01T12:00:00Z",
            "consumer_heartbeat_at": "2025-09-01T12:00:00Z",
            "consumer_lag_seconds": 42.5,
        },
        "redis": [FAKE_NODE],
        "currency": "USD",
    }


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ({"format": "prometheus"}, None),
        ({"format": "prometheus"}, "application/json"),
        ({}, "text/plain;version=0.0.4"),
        ({}, "text/plain"),
    ],
)
def test_prometheus_text_parses_back_to_the_store_values(
    filled: AggregateStore, api: APIClient, query: dict[str, str], accept: str | None
) -> None:
    headers: dict[str, Any] = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.get("/metrics", query, **headers)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(response.content.decode()) == EXPECTED


def test_prometheus_scraper_accept_header_gets_openmetrics(
    filled: AggregateStore, api: APIClient
) -> None:
    response = api.get("/metrics", HTTP_ACCEPT=PROMETHEUS_ACCEPT)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = response.content.decode()
    assert text.endswith("# EOF\n")
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in openmetrics_families(text)
        for s in family.samples
    }
    assert parsed == EXPECTED


def test_openmetrics_format_override(filled: AggregateStore, api: APIClient) -> None:
    response = api.get("/metrics", {"format": "openmetrics"})

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().endswith("# EOF\n")


def test_empty_store_exposes_zeros_without_consumer_gauges(
    fake_store: AggregateStore, api: APIClient
) -> None:
    response = api.get("/metrics", {"format": "prometheus"})

    parsed = samples(response.content.decode())
    assert parsed == {
        **FAKE_NODE_SAMPLE,
        **NO_EVENTS,
        ("orderpipe_orders_total", ()): 0.0,
        ("orderpipe_revenue_total", ()): 0.0,
        ("orderpipe_net_revenue", ()): 0.0,
        ("orderpipe_unique_users", ()): 0.0,
        ("orderpipe_average_order_value", ()): 0.0,
        ("orderpipe_messages_received_total", ()): 0.0,
        ("orderpipe_orders_applied_total", ()): 0.0,
        ("orderpipe_orders_duplicate_total", ()): 0.0,
        ("orderpipe_messages_rejected_total", ()): 0.0,
    }
    assert api.get("/metrics").json()["ingestion"] == {
        "received": 0,
        "applied": 0,
        "duplicates": 0,
        "rejected": 0,
        "rejected_by_code": {},
        "events_received": 0,
        "events_applied": 0,
        "events_duplicates": 0,
        "events_waiting": 0,
        "events_orphaned": 0,
        "last_batch_at": None,
        "consumer_heartbeat_at": None,
        "consumer_lag_seconds": None,
    }


def test_metrics_read_is_one_redis_round_trip(
    filled: AggregateStore, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the servers' INFO is kept (the first scrape of the minute reads it)."""
    import redis

    assert api.get("/metrics").status_code == 200
    calls: list[str] = []
    original_execute = redis.client.Pipeline.execute
    original_command = redis.Redis.execute_command

    def pipeline_execute(self, *args, **kwargs):
        calls.append("pipeline")
        return original_execute(self, *args, **kwargs)

    def command(self, *args, **kwargs):
        calls.append(str(args[0]))
        return original_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline_execute)
    monkeypatch.setattr(redis.Redis, "execute_command", command)

    assert api.get("/metrics").status_code == 200
    assert calls == ["pipeline"]


# --- Refunds and cancellations --------------------------------------------------------------
@pytest.fixture
def refunded(fake_redis: fakeredis.FakeRedis, settings, monkeypatch) -> AggregateStore:
    """Two orders; a refund of 10.01 and the other order's cancellation (its 10.00 back),
    then the refund redelivered; a refund rejected."""
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    store = AggregateStore(fake_redis, prefix=settings.REDIS_KEY_PREFIX, clock=WRITE_TIME.timestamp)
    o1, o2 = make_order("O1", "U1", 29999), make_order("O2", "U2", 1000)
    store.apply_orders([o1, o2])
    apply_events(
        store,
        [refund("E1", o1, 1001, WRITE_TIME), cancel("E2", o2, 1000, WRITE_TIME)],
    )
    apply_events(store, [refund("E1", o1, 1001, WRITE_TIME)])
    store.record_rejections({"m9": ("refund_exceeds_order",)})
    return store


def test_metrics_json_has_net_revenue_and_the_event_counters(
    refunded: AggregateStore, api: APIClient
) -> None:
    response = api.get("/metrics")

    assert response.status_code == 200
    assert response.json() == {
        "total_orders": 2,
        "total_revenue": 289.98,
        "gross_revenue": 309.99,
        "refunded": 20.01,
        "cancelled_orders": 1,
        "unique_users": 2,
        "average_order_value": 155.0,  # gross / orders: 154.995 half up
        "timestamp": "2025-09-01T12:00:42.500000Z",
        "ingestion": {
            "received": 5,
            "applied": 2,
            "duplicates": 0,
            "rejected": 1,
            "rejected_by_code": {"refund_exceeds_order": 1},
            "events_received": 3,
            "events_applied": 2,
            "events_duplicates": 1,
            "events_waiting": 0,
            "events_orphaned": 0,
            "last_batch_at": "2025-09-01T12:00:00Z",
            "consumer_heartbeat_at": "2025-09-01T12:00:00Z",
            "consumer_lag_seconds": 42.5,
        },
        "redis": [FAKE_NODE],
        "currency": "USD",
    }


def test_prometheus_keeps_gross_and_refunds_as_counters_and_net_as_a_gauge(
    refunded: AggregateStore, api: APIClient
) -> None:
    response = api.get("/metrics", {"format": "prometheus"})

    assert response.status_code == 200
    assert samples(response.content.decode()) == {
        **FAKE_NODE_SAMPLE,
        ("orderpipe_orders_total", ()): 2.0,
        ("orderpipe_revenue_total", ()): 309.99,
        ("orderpipe_refunded_total", ()): 20.01,
        ("orderpipe_net_revenue", ()): 289.98,
        ("orderpipe_cancelled_orders_total", ()): 1.0,
        ("orderpipe_unique_users", ()): 2.0,
        ("orderpipe_average_order_value", ()): 155.0,
        ("orderpipe_messages_received_total", ()): 5.0,
        ("orderpipe_orders_applied_total", ()): 2.0,
        ("orderpipe_orders_duplicate_total", ()): 0.0,
        ("orderpipe_messages_rejected_total", ()): 1.0,
        ("orderpipe_events_received_total", ()): 3.0,
        ("orderpipe_events_applied_total", ()): 2.0,
        ("orderpipe_events_duplicate_total", ()): 1.0,
        ("orderpipe_events_waiting", ()): 0.0,
        ("orderpipe_events_orphaned", ()): 0.0,
        ("orderpipe_rejection_reasons_total", (("code", "refund_exceeds_order"),)): 1.0,
        ("orderpipe_last_batch_timestamp_seconds", ()): WRITE_TIME.timestamp(),
        ("orderpipe_consumer_heartbeat_timestamp_seconds", ()): WRITE_TIME.timestamp(),
        ("orderpipe_consumer_lag_seconds", ()): 42.5,
    }
