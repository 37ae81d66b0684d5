"""A second look at the fenced, all-or-nothing rebuild: each test here is a way the figures can
still lose or double an order, or a counter, or report a difference that is not there (a real
Valkey; the session's 3-primary cluster where the layout is sharded).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import redis
from django.core.management.base import CommandError
from redis.cluster import RedisCluster

from orders import projection
from stats.store import AggregateStore, StoreCommandError
from tests.projection_helpers import NOW, aggregates, commit, message, rebuild, reconcile
from tests.test_rebuild_safety import KilledError, dies_before_its_switch

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# --- the marks a rebuild writes, and a clock inside the margin -----------------------------------
def test_a_rebuild_on_a_host_whose_clock_runs_ahead_leaves_no_resent_order_to_count_twice(
    store: AggregateStore,
) -> None:
    """The window's margin is there for hosts whose clocks disagree. The rebuild writes marks
    only from *its* window start, while the live generation had marks back to the TTL; a
    consumer whose clock is 10 minutes behind the rebuild's host still takes an order
    recorded just inside its own window, without a mark, for one never applied."""
    store.dedup_ttl = 15 * 24 * 3600
    ttl = timedelta(seconds=store.dedup_ttl)
    order = message("EDGE", "U1", "1.00")
    commit(store, [order], NOW - ttl + timedelta(hours=1, minutes=5))  # applied, marked
    assert store.user_stats("U1").order_count == 1

    store.clock = lambda: (NOW + timedelta(minutes=10)).timestamp()  # the rebuild's host
    projection.rebuild(store)
    assert store.user_stats("U1").order_count == 1

    # The shop sends the same order again (same payload, a new message); the consumer's clock
    # is right.
    result = commit(store, [order], NOW)

    assert (result.applied, result.duplicates) == (0, 1)
    assert store.user_stats("U1").order_count == 1
    assert reconcile()[0] == 0


# --- a layout move on a cluster that dies between retiring two old shards -----------------------
def _retire_call(fenced_calls) -> bool:
    return any(
        command == "SET" and args and str(args[0]).startswith("retired:")
        for call in fenced_calls
        for command, _key, args in call.ops
    )


@pytest.mark.parametrize("retired_before_the_kill", [3, 8], ids=["some-retired", "all-retired"])
def test_a_rerun_of_a_cluster_layout_move_keeps_the_ingestion_counters(
    cluster_store: AggregateStore,
    live_redis_cluster: RedisCluster,
    settings,
    monkeypatch: pytest.MonkeyPatch,
    retired_before_the_kill: int,
) -> None:
    """On a cluster the switch is one call per shard: the new layout's shards (the counters
    carried to its shard 0), then the old layout's retirements, each of which deletes that
    old shard's counters. A rerun carries the old layout's counters again, by setting them:
    those of the shards already retired are gone, so the counters go down (to zero when
    every old shard was retired before the kill)."""
    settings.REDIS_SHARDS = 8
    cluster_store.claim_layout()  # as the consumer does at start
    commit(cluster_store, [message(f"O{i}", f"U{i % 5 + 1}", f"{i + 1}.25") for i in range(12)])
    counted = cluster_store.ingestion()
    before = aggregates(cluster_store)
    assert counted.received == 12

    settings.REDIS_SHARDS = 16
    real = AggregateStore.run_fenced
    retired: list[int] = []

    def killed_while_retiring(self, token, calls):
        real(self, token, calls)
        if _retire_call(calls):
            retired.append(1)
            if len(retired) == retired_before_the_kill:
                raise KilledError

    monkeypatch.setattr(AggregateStore, "run_fenced", killed_while_retiring)
    with pytest.raises(KilledError):
        rebuild()
    monkeypatch.undo()

    rebuild()  # "running it again finishes the job"

    wider = AggregateStore(live_redis_cluster, prefix=cluster_store.prefix, shards=16)
    assert aggregates(wider) == before
    assert wider.ingestion() == counted


# --- leftovers -----------------------------------------------------------------------------------
def test_cleanup_removes_the_half_built_generation_of_a_layout_move_given_up(
    filled: AggregateStore, settings, live_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move to 8 shards dies before its switch; the operator keeps REDIS_SHARDS=1. The
    half-built 8-shard generation is recorded in <prefix>:generations, but a rebuild (or
    --cleanup) cleans only the leftovers of its own layouts: under noeviction that memory is
    never given back, and pipeline_status lists it for ever."""
    settings.REDIS_SHARDS = 8
    dies_before_its_switch(monkeypatch)
    with pytest.raises(KilledError):
        rebuild()
    monkeypatch.undo()
    half_built = [k for k in live_redis.scan_iter(match=f"{{{filled.prefix}:8:*") if b":g" in k]
    assert half_built

    settings.REDIS_SHARDS = 1  # the move is given up
    rebuild("--cleanup")

    assert filled.leftovers() == []
    assert [k for k in live_redis.scan_iter(match=f"{{{filled.prefix}:8:*") if b":g" in k] == []


