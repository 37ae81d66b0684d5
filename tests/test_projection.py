"""The ledger and its read model: rebuild_stats and reconcile_stats on a real Redis.

Orders go through the real commit path (``BatchCommitter``: ledger rows, then the script),
so the ledger and Redis are written exactly as a consumer writes them; then Redis is damaged
or emptied and derived again.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.core.management.base import CommandError

from orders import ledger, projection
from orders.models import AcceptedOrder, LedgerIsAppendOnlyError
from orders.projection import reconciling
from stats.store import AggregateStore, ApplyStatus, PendingOrder
from stats.store import base as store_base
from tests.ingestion_helpers import prefix_keys
from tests.projection_helpers import (
    NOW,
    aggregates,
    as_key_format_2_wrote_it,
    commit,
    message,
    rebuild,
    reconcile,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# --- the ledger ---------------------------------------------------------------------------------
def test_ledger_rows_are_never_updated_or_deleted(filled: AggregateStore) -> None:
    row = AcceptedOrder.objects.get(order_id="O1")
    row.value_cents = 1
    with pytest.raises(LedgerIsAppendOnlyError):
        row.save()
    with pytest.raises(LedgerIsAppendOnlyError):
        row.delete()
    with pytest.raises(LedgerIsAppendOnlyError):
        AcceptedOrder.objects.filter(user_id="U1").update(value_cents=0)
    with pytest.raises(LedgerIsAppendOnlyError):
        AcceptedOrder.objects.all().delete()
    assert AcceptedOrder.objects.get(order_id="O1").value_cents == 225


def test_a_conflicting_order_is_recognised_by_the_ledger_after_its_mark_expired(
    filled: AggregateStore,
) -> None:
    filled.client.delete(filled.key("seen", "O1"))  # as if its TTL had passed
    before = aggregates(filled)

    result = commit(filled, [message("O1", "U2", "5000.00")])

    assert (result.applied, result.rejected) == (0, 1)
    assert aggregates(filled) == before
    assert AcceptedOrder.objects.get(order_id="O1").user_id == "U2"  # the first version stands
    assert filled.ingestion().rejected_by_code == {"duplicate_order_id": 1}


def test_an_identical_resend_is_one_order_in_the_ledger_and_in_redis(
    filled: AggregateStore,
) -> None:
    result = commit(filled, [message("O1", "U2", "2.25"), message("O1", "U2", "2.25")])
    assert (result.applied, result.duplicates, result.rejected) == (0, 2, 0)
    assert AcceptedOrder.objects.filter(order_id="O1").count() == 1
    assert filled.global_stats().total_orders == 13


# --- the two cases of the crash table that need care ----------------------------------------------
def test_a_ledger_row_redis_never_applied_is_applied_by_a_later_delivery(
    store: AggregateStore,
) -> None:
    """Committed to the ledger, then Redis failed for good (the message went to the DLQ);
    redriven two days later, inside the marks' window: applied, once."""
    store.dedup_ttl = 15 * 24 * 3600
    late = message("LATE", "U3", "7.00")
    real = store.apply_batch
    store.apply_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))
    with pytest.raises(ConnectionError):
        commit(store, [late], NOW - timedelta(days=2))
    store.apply_batch = real
    assert AcceptedOrder.objects.filter(order_id="LATE").exists()
    assert store.global_stats().total_orders == 0

    result = commit(store, [late], NOW)

    assert result.applied == 1
    assert store.user_stats("U3").total_spend_cents == 700
    assert commit(store, [late], NOW).duplicates == 1
    assert reconcile()[0] == 0


def test_a_ledger_row_redis_applied_is_never_applied_again_after_its_mark_expired(
    store: AggregateStore,
) -> None:
    store.dedup_ttl = 15 * 24 * 3600
    commit(store, [message("OLD", "U1", "10.00")], NOW - timedelta(days=16))
    store.client.delete(store.key("seen", "OLD"))  # 15 days later the mark is gone

    result = commit(store, [message("OLD", "U1", "10.00")], NOW)

    assert (result.applied, result.duplicates) == (0, 1)
    assert store.global_stats().total_orders == 1
    exit_code, out = reconcile()
    assert exit_code == 0, out


