"""Rebuild, repair and layout changes are fenced and all-or-nothing: however a rebuild or a
repair dies or stalls, no order goes missing from what the API serves (a real Valkey).

Each test stops a command at one of its crash points (an exception where a kill -9 would
land, or the lock taken away where a stall past the lease would lose it), then lets the
consumers' batches come back and checks the figures: the rows of the crash table in
docs/design.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders import ledger, projection
from orders.commit import BatchCommitter
from stats.store import (
    AggregateStore,
    GenerationWriter,
    StoreCommandError,
    StoreUnavailableError,
)
from stats.store import base as store_base
from tests.ingestion_helpers import make_order
from tests.projection_helpers import (
    DAY,
    NOW,
    aggregates,
    commit,
    message,
    rebuild,
    received,
    reconcile,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


class KilledError(Exception):
    """Where a kill -9 would stop the command."""


def recorded_not_applied(store: AggregateStore, messages: list[dict], at: datetime = NOW) -> None:
    """A batch committed to the ledger whose script could not run (a rebuild holds the lock):
    the consumer keeps it in hand and retries it."""
    real = store.apply_batch
    store.apply_batch = lambda *a, **k: (_ for _ in ()).throw(KilledError("waits for the lock"))
    try:
        with pytest.raises(KilledError):
            commit(store, messages, at)
    finally:
        store.apply_batch = real


def dies_before_its_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next rebuild dies once every write of its generation, marks included, is made and
    before its switch."""
    real_close = GenerationWriter.close

    def close_then_die(self: GenerationWriter) -> None:
        real_close(self)
        raise KilledError

    monkeypatch.setattr(GenerationWriter, "close", close_then_die)


def steal_locks(store: AggregateStore, value: str | None = None) -> None:
    """The lease ends under a command: it expired (``value`` None) or another took it."""
    for shard in range(store.shards):
        key = store.keys.lock(shard)
        if value is None:
            store.client.delete(key)
        else:
            store.client.set(key, value)