# --- upgrading -----------------------------------------------------------------------------------
def _as_an_earlier_version_rebuilt_it(store: AggregateStore, client: redis.Redis) -> None:
    """What an earlier orderpipe left after one rebuild_stats: the aggregates under ``:g1``,
    the marks where it always kept them (``T:seen:<id>``), ``T:gen`` a bare number."""
    keys = store.keys
    names = [keys.totals(0, 0), keys.days(0, 0), keys.ranking("spend", 0, 0),
             keys.ranking("orders", 0, 0)]  # fmt: skip
    names += [k.decode() for k in client.scan_iter(match=keys.users_pattern(0, 0))]
    prefix = f"{store.prefix}:"
    for name in names:
        client.rename(name, f"{store.prefix}:g1:{name[len(prefix) :]}")
    client.set(keys.generation(0), "1")


def test_reconcile_after_an_upgrade_from_a_rebuilt_earlier_version_finds_no_difference(
    filled: AggregateStore, live_redis: redis.Redis
) -> None:
    """Readers refuse an earlier version's generation until rebuild_stats runs (its days
    were three fields a day); reconcile_stats looks for the marks inside the generation,
    where the earlier version never put them: every order of the window would be reported as
    never applied (and its users as "not in the ledger"). Either no difference or a refusal
    that says to run rebuild_stats first is right."""
    _as_an_earlier_version_rebuilt_it(filled, live_redis)
    with pytest.raises(StoreCommandError, match="rebuild_stats"):
        aggregates(filled)

    code, out = reconcile("--settle", "0")

    assert "never applied" not in out, out
    assert code == 0 or "rebuild_stats" in out, out