def test_a_row_never_applied_and_redriven_after_the_window_is_found_and_repaired(
    store: AggregateStore,
) -> None:
    """Outside the marks' window a later delivery cannot tell "never applied" from "applied,
    mark expired", so it applies nothing; reconcile_stats finds the order missing and
    --repair counts it."""
    store.dedup_ttl = 15 * 24 * 3600
    past = NOW - timedelta(days=20)
    commit(store, [message("A", "U1", "1.00")], past)
    orphan = message("B", "U1", "2.00")
    real = store.apply_batch
    store.apply_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))
    with pytest.raises(ConnectionError):
        commit(store, [orphan], past)
    store.apply_batch = real

    assert commit(store, [orphan], NOW).applied == 0
    exit_code, out = reconcile()
    assert exit_code == 1
    assert "user U1: orders 1 (ledger 2), spend 100 cents (ledger 300)" in out

    exit_code, out = reconcile("--repair")
    assert exit_code == 0, out
    assert store.user_stats("U1").order_count == 2
    assert store.global_stats().total_revenue_cents == 300
    assert reconcile()[0] == 0


# --- rebuild ----------------------------------------------------------------------------------
def test_rebuild_after_redis_was_emptied_serves_the_same_aggregates(
    filled: AggregateStore,
) -> None:
    before = aggregates(filled)
    for key in filled.client.scan_iter(match=f"{filled.prefix}:*"):
        filled.client.delete(key)
    assert filled.global_stats().total_orders == 0

    out = rebuild()

    assert "13 orders, 5 users" in out
    assert aggregates(filled) == before
    assert reconcile()[0] == 0
    # The marks came back too: a redelivery of an order in the window is a duplicate.
    assert commit(filled, [message("O3", "U4", "4.25")]).duplicates == 1


def test_rebuild_switches_to_a_new_generation_and_removes_the_old_one(
    filled: AggregateStore, live_redis: redis.Redis
) -> None:
    before = aggregates(filled)
    old_keys = set(live_redis.scan_iter(match=f"{filled.prefix}:user:*"))
    assert old_keys

    rebuild()

    assert live_redis.get(filled.key("gen")) == b"1;v3;n1"
    assert not any(live_redis.exists(k) for k in old_keys)
    assert aggregates(filled) == before
    rebuild()
    assert live_redis.get(filled.key("gen")) == b"2;v3;n1"
    assert aggregates(filled) == before
    assert commit(filled, [message("NEW", "U5", "3.00")]).applied == 1
    assert filled.user_stats("U5").order_count == 3


def test_rebuild_dry_run_writes_nothing(filled: AggregateStore, live_redis: redis.Redis) -> None:
    keys = sorted(live_redis.scan_iter(match=f"{filled.prefix}:*"))
    out = rebuild("--dry-run")
    assert "would write generation 1" in out
    assert sorted(live_redis.scan_iter(match=f"{filled.prefix}:*")) == keys


def test_changing_the_shard_count_is_a_rebuild_with_equal_aggregates(
    filled: AggregateStore, settings, live_redis: redis.Redis
) -> None:
    before = aggregates(filled)
    settings.REDIS_SHARDS = 8

    out = rebuild()

    assert "moved from 1 to 8 shards" in out
    sharded = AggregateStore(live_redis, prefix=filled.prefix, dedup_ttl=filled.dedup_ttl, shards=8)
    assert aggregates(sharded) == before
    users = {k.decode() for k in live_redis.scan_iter(match=f"{{{filled.prefix}:*}}:g1:user:*")}
    assert len(users) == 5
    assert len({key.split("}")[0] for key in users}) > 1  # spread over several shards
    assert reconcile()[0] == 0
    # The old layout is gone but for its lock, which stops a consumer still configured for it.
    assert sorted(live_redis.scan_iter(match=f"{filled.prefix}:user:*")) == []
    with pytest.raises(Exception, match="REDIS_SHARDS=1"):
        commit(filled, [message("LATE", "U1", "1.00")])
    assert commit(sharded, [message("O2", "U3", "3.25")]).duplicates == 1

    # Back to one shard: the order the retired consumer recorded in the ledger (and could not
    # apply) is counted now, as the ledger says.
    settings.REDIS_SHARDS = 1
    assert "moved from 8 to 1 shards" in rebuild()
    assert filled.user_stats("U1").order_count == before["users"]["U1"].order_count + 1
    assert reconcile()[0] == 0


