"""The aggregate store against a real Redis server and against fakeredis."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import redis
from redis._parsers.base import BaseParser

from devtools.servers import RedisServer
from orderpipe.money import currency
from stats.store import (
    APPLY_SHA,
    AggregateStore,
    ApplyStatus,
    PendingOrder,
    StoreCommandError,
    StoreUnavailableError,
)
from tests.ingestion_helpers import make_order, prefix_keys, wait_until


class DebianRedisServer(RedisServer):
    """The machine's own redis-server (Redis 7.0 here) instead of Valkey: scripts' flags and
    OOM handling differ between servers and versions, so both are checked where both exist."""

    name = "redis-server"

    def command(self) -> list[str]:
        return [shutil.which("redis-server") or "redis-server", *super().command()[1:]]


@pytest.fixture(params=["valkey", "redis"])
def redis_kind(request, tmp_path) -> Iterator[RedisServer]:
    """A private server of each kind available: Valkey (always) and Redis (when installed)."""
    if request.param == "redis" and shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    kind = DebianRedisServer if request.param == "redis" else RedisServer
    server = kind(data_dir=tmp_path / request.param)
    server.start()
    yield server
    server.stop()


def test_applied_order_updates_every_aggregate(any_store: AggregateStore) -> None:
    statuses = any_store.apply_orders([make_order("O1", "U1", 10997)])

    assert statuses == [ApplyStatus.APPLIED]
    user = any_store.user_stats("U1")
    assert user is not None
    assert (user.order_count, user.total_spend_cents) == (1, 10997)
    assert user.first_order_at == user.last_order_at == datetime(2025, 8, 9, 10, 15, tzinfo=UTC)
    assert any_store.global_stats().total_orders == 1
    assert any_store.global_stats().total_revenue_cents == 10997
    assert any_store.global_stats().unique_users == 1
    assert [(r.user_id, r.value) for r in any_store.top_spenders(5)] == [("U1", 10997)]
    day = any_store.by_date(date(2025, 8, 9), date(2025, 8, 9))[0]
    assert (day.total_orders, day.total_revenue_cents) == (1, 10997)


def test_redelivered_order_is_counted_once(any_store: AggregateStore) -> None:
    order = make_order("O1", "U1", 500)
    assert any_store.apply_orders([order, order]) == [ApplyStatus.APPLIED, ApplyStatus.DUPLICATE]
    assert any_store.apply_orders([order]) == [ApplyStatus.DUPLICATE]
    assert any_store.global_stats().total_orders == 1
    assert any_store.ingestion().duplicates == 2


def test_same_order_id_with_other_payload_is_a_conflict_and_changes_nothing(
    any_store: AggregateStore,
) -> None:
    """Within one shard the mark tells (across shards the ledger does, see test_projection)."""
    any_store.apply_orders([make_order("O1", "U1", 500)])
    before = (any_store.global_stats(), any_store.user_stats("U1"))

    assert any_store.apply_orders([make_order("O1", "U1", 999)]) == [ApplyStatus.CONFLICT]

    assert (any_store.global_stats(), any_store.user_stats("U1")) == before


def test_rankings_are_highest_first_with_ties_by_user_id(any_store: AggregateStore) -> None:
    any_store.apply_orders(
        [
            make_order("a", "U3", 100),
            make_order("b", "U1", 100),
            make_order("c", "U2", 300),
            make_order("d", "U4", 50),
            make_order("e", "U4", 50),
        ]
    )
    spenders = [(r.rank, r.user_id, r.value) for r in any_store.top_spenders(3)]
    buyers = [(r.rank, r.user_id, r.value) for r in any_store.top_buyers(2)]
    assert spenders == [(1, "U2", 300), (2, "U1", 100), (3, "U3", 100)]
    assert buyers == [(1, "U4", 2), (2, "U1", 1)]


def test_first_and_last_order_times_follow_out_of_order_arrivals(any_store: AggregateStore) -> None:
    late = datetime(2025, 8, 20, tzinfo=UTC)
    early = datetime(2025, 8, 1, tzinfo=UTC)
    middle = datetime(2025, 8, 10, tzinfo=UTC)
    any_store.apply_orders([make_order("1", "U1", 1, middle)])
    any_store.apply_orders([make_order("2", "U1", 1, late), make_order("3", "U1", 1, early)])
    user = any_store.user_stats("U1")
    assert user is not None
    assert (user.first_order_at, user.last_order_at) == (early, late)


def test_by_date_includes_empty_days_as_zero(any_store: AggregateStore) -> None:
    any_store.apply_orders([make_order("1", "U1", 250, datetime(2025, 1, 2, 23, 59, tzinfo=UTC))])
    days = any_store.by_date(date(2025, 1, 1), date(2025, 1, 3))
    assert [(d.day.day, d.total_orders, d.total_revenue_cents) for d in days] == [
        (1, 0, 0),
        (2, 1, 250),
        (3, 0, 0),
    ]


def test_reads_take_refunds_and_cancellations_apart_from_gross(any_store: AggregateStore) -> None:
    """Gross and refunds are kept apart and net derived; hashes written before events existed
    (no ``refunded``/``cancelled`` fields) read as 0."""
    any_store.apply_orders([make_order("O1", "U1", 10000), make_order("O2", "U2", 300)])
    untouched = any_store.user_stats("U2")
    assert untouched is not None
    assert (untouched.refunded_cents, untouched.cancelled_orders) == (0, 0)
    assert untouched.net_spend_cents == untouched.gross_spend_cents == 300

    keys, shard = any_store.keys, any_store.shard_of("U1")
    any_store.client.hset(keys.user("U1", shard, 0), mapping={"refunded": 2500, "cancelled": 1})
    any_store.client.hset(keys.totals(shard, 0), mapping={"refunded": 2500, "cancelled": 1})
    any_store.client.hset(keys.days(shard, 0), "2025-08-10", "0:0:2500")
    any_store.client.hset(
        keys.ingest(shard),
        mapping={"events_received": 3, "events_applied": 2, "events_duplicates": 1},
    )

    user = any_store.user_stats("U1")
    assert user is not None
    assert (user.order_count, user.gross_spend_cents, user.refunded_cents) == (1, 10000, 2500)
    assert (user.net_spend_cents, user.cancelled_orders) == (7500, 1)
    totals = any_store.global_stats()
    assert (totals.gross_revenue_cents, totals.refunded_cents, totals.net_revenue_cents) == (
        10300,
        2500,
        7800,
    )
    assert (totals.total_orders, totals.cancelled_orders, totals.unique_users) == (2, 1, 2)
    days = any_store.by_date(date(2025, 8, 9), date(2025, 8, 10))
    assert [(d.total_orders, d.gross_revenue_cents, d.refunded_cents) for d in days] == [
        (2, 10300, 0),
        (0, 0, 2500),
    ]
    assert days[1].net_revenue_cents == -2500
    ingest = any_store.ingestion()
    assert (ingest.events_received, ingest.events_applied, ingest.events_duplicates) == (3, 2, 1)
    assert any_store.read_users(["U1"])["U1"] == user


def test_large_amounts_stay_exact_to_the_cent(any_store: AggregateStore) -> None:
    cents = 100_000_000_000  # the maximum order value, 1,000,000,000.00
    any_store.apply_orders([make_order(str(i), "U1", cents + 1) for i in range(1000)])
    expected = (cents + 1) * 1000
    assert any_store.global_stats().total_revenue_cents == expected
    assert any_store.top_spenders(1)[0].value == expected
    assert currency("USD").from_minor_units(expected) == Decimal("1000000000010.00")


def test_idempotency_mark_expires_after_ttl(store: AggregateStore, live_redis) -> None:
    store.dedup_ttl = 100
    store.apply_orders([make_order("O1", "U1", 1)])
    ttl = live_redis.ttl(store.key("seen", "O1"))
    assert 0 < ttl <= 100


def test_zero_ttl_keeps_marks_forever(store: AggregateStore, live_redis) -> None:
    store.dedup_ttl = 0
    store.apply_orders([make_order("O1", "U1", 1)])
    assert live_redis.ttl(store.key("seen", "O1")) == -1


def test_script_is_reloaded_after_redis_loses_it(store: AggregateStore, live_redis) -> None:
    store.apply_orders([make_order("O1", "U1", 1)])
    live_redis.script_flush()
    assert store.apply_orders([make_order("O2", "U1", 1)]) == [ApplyStatus.APPLIED]


def test_every_primary_of_a_cluster_gets_the_script_it_lost(cluster_store: AggregateStore) -> None:
    """A restarted primary has no scripts: the one that needs it is loaded, in the pipeline
    of shards as well as for a single call."""
    from redis.cluster import RedisCluster

    cluster_store.consumer_id = "host:1"  # batches go through the pipeline with a heartbeat
    orders = [make_order(f"O{i}", f"U{i}", 100) for i in range(24)]
    cluster_store.apply_orders(orders[:12])
    client = cluster_store.client
    client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
    found = client.execute_command("SCRIPT EXISTS", APPLY_SHA, target_nodes=RedisCluster.PRIMARIES)
    assert not any(found)  # every primary lost it (one 0 per node, merged)

    assert cluster_store.apply_orders(orders[12:]) == [ApplyStatus.APPLIED] * 12
    cluster_store.consumer_id = ""
    cluster_store.client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
    assert cluster_store.apply_orders([make_order("O99", "U1", 1)]) == [ApplyStatus.APPLIED]
    assert cluster_store.global_stats().total_orders == 25


def test_rejections_are_counted_by_message_and_by_code(any_store: AggregateStore) -> None:
    counted = any_store.record_rejections(
        {
            "m1": ("invalid_json",),
            "m2": ("invalid_json", "missing_field"),
            "m3": ("value_mismatch",),
        }
    )
    stats = any_store.ingestion()
    assert (counted, stats.rejected) == (3, 3)
    assert stats.rejected_by_code == {"invalid_json": 2, "missing_field": 1, "value_mismatch": 1}


def test_a_rejected_message_is_counted_once_however_often_it_comes(
    any_store: AggregateStore,
) -> None:
    any_store.record_rejections({"m1": ("invalid_json",)})
    # Redelivered, or received by two consumers at once: the database keeps one row either
    # way, and the count must not move either.
    assert any_store.record_rejections({"m1": ("invalid_json",), "m2": ("missing_field",)}) == 1
    stats = any_store.ingestion()
    assert stats.rejected == 2
    assert stats.rejected_by_code == {"invalid_json": 1, "missing_field": 1}
    mark = any_store.key("rejected", "m1", shard=any_store.shard_of("m1"))
    assert 0 < any_store.client.ttl(mark) <= any_store.dedup_ttl


def test_unreachable_redis_raises_store_unavailable(private_redis) -> None:
    import redis

    store = AggregateStore(redis.Redis.from_url(private_redis.url, socket_timeout=1), prefix="t")
    private_redis.stop()
    with pytest.raises(StoreUnavailableError):
        store.apply_orders([make_order("O1", "U1", 1)])
    with pytest.raises(StoreUnavailableError):
        store.global_stats()


def test_a_batch_of_rejects_only_still_moves_last_batch_time(any_store: AggregateStore) -> None:
    any_store.clock = lambda: 1_700_000_000.0
    any_store.apply_batch([], received=3)
    stats = any_store.ingestion()
    assert stats.received == 3
    assert stats.last_batch_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert stats.heartbeat_at == stats.last_batch_at


def test_every_applied_batch_is_a_heartbeat(any_store: AggregateStore) -> None:
    any_store.clock = lambda: 1_700_000_000.0
    any_store.apply_orders([make_order("O1", "U1", 1)])
    stats = any_store.ingestion()
    assert (
        stats.heartbeat_at == stats.last_batch_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    )


def test_a_refused_command_is_a_store_command_error(any_store: AggregateStore) -> None:
    shard = any_store.shard_of("U1")
    any_store.client.set(any_store.key("global", shard=shard), "not a hash")  # WRONGTYPE
    with pytest.raises(StoreCommandError):
        any_store.apply_orders([make_order("O1", "U1", 1)])


def _written_keys(store: AggregateStore) -> set[str]:
    return {k.decode() for k in prefix_keys(store.client, store.prefix)}


def _same_shard(store: AggregateStore, value: str, stem: str) -> str:
    """``stem`` + the first number that lands in the shard of ``value``."""
    return next(
        f"{stem}{n}" for n in range(1000) if store.shard_of(f"{stem}{n}") == store.shard_of(value)
    )


@pytest.mark.parametrize("wrong", ["global", "user", "seen", "rank:spend", "ingest"])
def test_a_key_of_the_wrong_type_fails_the_batch_before_any_write(
    any_store: AggregateStore, wrong: str
) -> None:
    """Redis does not roll a script back: the types are checked first, so nothing of the
    batch is written (no mark without its totals, which would make the redelivery a
    "duplicate" and lose the order for good). One shard's part of a batch is what is atomic,
    so with several shards the batch's users and message are taken from one."""
    s = any_store.shard_of("U1")
    other, message_id = _same_shard(any_store, "U1", "U"), _same_shard(any_store, "U1", "m")
    other = other if other != "U1" else _same_shard(any_store, "U1", "V")
    planted = {
        "user": any_store.aggregate_key("user", other, shard=s),
        "seen": any_store.key("seen", "O2", shard=s),
    }.get(wrong, any_store.key(*wrong.split(":"), shard=s))
    if wrong == "seen":
        any_store.client.hset(planted, "not", "a string")
    else:
        any_store.client.set(planted, "not the right type")
    batch = [make_order("O1", "U1", 100), make_order("O2", other, 200)]

    with pytest.raises(StoreCommandError, match="WRONGTYPE"):
        any_store.apply_batch(
            [PendingOrder(o) for o in batch], {message_id: ("invalid_json",)}, received=3
        )

    assert _written_keys(any_store) == {planted}
    any_store.client.delete(planted)
    assert any_store.apply_orders(batch) == [ApplyStatus.APPLIED, ApplyStatus.APPLIED]


