"""Refunds and cancellations through consume_orders' own loop, against a real Redis server and
a moto SQS server: every crash point of the ledger side (the crash table in docs/design.md).

What the ledger hands Redis for each batch (``LedgerOutcome.events``, the events Redis must
see) is captured here, and what Redis then counts (``redis_figures``): each event once, its
order before it. The script's own rules are checked in ``tests/test_store_events.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta
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
ORDER_DAY, REFUND_DAY = date(2025, 8, 9), date(2025, 8, 10)


def redis_figures(store: AggregateStore) -> dict[str, Any]:
    """What Redis counts of U1 (ORD-1's user, 19.99), globally, on the order's and the refund's
    days, and the event counters."""
    user = store.user_stats("U1")
    totals = store.global_stats()
    days = store.by_date(ORDER_DAY, REFUND_DAY)
    ingest = store.ingestion()
    return {
        "user": None
        if user is None
        else (user.order_count, user.gross_spend_cents, user.refunded_cents, user.net_spend_cents),
        "global": (totals.total_orders, totals.gross_revenue_cents, totals.refunded_cents),
        "days": [(d.total_orders, d.gross_revenue_cents, d.refunded_cents) for d in days],
        "spenders": [(r.user_id, r.value) for r in store.top_spenders(3)],
        "events": (ingest.events_received, ingest.events_applied, ingest.events_duplicates),
    }


# ORD-1 and its refund RF-1 counted once.
REFUNDED_ONCE = {
    "user": (1, 1999, 500, 1499),
    "global": (1, 1999, 500),
    "days": [(1, 1999, 0), (0, 0, 500)],
    "spenders": [("U1", 1499)],
}


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
    # Redis counts it once: the attempt that died never reached it.
    assert redis_figures(store) == {**REFUNDED_ONCE, "events": (1, 1, 0)}


def test_a_refund_of_an_order_redis_never_saw_brings_the_order_along(
    make_queue, store: AggregateStore
) -> None:
    """The order's batch committed and died before Redis; its refund comes before the order's
    redelivery: the refund's batch applies the order first (a context order, counted in no
    counter), so Redis never holds the refund alone; the redelivery is a duplicate."""
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([order_body("ORD-1")])
    down = Consumer(queue, store, wait_time=1, visibility_timeout=4)

    def redis_down(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    down.committer.store = type("Down", (), {"apply_batch": staticmethod(redis_down)})()
    with pytest.raises(redis.ConnectionError):
        down.process_batch()
    assert AcceptedOrder.objects.count() == 1  # committed; Redis never saw it
    queue.send_bodies([REFUND])

    drain(queue, store)  # the refund first; the order when SQS redelivers it

    assert redis_figures(store) == {**REFUNDED_ONCE, "events": (1, 1, 0)}
    ingest = store.ingestion()
    assert (ingest.received, ingest.applied, ingest.duplicates) == (2, 0, 1)
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
    # Received twice, applied once: the redelivery's mark makes it a duplicate.
    assert redis_figures(store) == {**REFUNDED_ONCE, "events": (2, 1, 1)}


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
    # Received, not applied: Redis has no refund without its order.
    assert redis_figures(store) == {
        "user": None,
        "global": (0, 0, 0),
        "days": [(0, 0, 0), (0, 0, 0)],
        "spenders": [],
        "events": (1, 0, 0),
    }

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
    # Applied once with its order, on the day it occurred; its message counted when it came.
    assert redis_figures(store) == {**REFUNDED_ONCE, "events": (1, 1, 0)}
    # A redelivery of the order changes nothing.
    queue.send_bodies([order_body("ORD-1")])
    drain(queue, store)
    assert redis_figures(store) == {**REFUNDED_ONCE, "events": (1, 1, 0)}


def test_a_waiting_event_attached_by_a_batch_that_died_before_redis_is_applied_on_the_retry(
    make_queue, store: AggregateStore, outcomes: list[ledger.LedgerOutcome]
) -> None:
    """The order's batch attaches the waiting refund and commits, then Redis fails: the
    refund's message is long deleted, so only the order's redelivery can bring it to Redis.
    The ledger hands a re-seen order's recorded events along (counted nowhere)."""
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([REFUND])
    drain(queue, store)
    queue.send_bodies([order_body("ORD-1")])
    down = Consumer(queue, store, wait_time=1, visibility_timeout=1)

    def redis_down(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    down.committer.store = type("Down", (), {"apply_batch": staticmethod(redis_down)})()
    with pytest.raises(redis.ConnectionError):
        down.process_batch()
    assert (WaitingEvent.objects.count(), OrderEvent.objects.count()) == (0, 1)  # committed

    time.sleep(1.2)  # SQS redelivers the order
    drain(queue, store)

    again = outcomes[-1].events
    assert [(e.event_id, e.counted, e.message_id) for e in again] == [("RF-1", False, "")]
    assert queue_total(queue) == 0
    assert redis_figures(store) == {**REFUNDED_ONCE, "events": (1, 1, 0)}


@pytest.mark.parametrize("waited_days", [0, 20])
def test_a_waiting_event_refused_by_a_batch_that_died_before_redis_is_counted_on_the_retry(
    make_queue, store: AggregateStore, waited_days: int
) -> None:
    """The same for a waiting refund its order refuses (more than the order's value): its
    reject is stored with the order, and the order's retry counts it in Redis, once, even
    when it waited longer than the marks' window (its row keeps when it was received)."""
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([event_body("RF-9", "ORD-1", amount="50.00")])
    drain(queue, store)
    WaitingEvent.objects.update(
        received_at=WaitingEvent.objects.get().received_at - timedelta(days=waited_days)
    )
    queue.send_bodies([order_body("ORD-1")])
    down = Consumer(queue, store, wait_time=1, visibility_timeout=1)

    def redis_down(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    down.committer.store = type(
        "Down", (), {"apply_batch": staticmethod(redis_down), "window_start": store.window_start}
    )()
    with pytest.raises(redis.ConnectionError):
        down.process_batch()
    assert list(RejectedOrder.objects.values_list("reason_codes", flat=True)) == [
        ",refund_exceeds_order,"
    ]

    time.sleep(1.2)  # SQS redelivers the order
    drain(queue, store)
    ingest = store.ingestion()
    assert (ingest.rejected, ingest.rejected_by_code) == (1, {"refund_exceeds_order": 1})
    assert redis_figures(store)["user"] == (1, 1999, 0, 1999)


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