def test_rebuild_on_a_cluster_after_redis_was_emptied_serves_the_same_aggregates(
    cluster_store: AggregateStore, live_redis_cluster, settings
) -> None:
    settings.REDIS_SHARDS = 8
    commit(cluster_store, [message(f"O{i}", f"U{i % 5 + 1}", f"{i + 1}.25") for i in range(12)])
    before = aggregates(cluster_store)
    for key in prefix_keys(live_redis_cluster, cluster_store.prefix):
        live_redis_cluster.delete(key)

    rebuild()

    assert aggregates(cluster_store) == before
    assert cluster_store.shard_of("U3") == 0
    assert commit(cluster_store, [message("NEW", "U3", "3.00")]).applied == 1

    # 8 -> 16 shards on the cluster: the layouts' tags differ ({p:8:s}, {p:16:s}).
    now = aggregates(cluster_store)
    settings.REDIS_SHARDS = 16
    assert "moved from 8 to 16 shards" in rebuild()
    wider = AggregateStore(live_redis_cluster, prefix=cluster_store.prefix, shards=16)
    assert aggregates(wider) == now
    assert reconcile()[0] == 0


def test_a_rebuild_refuses_to_run_beside_another(filled: AggregateStore) -> None:
    with projection.rebuild_lock([filled]), pytest.raises(CommandError, match="another"):
        rebuild()


def test_consumers_wait_while_a_rebuild_holds_the_lock(filled: AggregateStore) -> None:
    with projection.rebuild_lock([filled]):
        with pytest.raises(Exception, match="rebuild"):
            commit(filled, [message("W1", "U1", "1.00")])
        assert AcceptedOrder.objects.filter(order_id="W1").exists()  # in the ledger, held
    assert commit(filled, [message("W1", "U1", "1.00")]).applied == 1


def test_the_api_refuses_aggregates_of_key_format_2_until_a_rebuild(
    filled: AggregateStore, settings, api
) -> None:
    settings.STATS_API_AUTH = "none"
    path = "/stats/by-date?start_date=2025-08-01&end_date=2025-08-31"
    served = api.get(path).json()
    as_key_format_2_wrote_it(filled)

    response = api.get(path)

    assert response.status_code == 503
    assert response.json()["detail"] == (
        "The statistics store cannot be read by this process: the aggregates in Redis were "
        "built by an earlier orderpipe (key format 2, this version writes 3): run `manage.py "
        "rebuild_stats` to derive them again from the ledger"
    )
    rebuild()
    assert api.get(path).json() == served


# --- reconcile --------------------------------------------------------------------------------
def test_reconcile_reports_each_difference_with_ids_and_cents_and_repairs_them(
    filled: AggregateStore, live_redis: redis.Redis
) -> None:
    live_redis.hincrby(filled.aggregate_key("user", "U3"), "spend", 1)
    live_redis.hset(filled.aggregate_key("user", "GHOST"), mapping={"orders": 1, "spend": 5})
    live_redis.hset(filled.aggregate_key("days"), "2025-08-09", "12:8000:0")
    live_redis.zadd(filled.aggregate_key("rank", "orders"), {"U1": -9})

    exit_code, out = reconcile()

    assert exit_code == 1
    assert "user U3: spend 1151 cents (ledger 1150)" in out
    assert "user GHOST: not in the ledger; Redis has 1 orders, 5 cents" in out
    assert "rank:orders U1: 9 (ledger 3)" in out
    assert "day 2025-08-09: 12 orders, 8000 cents (ledger 12, 8100)" in out
    report = filled.reconcile_report()
    assert report is not None and report["differences"] == 4

    exit_code, out = reconcile("--repair")
    assert exit_code == 0, out
    assert "0 difference(s) left" in out
    assert reconcile()[0] == 0
    assert filled.user_stats("GHOST") is None


