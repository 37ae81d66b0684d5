"""Consumer unit tests: moto's in-process SQS mock and fakeredis, no servers, no sleeping."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections
from moto import mock_aws

from orders.consumer import Consumer, Deleter
from orders.models import RejectedOrder
from orders.outages import Dependency
from orders.sqs import OrderQueue, make_client
from stats.store import AggregateStore, StoreCommandError, StoreUnavailableError
from tests.ingestion_helpers import order_body, queue_total

# Transactional: Consumer.run's pollers write the ledger on their own connections, outside a
# test's transaction; the tables are emptied after each test instead.
pytestmark = pytest.mark.django_db(transaction=True)


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


def test_a_batch_with_events_counts_and_logs_them(
    queue: OrderQueue, fake_store: AggregateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A refund of an order in the batch is applied with it; one of an order not recorded
    yet waits; both show in the result and in the throughput line."""
    from orders.tests.conftest import event_body

    queue.send_bodies(
        [
            order_body("A", price="10.00"),
            event_body("R1", "A", amount="2.50"),
            event_body("R2", "LATER", amount="1.00"),
        ]
    )
    consumer = Consumer(queue, fake_store, wait_time=0, until_empty=True, log_interval=3600)

    with caplog.at_level(logging.INFO, logger="orders.consumer"):
        consumer.run()

    assert fake_store.global_stats().refunded_cents == 250
    assert (consumer.tally.events_applied, consumer.tally.events_waiting) == (1, 1)
    assert (
        "received=3 applied=1 duplicates=0 rejected=0 "
        "events_applied=1 events_duplicates=0 events_waiting=1" in caplog.text
    )
    counters = fake_store.ingestion()
    assert (counters.events_received, counters.events_applied) == (2, 1)


def test_empty_receive_beats_the_heartbeat(queue: OrderQueue, fake_store: AggregateStore) -> None:
    consumer = Consumer(queue, fake_store, wait_time=0)
    assert consumer.process_batch().received == 0
    assert fake_store.ingestion().heartbeat_at is not None


def test_redis_failure_deletes_nothing(queue: OrderQueue, fake_store: AggregateStore) -> None:
    queue.send_bodies([order_body("A")])

    def down(*_args, **_kwargs):
        raise StoreUnavailableError("ConnectionError: refused")

    fake_store.apply_batch = down  # type: ignore[method-assign]
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
        failed = real_extend(handles, timeout)
        extended.set()
        return failed

    queue.extend_visibility = spy  # type: ignore[method-assign]
    real_apply = fake_store.apply_batch

    def slow_apply(*args, **kwargs):
        assert extended.wait(5), "visibility was not extended while the batch was in hand"
        return real_apply(*args, **kwargs)

    fake_store.apply_batch = slow_apply  # type: ignore[method-assign]
    assert consumer.process_batch().applied == 1


