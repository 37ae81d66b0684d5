"""Refunds and cancellations through consume_orders' own loop, against a real Redis server and
a moto SQS server: every crash point of the ledger side (the crash table in docs/design.md).

What the ledger hands Redis for each batch (``LedgerOutcome.events``, the events Redis must
see) is captured here: whether Redis then counts each once is the apply script's, checked by
its own tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from orders import ledger
from orders.consumer import Consumer
from orders.models import AcceptedOrder, OrderEvent, RejectedOrder, WaitingEvent
from orders.tests.conftest import event_body
from stats.store import AggregateStore
from tests.ingestion_helpers import order_body, queue_total

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REFUND = event_body("RF-1", "ORD-1", amount="5.00")


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ledger.LedgerOutcome]]:
    """Every batch's ledger outcome, in order."""
    seen: list[ledger.LedgerOutcome] = []
    record = ledger.record_batch

    def recording(*args: Any, **kwargs: Any) -> ledger.LedgerOutcome:
        outcome = record(*args, **kwargs)
        seen.append(outcome)
        return outcome

    monkeypatch.setattr(ledger, "record_batch", recording)
    yield seen


class SimulatedCrashError(Exception):
    """Stands for the process dying between the commit and the SQS delete."""


def drain(queue: Any, store: AggregateStore) -> None:
    Consumer(queue, store, wait_time=1, until_empty=True).run_worker()


def refund_of_a_recorded_order(make_queue: Any, store: AggregateStore) -> tuple[Any, Consumer]:
    """ORD-1 recorded, then REFUND queued; the consumer that is to receive it (visibility 1 s,
    so SQS redelivers it 1 s after a crash)."""
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([order_body("ORD-1")])
    drain(queue, store)
    queue.send_bodies([REFUND])
    return queue, Consumer(queue, store, wait_time=1, visibility_timeout=1)


def test_an_events_failed_transaction_leaves_nothing_and_the_retry_records_it_once(
    make_queue, store: AggregateStore
) -> None:
    from django.db import OperationalError

    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([order_body("ORD-1"), REFUND, '{"type": "order.refunded"}'])

    def database_down(_records: object) -> None:
        raise OperationalError("database is down")

    failing = Consumer(
        queue, store, wait_time=1, visibility_timeout=1, record_rejections=database_down
    )
    with pytest.raises(OperationalError):
        failing.process_batch()  # the reject's row fails the batch's one transaction
    assert queue_total(queue) == 3  # nothing deleted
    assert (AcceptedOrder.objects.count(), OrderEvent.objects.count()) == (0, 0)
    assert WaitingEvent.objects.count() == 0

    time.sleep(1.2)
    drain(queue, store)

    assert list(OrderEvent.objects.values_list("event_id", "amount_cents")) == [("RF-1", 500)]
    assert RejectedOrder.objects.count() == 1
    assert queue_total(queue) == 0


def test_a_crash_after_the_event_commits_before_redis_hands_it_to_redis_again(
    make_queue, store: AggregateStore, outcomes: list[ledger.LedgerOutcome]
) -> None:
    queue, down = refund_of_a_recorded_order(make_queue, store)

    def redis_down(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    down.committer.store = type("Down", (), {"apply_batch": staticmethod(redis_down)})()
    with pytest.raises(redis.ConnectionError):
        down.process_batch()
    recorded = OrderEvent.objects.get()  # committed in the database
    assert queue_total(queue) == 1  # not deleted

    time.sleep(1.2)  # SQS redelivers
    drain(queue, store)

    first, again = outcomes[-2], outcomes[-1]
    assert [(e.event_id, e.counted) for e in first.events] == [("RF-1", True)]
    # The redelivery finds it in the ledger (same fingerprint), records nothing new and hands
    # it to Redis again, first recorded when it was: the mark's window rule decides there.
    assert again.events == first.events
    assert again.events[0].first_recorded_at == recorded.received_at
    assert [o.order.order_id for o in again.context_orders] == ["ORD-1"]
    assert OrderEvent.objects.count() == 1
    assert RejectedOrder.objects.count() == 0
    assert queue_total(queue) == 0


def test_a_redelivered_event_is_recorded_once(
    make_queue, store: AggregateStore, outcomes: list[ledger.LedgerOutcome]
) -> None:
    queue, crashing = refund_of_a_recorded_order(make_queue, store)

    def crash(_handles: object) -> None:
        raise SimulatedCrashError

    crashing.queue = type(queue)(queue.client, queue.name)
    crashing.queue.delete = crash  # type: ignore[method-assign]
    crashing.process_batch()  # committed; the delete never happened
    time.sleep(1.2)
    drain(queue, store)

    assert [len(o.events) for o in outcomes[-2:]] == [1, 1]
    assert outcomes[-1].events[0].message_id == outcomes[-2].events[0].message_id
    assert OrderEvent.objects.count() == 1
    assert RejectedOrder.objects.count() == 0
    assert queue_total(queue) == 0


def test_an_event_before_its_order_waits_then_is_recorded_with_it(
    make_queue, store: AggregateStore, outcomes: list[ledger.LedgerOutcome]
) -> None:
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([REFUND])
    drain(queue, store)

    assert queue_total(queue) == 0  # kept in the database, its message deleted
    assert queue.depth().dlq_visible == 0
    waiting = WaitingEvent.objects.get()
    assert (waiting.event_id, waiting.order_id) == ("RF-1", "ORD-1")
    assert (OrderEvent.objects.count(), RejectedOrder.objects.count()) == (0, 0)
    assert outcomes[-1].waiting == 1

    queue.send_bodies([order_body("ORD-1")])
    drain(queue, store)

    assert WaitingEvent.objects.count() == 0
    # Recorded under the message it came in, long deleted.
    assert list(OrderEvent.objects.values_list("event_id", "message_id")) == [
        ("RF-1", waiting.message_id)
    ]
    attached = outcomes[-1].events
    assert [(e.event_id, e.counted, e.message_id) for e in attached] == [("RF-1", False, "")]
    assert queue_total(queue) == 0


def test_an_event_whose_order_never_comes_waits_without_a_reject_or_the_dlq(
    make_queue, store: AggregateStore
) -> None:
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([event_body("CX-1", "NEVER", kind="cancelled")])
    drain(queue, store)
    time.sleep(1.2)  # nothing comes back
    drain(queue, store)

    assert WaitingEvent.objects.values_list("event_id", flat=True).get() == "CX-1"
    assert RejectedOrder.objects.count() == 0
    assert (queue_total(queue), queue.depth().dlq_visible) == (0, 0)
