"""Refunds and cancellations through the store's script (``apply_batch.lua``): each event
counted once by its own mark, in the call of its order's user's shard, on one real node, on
fakeredis and on 8 shards of a real cluster (``any_store``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from orders.ledger import RecordedEvent
from orders.validation import Order
from stats.store import (
    AggregateStore,
    ApplyStatus,
    PendingEvent,
    PendingOrder,
    StoreCommandError,
)
from tests.ingestion_helpers import make_event, make_order, prefix_keys

APPLIED, DUPLICATE = ApplyStatus.APPLIED, ApplyStatus.DUPLICATE
REFUND_DAY = date(2025, 8, 12)  # make_event's day; the orders' is 2025-08-09


def pending(*events: RecordedEvent, first: datetime | None = None) -> list[PendingEvent]:
    return [PendingEvent(e, first, e.counted) for e in events]


def apply_events(
    store: AggregateStore,
    *events: RecordedEvent,
    orders: tuple[Order, ...] = (),
    context: tuple[Order, ...] = (),
    batch: str = "",
) -> tuple[list[ApplyStatus], list[ApplyStatus]]:
    """Apply ``orders`` (the batch's), ``context`` (the events' orders recorded earlier) and
    ``events`` as one batch; returns the orders' statuses and the events'."""
    done = store.apply_batch(
        [*(PendingOrder(o) for o in orders), *(PendingOrder(o, counted=False) for o in context)],
        batch=batch,
        events=pending(*events),
    )
    return done.statuses, done.event_statuses


def figures(store: AggregateStore, user_id: str = "U1") -> tuple:
    """A user's and the global figures, the spenders' ranking and the two days."""
    user = store.user_stats(user_id)
    totals = store.global_stats()
    days = store.by_date(date(2025, 8, 9), REFUND_DAY)
    return (
        None
        if user is None
        else (user.order_count, user.gross_spend_cents, user.refunded_cents,
              user.cancelled_orders),
        (totals.total_orders, totals.gross_revenue_cents, totals.refunded_cents,
         totals.cancelled_orders, totals.unique_users),
        [(r.user_id, r.value) for r in store.top_spenders(5)],
        [(d.total_orders, d.gross_revenue_cents, d.refunded_cents) for d in (days[0], days[-1])],
    )  # fmt: skip


def test_a_refund_is_counted_once_on_its_own_day(any_store: AggregateStore) -> None:
    order = make_order("O1", "U1", 10000)
    any_store.apply_orders([order])
    refund = make_event("E1", order, 2500)

    assert apply_events(any_store, refund) == ([], [APPLIED])

    assert figures(any_store) == (
        (1, 10000, 2500, 0),
        (1, 10000, 2500, 0, 1),
        [("U1", 7500)],
        [(1, 10000, 0), (0, 0, 2500)],
    )
    user = any_store.user_stats("U1")
    assert user is not None and user.net_spend_cents == 7500
    ingest = any_store.ingestion()
    assert (ingest.events_received, ingest.events_applied, ingest.events_duplicates) == (1, 1, 0)
    assert (ingest.received, ingest.applied, ingest.duplicates) == (2, 1, 0)


def test_a_redelivered_event_is_a_duplicate_and_changes_nothing(any_store: AggregateStore) -> None:
    order = make_order("O1", "U1", 10000)
    refund = make_event("E1", order, 2500)
    assert apply_events(any_store, refund, refund, orders=(order,)) == (
        [APPLIED],
        [APPLIED, DUPLICATE],
    )
    before = figures(any_store)

    assert apply_events(any_store, refund) == ([], [DUPLICATE])

    assert figures(any_store) == before
    assert before[0] == (1, 10000, 2500, 0)
    ingest = any_store.ingestion()
    assert (ingest.events_received, ingest.events_applied, ingest.events_duplicates) == (3, 1, 2)


def test_the_same_event_id_with_another_payload_is_a_conflict(any_store: AggregateStore) -> None:
    order = make_order("O1", "U1", 10000)
    apply_events(any_store, make_event("E1", order, 2500), orders=(order,))
    before = figures(any_store)

    assert apply_events(any_store, make_event("E1", order, 9000)) == ([], [ApplyStatus.CONFLICT])

    assert figures(any_store) == before


def test_an_event_first_recorded_before_the_window_is_not_applied_again(
    any_store: AggregateStore,
) -> None:
    """Its mark may have expired: it was applied long ago if ever (reconcile tells)."""
    order = make_order("O1", "U1", 10000)
    any_store.apply_orders([order])
    before = figures(any_store)
    long_ago = datetime.now(UTC) - timedelta(seconds=any_store.dedup_ttl * 2)

    done = any_store.apply_batch([], events=pending(make_event("E1", order, 2500), first=long_ago))

    assert done.event_statuses == [ApplyStatus.BEFORE_WINDOW]
    assert figures(any_store) == before
    assert any_store.ingestion().events_duplicates == 1


def test_an_events_order_missing_from_redis_is_applied_first_and_once(
    any_store: AggregateStore,
) -> None:
    """The order was recorded by a batch whose Redis call never ran (a crash): its event's
    batch brings it along, uncounted, so Redis never holds a refund without its order; the
    order's own redelivery then finds its mark."""
    order = make_order("O1", "U1", 10000)
    refund = make_event("E1", order, 4000)

    assert apply_events(any_store, refund, context=(order,)) == ([APPLIED], [APPLIED])
    assert figures(any_store)[0] == (1, 10000, 4000, 0)
    assert apply_events(any_store, make_event("E2", order, 1000), context=(order,)) == (
        [DUPLICATE],
        [APPLIED],
    )
    assert any_store.apply_orders([order]) == [DUPLICATE]

    assert figures(any_store) == (
        (1, 10000, 5000, 0),
        (1, 10000, 5000, 0, 1),
        [("U1", 5000)],
        [(1, 10000, 0), (0, 0, 5000)],
    )
    ingest = any_store.ingestion()
    # The context order is no message of those batches: no counter counts it.
    assert (ingest.received, ingest.applied, ingest.duplicates) == (3, 0, 1)
    assert (ingest.events_received, ingest.events_applied) == (2, 2)