def test_out_of_memory_refuses_the_whole_script_as_an_outage(redis_kind) -> None:
    """maxmemory reached under noeviction: the #!lua script is refused before it runs (a
    script without the shebang would stop at its first write), and it is an outage."""
    client = redis.Redis.from_url(redis_kind.url)
    store = AggregateStore(client, prefix="oom", dedup_ttl=3600)
    store.apply_orders([make_order("O0", "U0", 1)])
    before = _written_keys(store)
    client.config_set("maxmemory", 1)
    try:
        with pytest.raises(StoreUnavailableError, match="OutOfMemoryError") as caught:
            store.apply_orders([make_order("O1", "U1", 100)])
        assert not isinstance(caught.value, StoreCommandError)
        # Refused as a whole before it ran; without the shebang Redis would have started it
        # and stopped it at its first write ("… script: …, on @user_script:…").
        assert "script" not in str(caught.value)
        with pytest.raises(StoreUnavailableError):
            store.heartbeat()  # the consumer's probe fails the same way
    finally:
        client.config_set("maxmemory", 0)
    assert _written_keys(store) == before
    assert store.apply_orders([make_order("O1", "U1", 100)]) == [ApplyStatus.APPLIED]


def test_too_few_replicas_is_an_outage(redis_kind) -> None:
    client = redis.Redis.from_url(redis_kind.url)
    store = AggregateStore(client, prefix="norepl", dedup_ttl=3600)
    client.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(StoreUnavailableError, match="NOREPLICAS") as caught:
            store.apply_orders([make_order("O1", "U1", 100)])
        assert not isinstance(caught.value, StoreCommandError)
    finally:
        client.config_set("min-replicas-to-write", 0)
    assert store.apply_orders([make_order("O1", "U1", 100)]) == [ApplyStatus.APPLIED]


