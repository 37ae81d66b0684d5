"""Refunds and cancellations in the read model's derivation: rebuild_stats writes what the
consumers applied, key for key, and reconcile_stats checks and repairs the events' figures.

Orders and events go through the real commit path (``BatchCommitter``: ledger, then the
script) on a real Redis server.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from orders.models import OrderEvent, WaitingEvent
from stats.store import AggregateStore, LayoutError, StoreCommandError
from tests.ingestion_helpers import make_order, prefix_keys
from tests.projection_helpers import (
    NOW,
    as_key_format_2_wrote_it,
    commit,
    event_message,
    message,
    rebuild,
    reconcile,
    whole_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ORDER_DAY, REFUND_DAY, LATER_DAY = date(2025, 8, 9), date(2025, 8, 10), date(2025, 8, 14)


def commit_a_stream_with_events(store: AggregateStore) -> None:
    """Five users' orders (2025-08-09) and their events as consumers meet them: refunds on
    two later days, a cancellation after a partial refund, a cancellation of an order that
    refunds already took whole (0 cents), a refund that came before its order, a
    redelivered one; then a refund too many (rejected)."""
    orders = [message(f"O{i}", user_id=f"U{i % 5 + 1}", price=f"{i + 1}0.25") for i in range(10)]
    late_refund = event_message("EARLY", "O9", "3.00", occurred_at="2025-08-14T08:00:00Z")
    commit(store, [late_refund])  # waits for O9
    commit(store, orders[:9])
    refund = event_message("R1", "O0", "5.00")
    commit(store, [refund, event_message("R2", "O1", "1.25"), orders[9]])
    commit(
        store,
        [
            refund,  # redelivered
            event_message("R3", "O2", "2.00", occurred_at="2025-08-10T08:00:00Z"),
            # What is left of 30.25, on the later day.
            event_message("C1", "O2", kind="cancelled", occurred_at="2025-08-14T23:59:59Z"),
            event_message("R4", "O3", "40.25", occurred_at="2025-08-10T08:00:00Z"),
            event_message("C2", "O3", kind="cancelled"),  # 0 cents left
            event_message("C3", "O6", kind="cancelled", occurred_at="2025-08-10T00:00:00Z"),
        ],
    )
    commit(store, [event_message("R5", "O4", "60.00")])  # above 50.25: rejected
    assert OrderEvent.objects.count() == 8
    assert WaitingEvent.objects.count() == 0


@pytest.fixture(params=["one shard", "8 shards", "cluster"])
def with_events(request, settings) -> AggregateStore:
    """The stream above committed on one shard or 8 shards of one node, or on 8 shards of the
    3-primary cluster."""
    if request.param == "cluster":
        store: AggregateStore = request.getfixturevalue("cluster_store")
    else:
        store = request.getfixturevalue("store")
    if request.param == "8 shards":
        store = AggregateStore(
            request.getfixturevalue("live_redis"),
            prefix=store.prefix,
            dedup_ttl=store.dedup_ttl,
            shards=8,
        )
    settings.REDIS_SHARDS = store.shards
    commit_a_stream_with_events(store)
    return store


def test_the_consumers_count_every_event_once(with_events: AggregateStore) -> None:
    """What the stream should give, worked out by hand: refunds 5.00 + 1.25 + 2.00 + 28.25
    + 40.25 + 0 + 70.25 + 3.00 = 150.00; three cancellations."""
    totals = with_events.global_stats()
    gross = sum((i + 1) * 1000 + 25 for i in range(10))
    assert (totals.total_orders, totals.gross_revenue_cents, totals.unique_users) == (10, gross, 5)
    assert (totals.refunded_cents, totals.cancelled_orders) == (15000, 3)
    assert totals.net_revenue_cents == gross - 15000
    days = {d.day: d for d in with_events.by_date(ORDER_DAY, LATER_DAY)}
    assert [days[d].refunded_cents for d in (ORDER_DAY, REFUND_DAY, LATER_DAY)] == [
        0,
        500 + 125 + 200 + 4025 + 0 + 7025,
        300 + 2825,
    ]
    assert days[ORDER_DAY].gross_revenue_cents == gross
    u3 = with_events.user_stats("U3")  # O2 (30.25, refunded 2.00 then cancelled), O7
    assert u3 is not None
    assert (u3.order_count, u3.refunded_cents, u3.cancelled_orders) == (2, 3025, 1)
    assert u3.net_spend_cents == 8025
    ingest = with_events.ingestion()
    # Events taken by the ledger (EARLY counted when it came), applied once, R1 once again.
    assert (ingest.events_received, ingest.events_applied, ingest.events_duplicates) == (9, 8, 1)


def test_a_rebuild_from_a_ledger_with_events_writes_what_the_consumers_applied(
    with_events: AggregateStore,
) -> None:
    before = whole_state(with_events)
    assert any(":event:" in key for key in before)
    assert reconcile()[0] == 0
    for key in prefix_keys(with_events.client, with_events.prefix):
        with_events.client.delete(key)

    out = rebuild()

    assert "15,000 cents refunded, 3 orders cancelled, 8 event marks" in out
    assert whole_state(with_events) == before
    assert reconcile()[0] == 0
    # The events' marks came back: a redelivery is a duplicate.
    result = commit(with_events, [event_message("R1", "O0", "5.00")])
    assert (result.events_applied, result.events_duplicates) == (0, 1)
    assert whole_state(with_events) == before


def test_a_rebuild_over_live_aggregates_changes_none_of_them(with_events: AggregateStore) -> None:
    before = whole_state(with_events)
    rebuild()
    assert whole_state(with_events) == before


def test_a_rebuild_from_key_format_2_derives_what_the_consumers_applied_in_place(
    with_events: AggregateStore,
) -> None:
    """Formats 2 and 3 name the same keys: the rebuild writes a new generation under them
    and drops the old one, as any rebuild; it moves and retires no layout (which would have
    dropped the keys it just wrote)."""
    store = with_events
    applied, served = whole_state(store), store.by_date(ORDER_DAY, LATER_DAY)
    as_key_format_2_wrote_it(store)
    refusal = r"earlier orderpipe \(key format 2, this version writes 3\).*rebuild_stats"
    with pytest.raises(LayoutError, match=refusal):
        store.claim_layout()  # a consumer at start
    with pytest.raises(StoreCommandError, match=refusal):
        store.apply_orders([make_order("LATE", "U1", 100)])  # a consumer already running
    with pytest.raises(LayoutError, match=refusal):
        store.by_date(ORDER_DAY, LATER_DAY)  # a reader

    out = rebuild()

    assert "moved from" not in out
    generations = {store.client.get(store.keys.generation(s)) for s in range(store.shards)}
    assert generations == {f"1;v3;n{store.shards}".encode()}
    assert store.client.get(store.keys.shared("layout")) == f"v3;n{store.shards}".encode()
    assert whole_state(store) == applied  # the format 2 generation dropped, nothing else
    assert store.by_date(ORDER_DAY, LATER_DAY) == served
    assert reconcile()[0] == 0
    store.claim_layout()
    assert commit(store, [message("O1", "U2", "20.25")]).duplicates == 1
    assert commit(store, [message("NEW", "U1", "1.00")]).applied == 1


def test_reconcile_detects_and_repairs_changed_refund_figures(
    with_events: AggregateStore,
) -> None:
    before = whole_state(with_events)
    store = with_events
    live_redis = store.client
    s1, s3 = store.shard_of("U1"), store.shard_of("U3")
    live_redis.hincrby(store.keys.user("U1", s1, 0), "refunded", 100)
    live_redis.hdel(store.keys.user("U3", s3, 0), "cancelled")
    orders, gross, refunded = map(
        int, live_redis.hget(store.keys.days(s1, 0), "2025-08-10").split(b":")
    )
    live_redis.hset(store.keys.days(s1, 0), "2025-08-10", f"{orders}:{gross}:{refunded - 50}")
    live_redis.hincrby(store.keys.totals(s3, 0), "cancelled", 1)

    exit_code, out = reconcile()

    assert exit_code == 1
    assert "user U1: refunded 600 cents (ledger 500)" in out
    assert "user U3: cancelled 0 (ledger 1)" in out
    assert "day 2025-08-10: 0 orders, 0 cents, 11825 cents refunded (ledger 0, 0, 11875)" in out
    assert ", 4 cancelled (ledger 10, " in out

    exit_code, out = reconcile("--repair")
    assert exit_code == 0, out
    assert whole_state(store) == before


def test_reconcile_finds_an_event_redis_never_applied_and_repair_counts_it_once(
    with_events: AggregateStore,
) -> None:
    """Committed to the ledger, then Redis failed for good: reported as never applied (past
    the settle time); --repair counts it and writes its mark, so its redelivery is a
    duplicate."""
    store = with_events
    refund = event_message("LOST", "O5", "1.00")
    real = store.apply_batch
    store.apply_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        commit(store, [refund], NOW - timedelta(minutes=10))
    store.apply_batch = real  # type: ignore[method-assign]
    before = store.user_stats("U1")
    assert before is not None

    exit_code, out = reconcile()
    assert exit_code == 1
    assert "1 ledger events (refunds, cancellations) recorded but never applied" in out

    exit_code, out = reconcile("--repair")
    assert exit_code == 0, out
    after = store.user_stats("U1")
    assert after is not None
    assert after.refunded_cents == before.refunded_cents + 100
    assert store.global_stats().refunded_cents == 15100
    result = commit(store, [refund])
    assert (result.events_applied, result.events_duplicates) == (0, 1)
    assert store.global_stats().refunded_cents == 15100
    assert reconcile()[0] == 0


def test_a_batch_held_by_a_rebuild_counts_its_events_once_after_it(
    with_events: AggregateStore,
) -> None:
    """An order and its refund committed to the ledger while a rebuild holds the lock (the
    batch stays in hand): the rebuild's snapshot counts both and writes their marks, so the
    batch, retried after the switch, is a duplicate of each."""
    from orders import projection

    store = with_events
    batch = [message("HELD", "U2", "9.00"), event_message("RH", "HELD", "4.00")]
    before = store.global_stats()
    with projection.rebuild_lock([store]), pytest.raises(Exception, match="rebuild"):
        commit(store, batch)

    rebuild()
    result = commit(store, batch)

    assert (result.applied, result.duplicates) == (0, 1)
    assert (result.events_applied, result.events_duplicates) == (0, 1)
    after = store.global_stats()
    assert after.gross_revenue_cents - before.gross_revenue_cents == 900
    assert after.refunded_cents - before.refunded_cents == 400
    assert reconcile()[0] == 0