def test_a_cancelled_order_stays_counted_as_placed(any_store: AggregateStore) -> None:
    order = make_order("O1", "U1", 10000)
    other = make_order("O2", "U1", 300)
    refund = make_event("E1", order, 2000)
    cancel = make_event("E2", order, 8000, kind="cancelled")

    assert apply_events(any_store, refund, cancel, orders=(order, other)) == (
        [APPLIED, APPLIED],
        [APPLIED, APPLIED],
    )

    assert figures(any_store) == (
        (2, 10300, 10000, 1),
        (2, 10300, 10000, 1, 1),
        [("U1", 300)],
        [(2, 10300, 0), (0, 0, 10000)],
    )
    assert [(r.user_id, r.value) for r in any_store.top_buyers(5)] == [("U1", 2)]


def test_spenders_are_ranked_by_net_spend(any_store: AggregateStore) -> None:
    big, small = make_order("O1", "U1", 10000), make_order("O2", "U2", 5000)
    any_store.apply_orders([big, small, make_order("O3", "U3", 4000)])
    assert [r.user_id for r in any_store.top_spenders(3)] == ["U1", "U2", "U3"]

    apply_events(any_store, make_event("E1", big, 6000))
    assert [(r.user_id, r.value) for r in any_store.top_spenders(3)] == [
        ("U2", 5000),
        ("U1", 4000),
        ("U3", 4000),
    ]
    # An order after the refund keeps the user ranked by net.
    any_store.apply_orders([make_order("O4", "U1", 2000)])
    assert [(r.user_id, r.value) for r in any_store.top_spenders(1)] == [("U1", 6000)]
    # U2 fully refunded: net 0, last, and still a buyer of its order.
    apply_events(any_store, make_event("E2", big, 4000), make_event("E3", small, 5000))
    assert [(r.user_id, r.value) for r in any_store.top_spenders(3)] == [
        ("U3", 4000),
        ("U1", 2000),
        ("U2", 0),
    ]
    assert ("U2", 1) in [(r.user_id, r.value) for r in any_store.top_buyers(3)]


def test_a_refund_counts_in_the_hour_it_occurred_and_one_of_0_cents_writes_no_hour_field(
    any_store: AggregateStore,
) -> None:
    """The hours hash gets the refund's ``<H>:refunded`` (its own hour, not its order's); a
    cancellation of nothing left adds no field, as a rebuild (which writes none) has it."""
    order = make_order("O1", "U1", 10000)  # 10:15 UTC on 2025-08-09
    refund = make_event("E1", order, 2500, datetime(2025, 8, 12, 9, 59, 59, tzinfo=UTC))
    nothing = make_event("C1", order, 0, datetime(2025, 8, 13, 9, 0, tzinfo=UTC), "cancelled")

    assert apply_events(any_store, refund, nothing, orders=(order,)) == (
        [APPLIED],
        [APPLIED, APPLIED],
    )

    assert any_store.all_hours() == {
        "2025-08-09T10:00": (1, 10000, 0),
        "2025-08-12T09:00": (0, 0, 2500),
    }
    hours = any_store.by_hour(REFUND_DAY, REFUND_DAY)
    assert [(h.refunded_cents, h.net_revenue_cents) for h in hours if h.refunded_cents] == [
        (2500, -2500)
    ]


