"""Consumer unit tests: moto's in-process SQS mock and fakeredis, no servers, no sleeping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from moto import mock_aws

from orders.consumer import Consumer
from orders.models import RejectedOrder
from orders.sqs import OrderQueue, make_client
from stats.store import AggregateStore, StoreCommandError, StoreUnavailableError
from tests.ingestion_helpers import order_body, queue_total

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(aws_env) -> Iterator[OrderQueue]:
    with mock_aws():
        queue = OrderQueue(make_client(endpoint_url=""), "orders-unit")
        queue.ensure(max_receive_count=5, visibility_timeout=30)
        yield queue


def test_batch_applies_valid_orders_records_rejects_and_deletes_all(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    queue.send_bodies([order_body("A", price="1.25"), "not json", order_body("B", price="2.00")])
    consumer = Consumer(queue, fake_store, wait_time=0)

    result = consumer.process_batch()

    assert (result.received, result.applied, result.duplicates, result.rejected) == (3, 2, 0, 1)
    assert fake_store.global_stats().total_revenue_cents == 325
    assert list(RejectedOrder.objects.values_list("reason_codes", flat=True)) == [",invalid_json,"]
    assert queue_total(queue) == 0
    counters = fake_store.ingestion()
    assert (counters.received, counters.applied, counters.rejected) == (3, 2, 1)
    assert counters.rejected_by_code == {"invalid_json": 1}


def test_empty_receive_beats_the_heartbeat(queue: OrderQueue, fake_store: AggregateStore) -> None:
    consumer = Consumer(queue, fake_store, wait_time=0)
    assert consumer.process_batch().received == 0
    assert fake_store.ingestion().heartbeat_at is not None


def test_redis_failure_deletes_nothing(queue: OrderQueue, fake_store: AggregateStore) -> None:
    queue.send_bodies([order_body("A")])

    def down(*_args, **_kwargs):
        raise StoreUnavailableError("ConnectionError: refused")

    fake_store.apply_orders = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError):
        Consumer(queue, fake_store, wait_time=0).process_batch()
    assert queue.depth().in_flight == 1


def test_max_messages_stops_after_the_budget(queue: OrderQueue, fake_store: AggregateStore) -> None:
    queue.send_bodies([order_body(f"O{i}") for i in range(25)])
    consumer = Consumer(queue, fake_store, wait_time=0, max_messages=12)
    consumer.run(threads=1)
    assert fake_store.global_stats().total_orders == 12


def test_until_empty_stops_when_the_queue_is_drained(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    queue.send_bodies([order_body(f"O{i}") for i in range(15)])
    Consumer(queue, fake_store, wait_time=0, until_empty=True).run(threads=2)
    assert fake_store.global_stats().total_orders == 15
    assert queue_total(queue) == 0


def test_slow_batch_extends_visibility(queue: OrderQueue, fake_store: AggregateStore) -> None:
    queue.send_bodies([order_body("A")])
    consumer = Consumer(queue, fake_store, wait_time=0, visibility_timeout=1)
    extended = threading.Event()
    real_extend = queue.extend_visibility

    def spy(handles, timeout):
        real_extend(handles, timeout)
        extended.set()

    queue.extend_visibility = spy  # type: ignore[method-assign]
    real_apply = fake_store.apply_orders

    def slow_apply(orders, received=None):
        assert extended.wait(5), "visibility was not extended while the batch was in hand"
        return real_apply(orders, received)

    fake_store.apply_orders = slow_apply  # type: ignore[method-assign]
    assert consumer.process_batch().applied == 1


def test_outage_is_logged_once_and_recovery_is_logged(
    queue: OrderQueue, fake_store: AggregateStore, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = Consumer(queue, fake_store, wait_time=0, max_backoff=0.01)
    consumer.stop.wait = lambda _delay: False  # type: ignore[method-assign] - no real sleeping
    probes = iter([StoreUnavailableError("down"), StoreUnavailableError("down"), None])

    def ping():
        outcome = next(probes)
        if outcome:
            raise outcome
        return 0.1

    fake_store.ping = ping  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="orders.consumer"):
        consumer._wait_for_dependencies(StoreUnavailableError("ConnectionError"))
        consumer.outages.failed("Redis", StoreUnavailableError("again"), 0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per outage, not one per probe
    assert any("Redis is back" in r.getMessage() for r in caplog.records)


def test_redis_command_error_stops_the_consumer_instead_of_cycling(
    queue: OrderQueue, fake_store: AggregateStore, caplog: pytest.LogCaptureFixture
) -> None:
    queue.send_bodies([order_body("A")])

    def refused(*_args, **_kwargs):
        raise StoreCommandError("ResponseError: syntax error (SET NX GET needs Redis 7)")

    fake_store.apply_orders = refused  # type: ignore[method-assign]
    consumer = Consumer(queue, fake_store, wait_time=0)
    consumer.run(threads=1)

    assert isinstance(consumer.failure, StoreCommandError)
    assert queue.depth().in_flight == 1  # not deleted; SQS redelivers it later
    assert "Redis refused a command" in caplog.text


def test_unexpected_error_stops_the_consumer_loudly(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    queue.send_bodies([order_body("A")])

    def bug(*_args, **_kwargs):
        raise KeyError("a bug")

    fake_store.apply_orders = bug  # type: ignore[method-assign]
    consumer = Consumer(queue, fake_store, wait_time=0)
    consumer.run(threads=1)
    assert isinstance(consumer.failure, KeyError)


def test_graceful_stop_handles_the_batch_received_ahead(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    queue.send_bodies([order_body(f"O{i}") for i in range(20)])
    consumer = Consumer(queue, fake_store, wait_time=0)
    handle = consumer.handle_batch

    def stop_during_the_first(messages):
        consumer.stop.set()  # SIGTERM arrives while the first batch is in hand
        return handle(messages)

    consumer.handle_batch = stop_during_the_first  # type: ignore[method-assign]
    consumer.run(threads=1)

    assert consumer.failure is None
    assert fake_store.global_stats().total_orders == 20  # both batches committed
    assert queue_total(queue) == 0  # and deleted


def test_existing_queue_without_dlq_gets_one_and_a_warning(
    aws_env, caplog: pytest.LogCaptureFixture
) -> None:
    with mock_aws():
        client = make_client(endpoint_url="")
        client.create_queue(QueueName="made-elsewhere")
        queue = OrderQueue(client, "made-elsewhere")
        queue.ensure()
        assert queue.depth().dlq_visible == 0  # the DLQ now exists
        assert "has no redrive policy" in caplog.text
        attributes = client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])
        assert "RedrivePolicy" not in attributes["Attributes"]  # used as it is


def test_redriven_order_keeps_the_day_it_was_first_sent(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    from datetime import date

    body = order_body("UNDATED", price="3.00").replace(
        '"order_timestamp": "2025-08-09T10:15:00Z", ', ""
    )
    first_sent = "1735732800000"  # 2025-01-01T12:00:00Z
    queue.client.send_message(
        QueueUrl=queue.url,
        MessageBody=body,
        MessageAttributes={
            "orderpipe.SentTimestamp": {"DataType": "Number", "StringValue": first_sent}
        },
    )
    Consumer(queue, fake_store, wait_time=0).process_batch()

    [day] = fake_store.by_date(date(2025, 1, 1), date(2025, 1, 1))
    assert (day.total_orders, day.total_revenue_cents) == (1, 300)


def test_resending_a_received_message_carries_its_first_sent_timestamp(queue: OrderQueue) -> None:
    queue.send_bodies(["x"])
    [received] = queue.receive(wait_time=0)
    queue.send_messages_to(queue.url, [received])
    queue.delete([received["ReceiptHandle"]])
    [again] = queue.receive(wait_time=0)
    carried = again["MessageAttributes"]["orderpipe.SentTimestamp"]["StringValue"]
    assert carried == received["Attributes"]["SentTimestamp"]