# --- 1. marks belong to a generation -------------------------------------------------------------
def test_a_rebuild_that_dies_before_its_switch_leaves_the_waiting_batch_to_be_applied(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = message("WAIT", "U1", "1.00")
    recorded_not_applied(filled, [waiting])
    dies_before_its_switch(monkeypatch)
    with pytest.raises(KilledError):
        projection.rebuild(filled)
    monkeypatch.undo()

    result = commit(filled, [waiting])  # the batch in hand, retried once the lock is gone

    assert (result.applied, result.duplicates) == (1, 0)
    assert filled.global_stats().total_orders == 14
    assert reconcile()[0] == 0


# --- 2. the lock is a fenced lease ---------------------------------------------------------------
def test_a_rebuild_that_lost_its_lease_switches_nothing(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused past its lease (a long GROUP BY, a stopped process): a consumer applies to the
    live generation meanwhile; a switch now would serve a generation without that order."""
    before = filled.user_stats("U1")
    real = ledger.user_totals

    def stalled(*args, **kwargs):
        rows = real(*args, **kwargs)
        yield next(rows)
        steal_locks(filled)
        filled.apply_orders([make_order("DURING", "U1", 100)])
        yield from rows

    monkeypatch.setattr(ledger, "user_totals", stalled)
    with pytest.raises(projection.LeaseLostError, match="lock"):
        projection.rebuild(filled)

    assert filled.user_stats("U1").order_count == before.order_count + 1
    assert filled.live_generations() == [0]


def test_a_rebuild_whose_lock_another_took_writes_nothing_more_and_leaves_it(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ledger.user_totals

    def taken_over(*args, **kwargs):
        steal_locks(filled, "another-rebuild")
        yield from real(*args, **kwargs)

    monkeypatch.setattr(ledger, "user_totals", taken_over)
    with pytest.raises(projection.LeaseLostError):
        projection.rebuild(filled)

    assert filled.client.get(filled.keys.lock(0)) == b"another-rebuild"
    assert generation_keys(filled, 1) == []


def test_a_repair_that_lost_its_lease_writes_nothing(
    filled: AggregateStore, live_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = filled.aggregate_key("user", "U3")
    live_redis.hincrby(user, "spend", 1)
    real = AggregateStore.writer

    def writer_after_the_lease_ended(self, *args, **kwargs):
        steal_locks(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AggregateStore, "writer", writer_after_the_lease_ended)
    code, out = reconcile("--repair")

    assert code == 1
    assert "lock" in out
    assert live_redis.hget(user, "spend") == b"1151"  # still the drift, nothing written


# --- 3. a layout change retires the old layout before letting go of it ---------------------------
def test_a_consumer_on_the_old_shard_count_cannot_apply_once_the_move_switched(
    filled: AggregateStore, settings, live_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    gap = message("GAP", "U1", "1.00")
    outcome: dict[str, object] = {}
    real_drop = AggregateStore.drop_layout_keys

    def a_batch_then_the_drop(self: AggregateStore, *args, **kwargs):
        if self.shards == 1 and not outcome:
            try:
                outcome["result"] = commit(filled, [gap], NOW - timedelta(hours=1))
            except StoreUnavailableError as exc:
                outcome["error"] = exc
        return real_drop(self, *args, **kwargs)

    monkeypatch.setattr(AggregateStore, "drop_layout_keys", a_batch_then_the_drop)
    settings.REDIS_SHARDS = 8
    rebuild()

    assert "error" in outcome, outcome  # not applied to keys being dropped: kept in hand
    with pytest.raises(StoreCommandError, match="REDIS_SHARDS=8"):
        commit(filled, [gap], NOW - timedelta(hours=1))  # retried: the layout is retired
    sharded = AggregateStore(live_redis, prefix=filled.prefix, dedup_ttl=filled.dedup_ttl, shards=8)
    assert commit(sharded, [gap]).applied == 1  # SQS redelivers it to a consumer on 8 shards
    assert reconcile()[0] == 0


def test_reconcile_on_the_old_shard_count_refuses_and_the_layout_stays_retired(
    filled: AggregateStore, settings
) -> None:
    settings.REDIS_SHARDS = 8
    rebuild()
    settings.REDIS_SHARDS = 1

    code, out = reconcile("--repair")

    assert code == 1
    assert "REDIS_SHARDS=8" in out
    with pytest.raises(StoreCommandError, match="REDIS_SHARDS=8"):
        commit(filled, [message("LATE", "U1", "1.00")])


def test_the_api_on_the_old_shard_count_answers_503_saying_what_to_do(
    filled: AggregateStore, settings, api
) -> None:
    settings.STATS_API_AUTH = "none"
    settings.REDIS_SHARDS = 8
    rebuild()
    settings.REDIS_SHARDS = 1

    response = api.get("/stats/global")

    assert response.status_code == 503
    assert "REDIS_SHARDS=8" in response.json()["detail"]


# --- 4. leftover generations ---------------------------------------------------------------------
def status_json() -> dict:
    out = io.StringIO()
    with contextlib.suppress(CommandError):  # no queue, no consumer: problems, but the JSON
        call_command("pipeline_status", "--json", stdout=out)
    return json.loads(out.getvalue())


def generation_keys(store: AggregateStore, generation: int) -> list[bytes]:
    return sorted(store.client.scan_iter(match=f"{store.prefix}:g{generation}:*"))


def test_a_generation_left_by_a_dead_rebuild_is_listed_and_cleaned(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch, make_queue
) -> None:
    make_queue()
    before = aggregates(filled)
    dies_before_its_switch(monkeypatch)
    with pytest.raises(KilledError):
        projection.rebuild(filled)
    monkeypatch.undo()
    assert generation_keys(filled, 1)

    leftovers = status_json()["leftover_generations"]
    assert [(g["generation"], g["state"]) for g in leftovers] == [(1, "building")]

    out = rebuild("--cleanup")

    assert "removed 1 leftover generation" in out
    assert generation_keys(filled, 1) == []
    assert status_json()["leftover_generations"] == []
    assert filled.live_generations() == [0]
    assert aggregates(filled) == before


def test_the_generation_a_rebuild_switched_away_from_is_cleaned_by_the_next_one(
    filled: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        AggregateStore, "drop_generation", lambda *a, **k: (_ for _ in ()).throw(KilledError)
    )
    with pytest.raises(KilledError):
        rebuild()  # switched to generation 1, died before dropping generation 0
    monkeypatch.undo()
    assert filled.client.exists(filled.keys.user("U1", 0, 0))

    rebuild()

    assert not filled.client.exists(filled.keys.user("U1", 0, 0))
    assert generation_keys(filled, 1) == []
    assert reconcile()[0] == 0


# --- 5. one window rule --------------------------------------------------------------------------
def test_clock_skew_inside_the_margin_is_no_difference(filled: AggregateStore) -> None:
    """A consumer whose clock runs 30 minutes ahead recorded an order; its mark expired on
    Redis's clock 30 minutes before the recorded time says it would. A reconcile then sees a
    recorded time inside its window and no mark: only the clock margin tells it apart."""
    ttl = timedelta(seconds=filled.dedup_ttl)
    recorded_at = NOW - ttl + timedelta(minutes=10)
    commit(filled, [message("SKEW", "U1", "1.00")], recorded_at)
    filled.client.delete(filled.keys.mark("SKEW", 0, 0))  # expired
    filled.clock = lambda: (NOW - timedelta(minutes=20)).timestamp()  # true time, 30 min behind

    report = projection.reconcile(filled, settle=timedelta(0))

    assert report.differences == []
    assert report.clean


# --- 6. reconcile streams both sides -------------------------------------------------------------
def test_reconcile_after_marks_were_lost_asks_the_ledger_no_query_per_user(
    store: AggregateStore,
) -> None:
    """Every order inside the window lost its mark (Redis restored from an old snapshot):
    the users' first and last order times come out exact without a query per user."""
    store.dedup_ttl = 15 * 24 * 3600
    old = NOW - timedelta(days=20)
    for i in range(40):
        commit(store, [message(f"A{i}", f"U{i}", "1.00", timestamp="2025-08-01T00:00:00Z")], old)
        commit(
            store,
            [message(f"B{i}", f"U{i}", "2.00", timestamp="2025-08-05T00:00:00Z")],
            NOW - timedelta(hours=1),
        )
    for i in range(40):
        store.client.delete(store.keys.mark(f"B{i}", 0, 0))
        user = store.keys.user(f"U{i}", 0, 0)
        store.client.hset(user, mapping={"orders": 1, "spend": 100, "last": 1754006400000})
    store.client.hset(store.keys.totals(0, 0), mapping={"orders": 40, "revenue": 4000})
    store.client.delete(store.keys.days(0, 0))
    store.client.hset(store.keys.days(0, 0), "2025-08-01", "40:4000:0")
    store.client.delete(store.keys.hours(0, 0))
    store.client.hset(store.keys.hours(0, 0), "2025-08-01T00:00", "40:4000")
    products = {"P001:units": 40, "P001:revenue": 4000}  # the A orders' one line each
    store.client.delete(store.keys.products(0, 0), store.keys.product_day("2025-08-05", 0, 0))
    store.client.hset(store.keys.products(0, 0), mapping=products)
    store.client.hset(store.keys.product_day("2025-08-01", 0, 0), mapping=products)
    store.client.zadd(store.keys.ranking("spend", 0, 0), {f"U{i}": -100 for i in range(40)})
    store.client.zadd(store.keys.ranking("orders", 0, 0), {f"U{i}": -1 for i in range(40)})

    store.clock = NOW.timestamp
    with CaptureQueriesContext(connection) as queries:
        report = projection.reconcile(store, settle=timedelta(0))

    assert report.unapplied == 40
    assert report.differences == [
        "40 ledger orders recorded but never applied to Redis (the oldest recorded at "
        f"{(NOW - timedelta(hours=1)).isoformat()})"
    ]
    # A fixed number (the streams, days, hours of the orders and of the events, totals, the
    # products' streams), never one per user (40 here).
    assert len(queries) < 34, [q["sql"][:80] for q in queries]


# --- 7. a re-sent undated order ------------------------------------------------------------------
def undated(order_id: str, sent: datetime) -> dict:
    msg = message(order_id, "U9", "5.00")
    doc = json.loads(msg["Body"])
    del doc["order_timestamp"]
    msg["Body"] = json.dumps(doc)
    msg["Attributes"]["SentTimestamp"] = str(int(sent.timestamp() * 1000))
    return msg


def test_a_resent_undated_order_is_applied_with_the_ledgers_time_and_day(
    store: AggregateStore,
) -> None:
    first_sent = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)
    recorded_not_applied(store, [undated("U-1", first_sent)])

    # The shop sends it again a week later: a new message, a new SentTimestamp.
    result = commit(store, [undated("U-1", datetime(2025, 8, 8, 12, 0, tzinfo=UTC))])

    assert result.applied == 1
    user = store.user_stats("U9")
    assert user.first_order_at == user.last_order_at == first_sent
    days = store.by_date(first_sent.date(), datetime(2025, 8, 8).date())
    assert [(d.day.day, d.total_orders) for d in days if d.total_orders] == [(1, 1)]
    assert reconcile()[0] == 0


# --- 8. counters counted once --------------------------------------------------------------------
def test_a_partly_applied_batch_retried_counts_each_counter_once(
    live_redis: redis.Redis, key_prefix: str
) -> None:
    store = AggregateStore(live_redis, prefix=key_prefix, dedup_ttl=3600, shards=8)
    batch = received([message(f"P{i}", f"U{i}", "1.00") for i in range(10)])
    broken = store.shard_of("U0")  # one shard refuses its part of the batch
    live_redis.set(store.keys.totals(broken, 0), "not a hash")
    committer = BatchCommitter(store, "orders")
    with pytest.raises(StoreCommandError):
        committer.commit(batch, NOW)
    live_redis.delete(store.keys.totals(broken, 0))

    result = committer.commit(batch, NOW)  # the same batch in hand, retried

    assert (result.applied, result.duplicates) == (10, 0)
    counters = store.ingestion()
    assert (counters.received, counters.applied, counters.duplicates) == (10, 10, 0)


def test_a_rerun_of_a_layout_move_carries_the_ingestion_counters_once(
    filled: AggregateStore, settings, live_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = filled.ingestion()
    settings.REDIS_SHARDS = 8
    real = AggregateStore.switch_generation
    calls: list[int] = []

    def dies_the_first_time(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KilledError
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AggregateStore, "switch_generation", dies_the_first_time)
    with pytest.raises(KilledError):
        rebuild()
    rebuild()

    sharded = AggregateStore(live_redis, prefix=filled.prefix, shards=8)
    moved = sharded.ingestion()
    assert (moved.received, moved.applied, moved.duplicates) == (
        counted.received,
        counted.applied,
        counted.duplicates,
    )


# --- upgrading: what earlier versions left in Redis ----------------------------------------------
def test_a_generation_an_earlier_version_switched_to_is_refused_until_a_rebuild(
    filled: AggregateStore, live_redis: redis.Redis
) -> None:
    """An earlier orderpipe kept the marks outside the generations and wrote a bare number:
    a consumer must not apply against marks that are not that generation's, and a reader must
    not serve its days (three fields a day) as zeros."""
    rebuild()
    live_redis.set(filled.keys.generation(0), "1")  # what an earlier rebuild_stats wrote

    new = message("NEW", "U1", "1.00")
    with pytest.raises(StoreCommandError, match="rebuild_stats"):
        commit(filled, [new])  # recorded in the ledger, kept in hand
    with pytest.raises(StoreCommandError, match=r"key format 1, this version writes 3.*rebuild"):
        filled.user_stats("U1")

    rebuild()
    assert commit(filled, [new]).duplicates == 1  # the rebuild counted it
    assert filled.user_stats("U1").order_count == 4
    assert reconcile()[0] == 0


@pytest.mark.parametrize(
    ("recorded", "refusal"),
    [(None, "before layouts were recorded"), ("1", "key format 1, this version writes 3")],
)
def test_one_shard_never_rebuilt_by_an_earlier_version_is_refused_until_a_rebuild(
    filled: AggregateStore,
    live_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    recorded: str | None,
    refusal: str,
) -> None:
    """Versions before key format 2 wrote no generation key, and recorded no layout or a bare
    shard count: one shard on one node names their keys as this version does, but their days
    were three fields a day, so neither a consumer nor a reader may take them as they are."""
    before = aggregates(filled)
    live_redis.delete(filled.keys.generation(0), filled.keys.shared("layout"))
    if recorded is not None:
        live_redis.set(filled.keys.shared("layout"), recorded)
    monkeypatch.setattr(store_base, "_LAYOUT_CHECKED", set())  # a new process

    with pytest.raises(StoreCommandError, match=f"{re.escape(refusal)}.*rebuild_stats"):
        filled.claim_layout()  # a consumer at start
    with pytest.raises(StoreCommandError, match=f"{re.escape(refusal)}.*rebuild_stats"):
        filled.global_stats()

    rebuild()

    filled.claim_layout()
    assert aggregates(filled) == before
    assert commit(filled, [message("NEW", "U1", "1.00")]).applied == 1


def test_a_sharded_layout_of_an_earlier_version_is_refused_then_moved_by_rebuild_stats(
    settings, live_redis: redis.Redis, key_prefix: str
) -> None:
    """Key format 1 put shard ``s`` under ``{prefix:8:s}`` and recorded the layout as a bare
    shard count: a consumer of this version refuses it, rebuild_stats moves it."""
    settings.REDIS_SHARDS = 8
    legacy = AggregateStore(live_redis, prefix=key_prefix, shards=8, key_format=1)
    legacy.dedup_ttl = 15 * 24 * 3600
    commit(legacy, [message(f"O{i}", f"U{i % 5 + 1}", f"{i + 1}.25") for i in range(12)])
    before = aggregates(legacy)
    live_redis.set(legacy.keys.shared("layout"), "8")  # as an earlier version recorded it
    for shard in range(8):
        live_redis.delete(legacy.keys.generation(shard))  # never rebuilt: generation 0
    store = AggregateStore(live_redis, prefix=key_prefix, shards=8)

    with pytest.raises(StoreCommandError, match=r"earlier orderpipe.*rebuild_stats"):
        store.claim_layout()

    assert "moved from 8 to 8 shards and from key format 1" in rebuild()

    store.claim_layout()
    assert aggregates(store) == before
    assert reconcile()[0] == 0
    left = {k.decode() for k in live_redis.scan_iter(match=f"{{{key_prefix}:8:[0-7]}}:*")}
    assert left == {legacy.keys.generation(s) for s in range(8)} | {
        legacy.keys.lock(s) for s in range(8)
    }
    assert live_redis.get(legacy.keys.lock(0)) == b"retired:8"  # earlier versions stop too
    assert commit(store, [message("NEW", "U1", "1.00")]).applied == 1


def test_a_repair_killed_between_two_writes_leaves_every_aggregate_consistent(
    store: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches recorded, their scripts not run (consumers waiting, or Redis lost them): a
    repair counts them user by user, each user with its marks, totals and days in one
    fenced call; killed between two calls it leaves what the API serves consistent, and
    the batches that come back are duplicates exactly for the orders it counted."""
    store.dedup_ttl = 15 * 24 * 3600
    batches = [[message(f"K{i}", f"U{i}", "1.00")] for i in range(30)]
    for batch in batches:
        recorded_not_applied(store, batch, NOW - timedelta(hours=1))
    store.clock = NOW.timestamp
    real_writer, real_run = AggregateStore.writer, AggregateStore.run_fenced
    calls: list[int] = []

    def small_writer(self, generation, token, chunk=20_000):
        return real_writer(self, generation, token, chunk=40)

    def killed_after_five_calls(self, token, fenced):
        calls.append(1)
        if len(calls) > 5:
            raise KilledError
        return real_run(self, token, fenced)

    monkeypatch.setattr(AggregateStore, "writer", small_writer)
    monkeypatch.setattr(AggregateStore, "run_fenced", killed_after_five_calls)
    with pytest.raises(KilledError):
        projection.reconcile(store, repair=True, settle=timedelta(0))
    monkeypatch.undo()

    counted = store.global_stats()
    users = [u for u in (store.user_stats(f"U{i}") for i in range(30)) if u is not None]
    days = store.by_date(DAY, DAY)
    assert 0 < counted.total_orders < 30
    assert counted.total_orders == len(users) == counted.unique_users == days[0].total_orders
    assert counted.total_revenue_cents == sum(u.total_spend_cents for u in users)

    results = [commit(store, batch) for batch in batches]  # the batches come back
    assert sum(r.duplicates for r in results) == counted.total_orders
    assert store.global_stats().total_orders == 30
    assert reconcile()[0] == 0