def test_a_stream_without_events_writes_no_event_field(any_store: AggregateStore) -> None:
    """Orders alone give the keys and values earlier versions wrote (with their hours and
    products; a day and an hour one field each since key format 3): no refunded, cancelled or
    events_* field,
    rank:spend scored -spend."""
    order = make_order("O1", "U1", 10000)
    any_store.apply_orders([order, make_order("O2", "U1", 250), order])
    any_store.record_rejections({"m1": ("invalid_json",)})
    fields: set[str] = set()
    for key in prefix_keys(any_store.client, any_store.prefix):
        kind = any_store.client.type(key).decode()
        if kind == "hash":
            fields |= {f.decode() for f in any_store.client.hkeys(key)}
        elif kind == "zset" and key.decode().endswith("rank:spend"):
            assert any_store.client.zrange(key, 0, -1, withscores=True) == [(b"U1", -10250.0)]
        assert b":event:" not in key
    assert fields == {
        "orders", "spend", "first", "last", "revenue", "users",
        "2025-08-09",  # the day: orders:gross:refunded
        "2025-08-09T10:00",  # the hour (by-hour): orders:gross
        "P001:units", "P001:revenue",  # its item's product, overall and on its day
        "received", "applied", "duplicates", "rejected", "rejected:invalid_json",
        "last_batch_ms", "heartbeat_ms",
    }  # fmt: skip


def test_a_retried_batch_counts_its_events_once(any_store: AggregateStore) -> None:
    order = make_order("O1", "U1", 10000)
    refund = make_event("E1", order, 2500)
    first = apply_events(any_store, refund, orders=(order,), batch="b1")

    assert (
        apply_events(any_store, refund, orders=(order,), batch="b1")
        == first
        == (
            [APPLIED],
            [APPLIED],
        )
    )
    ingest = any_store.ingestion()
    assert (ingest.events_received, ingest.events_applied, ingest.events_duplicates) == (1, 1, 0)
    assert figures(any_store)[0] == (1, 10000, 2500, 0)


def test_a_retried_batch_with_an_event_handed_on_since_applies_it_and_counts_once(
    any_store: AggregateStore,
) -> None:
    """The first try applied the order on this shard and another shard failed; by the retry
    another consumer recorded a refund of the order, which the ledger hands on: the stored
    reply is not this call's, so the script runs again instead of replaying a reply without
    the refund's status (which stopped the consumer on a length mismatch)."""
    order = make_order("O1", "U1", 10000)
    assert apply_events(any_store, orders=(order,), batch="b1") == ([APPLIED], [])
    handed_on = replace(make_event("E1", order, 2500), counted=False, message_id="")

    assert apply_events(any_store, handed_on, orders=(order,), batch="b1") == (
        [DUPLICATE],
        [APPLIED],
    )
    # And that reply is the one a third try of the same call gets.
    assert apply_events(any_store, handed_on, orders=(order,), batch="b1") == (
        [DUPLICATE],
        [APPLIED],
    )
    ingest = any_store.ingestion()
    assert (ingest.received, ingest.applied, ingest.duplicates) == (1, 1, 0)
    assert (ingest.events_received, ingest.events_applied, ingest.events_duplicates) == (0, 1, 0)
    assert figures(any_store)[0] == (1, 10000, 2500, 0)


@pytest.mark.parametrize("wrong", ["event", "user"])
def test_an_event_key_of_the_wrong_type_fails_the_batch_before_any_write(
    any_store: AggregateStore, wrong: str
) -> None:
    order = make_order("O1", "U1", 10000)
    s = any_store.shard_of("U1")
    planted = (
        any_store.keys.event_mark("E1", s, 0)
        if wrong == "event"
        else any_store.keys.user("U1", s, 0)
    )
    if wrong == "event":
        any_store.client.hset(planted, "not", "a string")
    else:
        any_store.client.set(planted, "not a hash")

    with pytest.raises(StoreCommandError, match="WRONGTYPE"):
        apply_events(any_store, make_event("E1", order, 100), orders=(order,))

    assert {k.decode() for k in prefix_keys(any_store.client, any_store.prefix)} == {planted}


def test_a_reply_an_earlier_version_stored_is_not_replayed_without_the_events(
    any_store: AggregateStore,
) -> None:
    """A batch first tried before the upgrade (its reply stored without event statuses) and
    retried after it: the script runs again, the order is a duplicate, the refund applied."""
    order = make_order("O1", "U1", 10000)
    any_store.apply_orders([order])  # by the earlier version, which stored its reply:
    s = any_store.shard_of("U1")
    any_store.client.set(any_store.keys.batch("b1", s), "[0,1,0]", ex=3600)  # the old form

    assert apply_events(any_store, make_event("E1", order, 2500), orders=(order,), batch="b1") == (
        [DUPLICATE],
        [APPLIED],
    )
    assert figures(any_store)[0] == (1, 10000, 2500, 0)
