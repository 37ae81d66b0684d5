"""A queue deleted under a running consumer (on the moto server) is an SQS error that retrying
cannot cure: the consumer stops, loudly, instead of waiting out an outage."""

from __future__ import annotations

import threading

import pytest

from orders import sqs
from orders.consumer import Consumer
from tests.ingestion_helpers import order_body, wait_until


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_queue_deleted_under_a_running_consumer_stops_it_loudly(
    sqs_queue, fake_store, caplog: pytest.LogCaptureFixture
) -> None:
    sqs_queue.send_bodies([order_body("O1")])
    consumer = Consumer(sqs_queue, fake_store, wait_time=1, max_backoff=0.2)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    assert wait_until(lambda: fake_store.global_stats().total_orders == 1, 20)

    sqs_queue.client.delete_queue(QueueUrl=sqs_queue.url)
    thread.join(30)

    assert not thread.is_alive()
    assert consumer.failure is not None and sqs.is_missing_queue(consumer.failure)
    assert f"the queue {sqs_queue.name} no longer exists; stopping" in caplog.text