def test_reconcile_in_a_new_process_after_a_rebuild_needs_no_lock(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rebuild()
    monkeypatch.setattr(store_base, "_GENERATIONS", {})  # what a new process knows
    locked = []
    real_lock = reconciling.rebuild_lock
    monkeypatch.setattr(
        reconciling,
        "rebuild_lock",
        lambda stores, *args: locked.append(stores) or real_lock(stores, *args),
    )

    report = projection.reconcile(filled)

    assert report.clean
    assert locked == []


def test_reconcile_counts_orders_in_flight_but_not_as_differences(
    filled: AggregateStore,
) -> None:
    """A batch committed to the ledger a moment ago, its Redis script not yet run."""
    real = filled.apply_batch
    filled.apply_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("in flight"))
    with pytest.raises(ConnectionError):
        commit(filled, [message("F1", "U1", "1.00")], datetime.now(UTC))
    filled.apply_batch = real

    exit_code, out = reconcile()

    assert exit_code == 0, out
    assert "1 order(s) in flight" in out
    report = filled.reconcile_report()
    assert report is not None and (report["differences"], report["in_flight"]) == (0, 1)


def test_apply_statuses_for_rows_recorded_long_ago(store: AggregateStore) -> None:
    """The script's rule: without a mark, a row first recorded before the window is applied
    long ago (never again); one inside the window is applied now."""
    from orders.ledger import RecordedOrder

    store.dedup_ttl = 24 * 3600
    store.clock = lambda: NOW.timestamp()
    old = RecordedOrder("R1", "U1", 100, NOW, NOW.date(), "f", NOW - timedelta(days=2))
    young = RecordedOrder("R2", "U1", 100, NOW, NOW.date(), "g", NOW - timedelta(hours=2))
    result = store.apply_batch(
        [PendingOrder(old, old.received_at), PendingOrder(young, young.received_at)]
    )
    assert result.statuses == [ApplyStatus.BEFORE_WINDOW, ApplyStatus.APPLIED]
    assert json.loads(json.dumps(store.global_stats().total_orders)) == 1


@pytest.mark.parametrize("recorded_before_snapshot", [2, 3], ids=["repair", "check"])
def test_a_repair_and_a_batch_recorded_meanwhile_count_its_orders_once(
    filled: AggregateStore,
    live_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    recorded_before_snapshot: int,
) -> None:
    """A consumer records a batch in the ledger while reconcile --repair holds the lock (its
    Redis script then waits): before the repair's snapshot, the repair counts those orders
    and marks them; after it, they are left to the batch; never both."""
    live_redis.hincrby(filled.aggregate_key("user", "U3"), "spend", 1)  # something to repair
    late = message("MEANWHILE", "U3", "5.00")
    real_snapshot = ledger.snapshot
    snapshots = []

    @contextlib.contextmanager
    def snapshot_after_a_batch(*args, **kwargs):
        snapshots.append(1)
        if len(snapshots) == recorded_before_snapshot:
            apply = filled.apply_batch
            filled.apply_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("lock"))
            with pytest.raises(ConnectionError):
                commit(filled, [late])
            filled.apply_batch = apply
        with real_snapshot(*args, **kwargs):
            yield

    monkeypatch.setattr(ledger, "snapshot", snapshot_after_a_batch)
    assert reconcile("--repair")[0] == 0
    monkeypatch.undo()

    result = commit(filled, [late])  # the batch comes back after the lock
    assert (result.applied, result.duplicates) == (
        (0, 1) if recorded_before_snapshot == 2 else (1, 0)
    )
    assert filled.user_stats("U3").total_spend_cents == 1150 + 500
    assert reconcile()[0] == 0