def test_a_wrong_password_is_not_an_outage(private_redis) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("requirepass", "right")
    try:
        client = redis.Redis.from_url(private_redis.url.replace("redis://", "redis://:wrong@"))
        with pytest.raises(StoreCommandError, match="AuthenticationError"):
            AggregateStore(client, prefix="auth").apply_orders([make_order("O1", "U1", 1)])
    finally:
        redis.Redis.from_url(private_redis.url, password="right").config_set("requirepass", "")


@pytest.mark.parametrize(
    "reply",
    [
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "READONLY You can't write against a read only replica.",
        "LOADING Redis is loading the dataset in memory",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ],
)
def test_refusals_redis_lifts_by_itself_are_outages_not_command_errors(
    fake_store: AggregateStore, reply: str
) -> None:
    error = BaseParser.parse_error(reply)  # the exception redis-py raises for this reply

    def refuse(*_args, **_kwargs):
        raise error

    fake_store._eval = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError) as caught:
        fake_store.apply_orders([make_order("O1", "U1", 1)])
    assert not isinstance(caught.value, StoreCommandError)  # the consumer backs off, not exits


def test_a_redis_busy_with_a_long_script_is_an_outage(private_redis) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("busy-reply-threshold", 50)  # ms before other clients get BUSY
    blocker = redis.Redis.from_url(private_redis.url)
    looping = threading.Thread(
        target=_run_quietly, args=(blocker.eval, "while true do end", 0), daemon=True
    )
    looping.start()
    store = AggregateStore(redis.Redis.from_url(private_redis.url), prefix="busy")
    try:
        assert wait_until(lambda: _is_busy(admin), 10, interval=0.02), "never answered BUSY"
        with pytest.raises(StoreUnavailableError) as caught:
            store.apply_orders([make_order("O1", "U1", 1)])
        assert not isinstance(caught.value, StoreCommandError)  # the consumer backs off
        assert "BUSY" in str(caught.value)
    finally:
        _run_quietly(admin.script_kill)
        looping.join(10)
    assert store.apply_orders([make_order("O1", "U1", 1)]) == [ApplyStatus.APPLIED]


def _run_quietly(call, *args) -> None:
    with contextlib.suppress(redis.RedisError):
        call(*args)


def _is_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.ResponseError as exc:
        if str(exc).startswith("BUSY"):
            return True
        raise
    return False


def test_each_consumer_stamps_its_own_heartbeat_and_leaves_cleanly(
    any_store: AggregateStore,
) -> None:
    any_store.consumer_id = "host:1"
    any_store.apply_orders([make_order("O1", "U1", 1)])
    other = AggregateStore(any_store.client, prefix=any_store.prefix)
    other.consumer_id = "host:2"
    other.heartbeat()
    assert set(any_store.consumers()) == {"host:1", "host:2"}

    any_store.forget_consumer()
    assert set(any_store.consumers()) == {"host:2"}
