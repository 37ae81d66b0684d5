"""The whole dead-letter round trip against the real Redis and the moto server process: an
order dead-lettered, seen by pipeline_status, redriven by redrive_dlq, counted once by the
consumer."""

from __future__ import annotations

import json

import pytest

from orders.consumer import Consumer
from orders.tests.test_ops_commands import run, run_failing
from stats.store import AggregateStore
from tests.ingestion_helpers import order_body


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_dead_lettered_order_is_applied_after_redrive(make_queue, store: AggregateStore) -> None:
    """An order dead-lettered while the consumer could not commit is counted once redriven."""
    queue = make_queue(visibility_timeout=30, max_receive_count=1)
    queue.send_bodies([order_body("DL1", "U9", price="4.20")])
    first = queue.receive(wait_time=1)
    queue.extend_visibility([m["ReceiptHandle"] for m in first], 0)  # as if the consumer died
    assert queue.receive(wait_time=1) == []  # second receive: SQS moved it to the DLQ
    assert queue.depth().dlq_visible == 1

    status_out, error = run_failing("pipeline_status")  # no consumer ran yet
    assert "  dead-letter (DLQ)                  1" in status_out.splitlines()
    assert error == "consumer heartbeat stale: no consumer has ever reported"

    out, _ = run("redrive_dlq")
    assert out == f"moved 1 message(s) from {queue.dlq_name} to {queue.name}\n"
    Consumer(queue, store, wait_time=1, until_empty=True).run_worker()

    assert store.user_stats("U9").total_spend_cents == 420
    doc = json.loads(run("pipeline_status", "--json")[0])
    assert doc["ok"] is True
    assert doc["sqs"] == {"visible": 0, "in_flight": 0, "delayed": 0, "dlq_visible": 0}
    assert doc["totals"] == {
        "orders": 1,
        "revenue_cents": 420,
        "gross_revenue_cents": 420,
        "refunded_cents": 0,
        "cancelled_orders": 0,
        "users": 1,
        "revenue": "4.20",
        "gross_revenue": "4.20",
        "refunded": "0.00",
    }
