"""/metrics (a stats endpoint) shows the refunds and cancellations waiting for their order, a
database fact of the orders app handed to the view by ``orderpipe/urls.py``; with the database
down it still serves the Redis figures, the waiting count unknown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from orders.models import WaitingEvent
from orders.tests.conftest import event_body, record, sqs_message
from stats.store import AggregateStore

pytestmark = pytest.mark.django_db


def gauges(text: str) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("orderpipe_events_")
    }


@pytest.fixture
def waiting(settings) -> None:
    """Three events whose order never came, received 15, 11 and 2 days ago: two orphans."""
    settings.ORPHAN_EVENT_DAYS = 10
    now = datetime.now(UTC)
    for n, days in enumerate((15, 11, 2)):
        body = event_body(f"EV-{n}", order_id=f"NEVER-{n}", amount="1.00")
        record(sqs_message(f"m-ev-{n}", body), received_at=now - timedelta(days=days))
    assert WaitingEvent.objects.count() == 3


def test_metrics_counts_the_events_waiting_for_their_order_and_the_orphans(
    fake_store: AggregateStore, waiting: None, api: APIClient
) -> None:
    body = api.get("/metrics")
    text = api.get("/metrics", {"format": "prometheus"})

    assert (body.status_code, text.status_code) == (200, 200)
    ingestion = body.json()["ingestion"]
    assert (ingestion["events_waiting"], ingestion["events_orphaned"]) == (3, 2)
    assert gauges(text.content.decode()) == {
        "orderpipe_events_received_total": 0.0,
        "orderpipe_events_applied_total": 0.0,
        "orderpipe_events_duplicate_total": 0.0,
        "orderpipe_events_waiting": 3.0,
        "orderpipe_events_orphaned": 2.0,
    }


def test_metrics_with_the_database_down_serves_redis_figures_and_no_waiting_count(
    fake_store: AggregateStore, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(WaitingEvent.objects, "summary", refuse)

    body = api.get("/metrics")
    text = api.get("/metrics", {"format": "prometheus"})

    assert (body.status_code, text.status_code) == (200, 200)
    ingestion = body.json()["ingestion"]
    assert (ingestion["events_waiting"], ingestion["events_orphaned"]) == (None, None)
    assert gauges(text.content.decode()) == {
        "orderpipe_events_received_total": 0.0,
        "orderpipe_events_applied_total": 0.0,
        "orderpipe_events_duplicate_total": 0.0,
    }