def test_outage_ends_only_when_a_batch_commits_and_its_backoff_keeps_growing(
    queue: OrderQueue, fake_store: AggregateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers every probe but refuses the batch three times (a read-only replica): the
    same batch is retried, one ERROR, waits that keep doubling, and "back" only once it has
    committed."""
    queue.send_bodies([order_body("A")])
    consumer = Consumer(queue, fake_store, wait_time=0, max_backoff=30)
    waits: list[float] = []
    consumer.interrupted.wait = lambda delay: waits.append(delay) or False  # type: ignore[method-assign]
    real_apply = fake_store.apply_batch
    refusals = iter([StoreUnavailableError("ReadOnlyError: READONLY")] * 3)

    def read_only_for_a_while(*args, **kwargs):
        if (refusal := next(refusals, None)) is not None:
            raise refusal
        return real_apply(*args, **kwargs)

    fake_store.apply_batch = read_only_for_a_while  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="orders.consumer"):
        result = consumer.see_through(consumer.receive_batch())
        next_outage = consumer.outages.failed(Dependency.REDIS, StoreUnavailableError("again"), 0)

    assert result is not None and result.applied == 1
    assert waits == [0.5, 1.0, 2.0]  # not 0.5 each time: the probes passed, the work did not
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per outage: the three refusals, then the next outage
    assert sum("Redis is back" in r.getMessage() for r in caplog.records) == 1
    assert next_outage == 0.5  # a new outage backs off from the start
    assert consumer.batches_in_hand == 0
    assert queue_total(queue) == 0


def test_reject_stored_before_redis_failed_is_counted_once_on_redelivery(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    queue.send_bodies(["not json"])
    consumer = Consumer(queue, fake_store, wait_time=0, visibility_timeout=0)
    real_apply = fake_store.apply_batch
    failures = iter([StoreUnavailableError("ConnectionError: gone")])

    def down_once(*args, **kwargs):
        if (failure := next(failures, None)) is not None:
            raise failure
        return real_apply(*args, **kwargs)

    fake_store.apply_batch = down_once  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError):
        consumer.process_batch()  # the row is committed, the count is not
    assert RejectedOrder.objects.count() == 1

    assert consumer.process_batch().rejected == 1  # the redelivery (visibility 0)
    assert RejectedOrder.objects.count() == 1
    assert fake_store.ingestion().rejected == 1
    assert fake_store.ingestion().rejected_by_code == {"invalid_json": 1}
    assert queue_total(queue) == 0


def test_max_messages_is_exact_with_several_pollers_when_receives_come_back_short(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    queue.send_bodies([order_body(f"O{i}") for i in range(60)])
    real_receive = queue.receive
    # moto's in-process queue is not thread-safe: two receives at once can both get one
    # message (then 39 orders for a budget of 40). Real SQS hides a received message; the
    # lock gives this test that, so that it checks the budget and nothing else.
    one_at_a_time = threading.Lock()

    def short(max_messages: int = 10, **kwargs):  # SQS often returns fewer than asked for
        with one_at_a_time:
            return real_receive(max_messages=min(max_messages, 3), **kwargs)

    queue.receive = short  # type: ignore[method-assign]
    consumer = Consumer(queue, fake_store, wait_time=0, max_messages=40)
    consumer.run(threads=4)
    assert fake_store.global_stats().total_orders == 40


def test_first_signal_after_the_consumer_stopped_itself_is_still_graceful(
    queue: OrderQueue, fake_store: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orders.management.commands.consume_orders import Command

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    consumer = Consumer(queue, fake_store, wait_time=0)
    try:
        Command._install_signal_handlers(consumer)
        consumer.stop.set()  # --until-empty or --max-messages reached: finishing the last batch
        on_signal = signal.getsignal(signal.SIGTERM)
        on_signal(signal.SIGTERM, None)
        assert exits == []  # a first signal only asks for a graceful stop
        on_signal(signal.SIGTERM, None)
        assert exits == [1]  # the second one exits at once
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_deleter_survives_an_unexpected_error(
    queue: OrderQueue, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[list[str]] = []

    def flaky(handles: list[str]) -> int:
        calls.append(handles)
        if len(calls) == 1:
            raise KeyError("a bug")
        return 0

    queue.delete = flaky  # type: ignore[method-assign]
    deleter = Deleter(queue)
    deleter.submit(["h1"])
    deleter.submit(["h2"])
    deleter.close(timeout=5)
    assert calls == [["h1"], ["h2"]]  # the thread lived on (a dead one would block close)
    assert "delete failed unexpectedly" in caplog.text


def test_a_database_connection_the_server_dropped_is_replaced(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server that can drop a connection")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:  # as an idle timeout or a server restart would
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    queue.send_bodies(["not json"])

    result = Consumer(queue, fake_store, wait_time=0).process_batch()

    assert result.rejected == 1
    assert RejectedOrder.objects.count() == 1


def test_redis_command_error_stops_the_consumer_instead_of_cycling(
    queue: OrderQueue, fake_store: AggregateStore, caplog: pytest.LogCaptureFixture
) -> None:
    queue.send_bodies([order_body("A")])

    def refused(*_args, **_kwargs):
        raise StoreCommandError("ResponseError: syntax error (SET NX GET needs Redis 7)")

    fake_store.apply_batch = refused  # type: ignore[method-assign]
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

    fake_store.apply_batch = bug  # type: ignore[method-assign]
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


def test_busy_pollers_hold_one_batch_received_ahead_between_them(
    queue: OrderQueue, fake_store: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pollers both at work hold three batches: theirs and one received ahead for
    whichever is free first (not one ahead each, where a message would wait behind a batch
    while the other poller is free); a poller waiting for a batch means no receive ahead."""
    from orders.consumer_threads import Receiver

    queue.send_bodies([order_body(f"O{i}") for i in range(40)])
    consumer = Consumer(queue, fake_store, wait_time=0, batch_size=1, until_empty=True)
    receives = []
    request = Receiver.request

    def counted(self):
        receives.append(self)
        return request(self)

    monkeypatch.setattr(Receiver, "request", counted)
    both_at_work = threading.Barrier(3)
    handle = consumer.handle_batch
    first_two = iter(range(2))

    def held(messages):
        if next(first_two, None) is not None:
            both_at_work.wait(10)  # the two pollers' first batches, handled at once
            both_at_work.wait(10)  # until the test has counted
        return handle(messages)

    consumer.handle_batch = held  # type: ignore[method-assign]
    runner = threading.Thread(target=consumer.run, kwargs={"threads": 2})
    runner.start()
    both_at_work.wait(10)
    at_work = len(receives)
    both_at_work.wait(10)
    runner.join(30)

    assert at_work == 3
    assert consumer.failure is None
    assert fake_store.global_stats().total_orders == 40
    assert queue_total(queue) == 0


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


def test_a_bug_in_a_probe_stops_the_consumer_loudly(
    queue: OrderQueue, fake_store: AggregateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A poller must not die quietly with a batch in hand (the process would idle on)."""
    queue.send_bodies([order_body("A")])

    def down(*_args, **_kwargs):
        raise StoreUnavailableError("ConnectionError: refused")

    def broken_probe(_name: str) -> None:
        raise KeyError("a bug in the probe")

    fake_store.apply_batch = down  # type: ignore[method-assign]
    consumer = Consumer(queue, fake_store, wait_time=0, max_backoff=0.01)
    consumer._probe = broken_probe  # type: ignore[method-assign]
    consumer.run(threads=1)

    assert isinstance(consumer.failure, KeyError)
    assert consumer.batches_in_hand == 0
    assert "unexpected error; stopping" in caplog.text
