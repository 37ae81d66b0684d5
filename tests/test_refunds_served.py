"""Refund and cancellation messages through the consumer (SQS, validation, the ledger, the
store's script) to what the stats API and /metrics serve: a refund that overtook its order, a
cancellation, a redelivered refund and an over-refund that is rejected."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import fakeredis
import pytest
from moto import mock_aws
from rest_framework.test import APIClient

from orders.consumer import Consumer
from orders.sqs import OrderQueue, make_client
from orders.tests.conftest import event_body
from stats.store import AggregateStore
from tests.ingestion_helpers import order_body, queue_total

# Transactional: the consumer writes the ledger on its own connections.
pytestmark = pytest.mark.django_db(transaction=True)

WRITE_TIME = datetime(2025, 9, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2025, 9, 1, 12, 0, 10, tzinfo=UTC)


@pytest.fixture
def queue(aws_env) -> Iterator[OrderQueue]:
    with mock_aws():
        queue = OrderQueue(make_client(endpoint_url=""), "orders-refunds")
        queue.ensure(max_receive_count=5, visibility_timeout=30)
        yield queue


@pytest.fixture
def ingested(
    queue: OrderQueue, fake_redis: fakeredis.FakeRedis, settings, monkeypatch
) -> AggregateStore:
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    store = AggregateStore(fake_redis, prefix=settings.REDIS_KEY_PREFIX, clock=WRITE_TIME.timestamp)
    consumer = Consumer(queue, store, wait_time=0)
    refund_a = event_body("RF-A", "A", amount="2.50", occurred_at="2025-08-10T09:30:00Z")
    batches = [
        [refund_a],  # before its order: it waits
        [
            order_body("A", "U1", price="5.00", quantity=2, timestamp="2025-08-09T10:00:00Z"),
            order_body("B", "U2", price="4.00", timestamp="2025-08-09T11:00:00Z"),
            event_body("CX-B", "B", kind="cancelled", occurred_at="2025-08-11T08:00:00Z"),
        ],
        [
            refund_a,  # redelivered: counted once
            event_body("RF-A2", "A", amount="9.00", occurred_at="2025-08-11T09:00:00Z"),
        ],
    ]
    for bodies in batches:
        queue.send_bodies(bodies)
        consumer.process_batch()
    assert queue_total(queue) == 0
    return store


def test_the_api_serves_net_figures_of_the_events_the_consumer_applied(
    ingested: AggregateStore, api: APIClient
) -> None:
    paths = [
        "/stats/global",
        "/users/U1/stats",
        "/users/U2/stats",
        "/stats/top-spenders",
        "/stats/by-date?start_date=2025-08-09&end_date=2025-08-11",
    ]
    responses = [api.get(path) for path in paths]

    assert [r.status_code for r in responses] == [200] * len(paths)
    assert [r.json() for r in responses] == [
        {
            "total_orders": 2,
            "total_revenue": 7.5,
            "gross_revenue": 14.0,
            "refunded": 6.5,
            "cancelled_orders": 1,
            "unique_users": 2,
            "average_order_value": 7.0,
            "currency": "USD",
        },
        {
            "user_id": "U1",
            "order_count": 1,
            "total_spend": 7.5,
            "gross_spend": 10.0,
            "refunded": 2.5,
            "cancelled_orders": 0,
            "average_order_value": 10.0,
            "first_order_at": "2025-08-09T10:00:00Z",
            "last_order_at": "2025-08-09T10:00:00Z",
            "currency": "USD",
        },
        {
            "user_id": "U2",
            "order_count": 1,
            "total_spend": 0,
            "gross_spend": 4.0,
            "refunded": 4.0,
            "cancelled_orders": 1,
            "average_order_value": 4.0,
            "first_order_at": "2025-08-09T11:00:00Z",
            "last_order_at": "2025-08-09T11:00:00Z",
            "currency": "USD",
        },
        [
            {"rank": 1, "user_id": "U1", "total_spend": 7.5},
            {"rank": 2, "user_id": "U2", "total_spend": 0},
        ],
        {
            "start_date": "2025-08-09",
            "end_date": "2025-08-11",
            "interval": "day",
            "currency": "USD",
            "total_orders": 2,
            "total_revenue": 7.5,
            "gross_revenue": 14.0,
            "refunded": 6.5,
            "days": [
                {
                    "date": "2025-08-09",
                    "total_orders": 2,
                    "total_revenue": 14.0,
                    "gross_revenue": 14.0,
                    "refunded": 0,
                },
                {
                    "date": "2025-08-10",
                    "total_orders": 0,
                    "total_revenue": -2.5,
                    "gross_revenue": 0,
                    "refunded": 2.5,
                },
                {
                    "date": "2025-08-11",
                    "total_orders": 0,
                    "total_revenue": -4.0,
                    "gross_revenue": 0,
                    "refunded": 4.0,
                },
            ],
        },
    ]


def test_metrics_count_the_event_messages_once_each(
    ingested: AggregateStore, api: APIClient
) -> None:
    response = api.get("/metrics")

    assert response.status_code == 200
    body = response.json()
    assert body.pop("redis") == [
        {"node": "localhost:6379", "reachable": True, "version": None, "eviction_policy": None}
    ]
    assert body == {
        "total_orders": 2,
        "total_revenue": 7.5,
        "gross_revenue": 14.0,
        "refunded": 6.5,
        "cancelled_orders": 1,
        "unique_users": 2,
        "average_order_value": 7.0,
        "timestamp": "2025-09-01T12:00:10Z",
        "ingestion": {
            "received": 6,
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
            "consumer_lag_seconds": 10.0,
        },
        "currency": "USD",
    }