# --- the lease after the switch ------------------------------------------------------------------
def test_a_successful_move_out_of_key_format_1_records_no_lost_lease(
    settings, live_redis: redis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """The switch sets a key format 1 layout's locks to ``retired:<N>`` (for earlier
    versions); the lease goes on refreshing that layout while its keys are dropped, finds
    its token gone, and logs at ERROR that the command "stops without switching; run it
    again" — after a switch that succeeded. (The refresher also stops there, so nothing
    extends the old layout's lock for the rest of the drop.)"""
    settings.REDIS_SHARDS = 8
    legacy = AggregateStore(live_redis, prefix=key_prefix, shards=8, key_format=1)
    legacy.dedup_ttl = 15 * 24 * 3600
    commit(legacy, [message(f"O{i}", f"U{i % 5 + 1}", f"{i + 1}.25") for i in range(12)])
    live_redis.set(legacy.keys.shared("layout"), "8")
    for shard in range(8):
        live_redis.delete(legacy.keys.generation(shard))
    store = AggregateStore(live_redis, prefix=key_prefix, shards=8)
    real_drop = AggregateStore.drop_layout_keys

    def a_large_old_layout(self, *args, **kwargs):
        time.sleep(0.5)  # more than a third of the lease: the refresher runs meanwhile
        return real_drop(self, *args, **kwargs)

    monkeypatch.setattr(AggregateStore, "drop_layout_keys", a_large_old_layout)
    with caplog.at_level(logging.ERROR, logger="orders.projection"):
        projection.rebuild(store, previous=legacy, lock_ttl_ms=300)

    assert store.live_generations() == [1] * 8  # switched
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- --from-shards against what Redis records ----------------------------------------------------
@pytest.mark.parametrize("from_shards", ["4", "8"])
def test_from_shards_that_is_not_the_recorded_layout_still_retires_the_live_one(
    filled: AggregateStore, settings, live_redis: redis.Redis, from_shards: str
) -> None:
    """Redis records one shard (the consumers run with REDIS_SHARDS=1); the operator moves to
    8 shards with a wrong --from-shards. The rebuild neither locks nor retires the live
    layout: its consumers go on applying there after the switch, and what the API serves
    on 8 shards never gets those orders."""
    filled.claim_layout()  # what every consumer does at start
    settings.REDIS_SHARDS = 8

    try:
        rebuild("--from-shards", from_shards)
    except CommandError:
        return  # refused: the live layout is as it was, its consumers go on (also right)

    # Moved: the layout the consumers still run with must be retired now, as after any move.
    with pytest.raises(StoreCommandError, match="REDIS_SHARDS=8"):
        commit(filled, [message("LATE", "U1", "1.00")])


def test_a_lock_released_while_the_refresher_extends_it_is_no_lost_lease(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its switch a rebuild releases the new layout's lock while the refresher thread
    may be extending the locks it copied a moment before: that refresh finds the lock gone,
    records a loss (an ERROR saying the command stops without switching) and the refresher
    stops, leaving the old layout's lock unextended for the rest of the drop."""
    with projection.rebuild_lock([filled], 60_000) as lease:  # its own refresher sleeps 20 s
        real = AggregateStore.refresh_rebuild_lock

        def released_meanwhile(self, token, ttl_ms):
            lease.release(self)  # the main thread, right after the switch
            return real(self, token, ttl_ms)

        monkeypatch.setattr(AggregateStore, "refresh_rebuild_lock", released_meanwhile)
        assert lease.refresh()
        assert lease.lost is None


# --- reconcile with another REDIS_SHARDS than Redis records --------------------------------------
def test_reconcile_with_another_shard_count_than_recorded_refuses_and_writes_nothing(
    filled: AggregateStore, settings, live_redis: redis.Redis
) -> None:
    """Sound (a guard worth keeping): no 8-shard generation key exists, so nothing but the
    recorded layout tells; the first, unlocked pass reads the totals through the API's
    reads, which check it, and the command stops before its repair writes anything."""
    filled.claim_layout()
    settings.REDIS_SHARDS = 8

    code, out = reconcile("--repair")

    assert code == 1
    assert "REDIS_SHARDS" in out, out
    assert list(live_redis.scan_iter(match=f"{{{filled.prefix}:8:*")) == []


# --- a read beside a switch ----------------------------------------------------------------------
class _Interleaved:
    """A pipeline whose commands run one at a time, as Redis may run another client's
    commands between those of a non-transactional pipeline (a large one arrives in several
    reads); ``between`` runs once, after the first command."""

    def __init__(self, client: redis.Redis, between) -> None:
        self.client, self.between, self.queued = client, between, []

    def __getattr__(self, name: str):
        def queue(*args, **kwargs):
            self.queued.append((name, args, kwargs))
            return self

        return queue

    def execute(self, **_kwargs):
        results = []
        for i, (name, args, kwargs) in enumerate(self.queued):
            if i == 1 and self.between is not None:
                self.between, between = None, self.between
                between()
            results.append(getattr(self.client, name)(*args, **kwargs))
        return results


def test_a_read_beside_a_rebuilds_switch_and_drop_never_serves_the_dropped_generation(
    filled: AggregateStore, live_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read checks the generation in its own pipeline, but GETs it before the data: a
    switch and the drop of the old generation that run between the two leave the reader
    with the old number (still "live") and the old keys gone: zeros, served as true."""
    before = filled.global_stats()
    rebuilds = [lambda: projection.rebuild(filled)]  # once: its own pipelines run plainly
    monkeypatch.setattr(
        filled.client,
        "pipeline",
        lambda **_k: _Interleaved(live_redis, rebuilds.pop() if rebuilds else None),
    )

    assert filled.global_stats() == before
