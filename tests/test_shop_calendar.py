"""The shop's calendar and money in the aggregates (a real Valkey, orders through the real
commit path): Redis records the zone and currency it was built for, processes configured for
another refuse or say so, rebuild_stats derives the days in the configured zone, and never
adds up rows of two currencies."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from stats.store import AggregateStore, LayoutError, StoreCommandError
from tests.ingestion_helpers import prefix_keys
from tests.projection_helpers import (
    NOW,
    commit,
    event_message,
    message,
    rebuild,
    reconcile,
    whole_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def in_zone(store: AggregateStore, zone: str, currency: str = "USD") -> AggregateStore:
    """A process of ``store``'s prefix configured for ``zone`` and ``currency``."""
    return AggregateStore(
        store.client, store.prefix, store.dedup_ttl, shards=store.shards, zone=zone,
        currency=currency,
    )  # fmt: skip


# --- the descriptor ---------------------------------------------------------------------------
def test_a_rebuild_records_the_configured_zone_and_a_consumer_of_another_is_refused(
    settings, filled: AggregateStore, live_redis: redis.Redis
) -> None:
    settings.STATS_TIME_ZONE = ZoneInfo("Asia/Kolkata")
    rebuild()
    assert live_redis.get(filled.key("gen")) == b"1;v3;n1;zAsia/Kolkata"
    assert live_redis.get(f"{filled.prefix}:layout") == b"v3;n1;zAsia/Kolkata"

    # A consumer started with the old zone: refused at start, and refused if already running.
    with pytest.raises(LayoutError, match="STATS_TIME_ZONE=Asia/Kolkata"):
        filled.claim_layout()
    with pytest.raises(StoreCommandError, match=r"time zone Asia/Kolkata.*rebuild_stats"):
        commit(filled, [message("LATE", "U1", "1.00")])
    kolkata = in_zone(filled, "Asia/Kolkata")
    kolkata.claim_layout()
    assert commit(kolkata, [message("NEW", "U1", "1.00")]).applied == 1
    assert reconcile()[0] == 0


def test_consume_orders_in_another_zone_stops_at_start_saying_what_to_do(
    settings, filled: AggregateStore
) -> None:
    """Before it receives anything: exit 1 (CommandError) with one line naming the setting."""
    filled.claim_layout()  # what the consumer that wrote them recorded
    settings.STATS_TIME_ZONE = ZoneInfo("Asia/Tokyo")

    with pytest.raises(CommandError) as refused:
        call_command("consume_orders", "--once")

    assert str(refused.value) == (
        "the aggregates in Redis count the days of time zone UTC but this process has "
        "STATS_TIME_ZONE=Asia/Tokyo: restart it with STATS_TIME_ZONE=UTC, or run `manage.py "
        "rebuild_stats` with STATS_TIME_ZONE=Asia/Tokyo to derive them again in that zone"
    )


def test_a_web_process_in_another_zone_answers_503_saying_what_to_do(
    settings, filled: AggregateStore, api: APIClient
) -> None:
    settings.STATS_TIME_ZONE = ZoneInfo("America/New_York")

    response = api.get("/stats/global")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "The statistics store cannot be read by this process: the aggregates in "
        "Redis count the days of time zone UTC but this process has STATS_TIME_ZONE="
        "America/New_York: restart it with STATS_TIME_ZONE=UTC, or run `manage.py "
        "rebuild_stats` with STATS_TIME_ZONE=America/New_York to derive them again in that zone"
    }


def test_a_consumer_of_another_currency_is_refused_at_start(filled: AggregateStore) -> None:
    with pytest.raises(LayoutError, match=r"counted in USD but this process has STATS_CURRENCY"):
        in_zone(filled, "UTC", "JPY").claim_layout()
    filled.claim_layout()  # the layout is unchanged


def test_a_consumer_of_another_currency_is_refused_where_no_layout_is_recorded_yet(
    store: AggregateStore,
) -> None:
    """The first consumer records its zone and currency; the next, configured otherwise,
    is refused before it writes anything."""
    in_zone(store, "Pacific/Chatham", "KWD").claim_layout()
    with pytest.raises(LayoutError, match="counted in KWD"):
        store.claim_layout()


def test_rebuild_stats_refuses_a_ledger_in_another_currency(
    settings, filled: AggregateStore, live_redis: redis.Redis
) -> None:
    settings.STATS_CURRENCY = "EUR"
    gen = live_redis.get(filled.key("gen"))

    with pytest.raises(CommandError) as refused:
        rebuild()

    assert str(refused.value) == (
        "the ledger holds rows in another currency than STATS_CURRENCY=EUR (13 in USD): "
        "amounts are never converted or added across currencies; run rebuild_stats with the "
        "STATS_CURRENCY the ledger was recorded in"
    )
    assert live_redis.get(filled.key("gen")) == gen  # nothing switched


def test_rebuild_stats_moves_aggregates_to_a_new_currency_when_the_ledger_has_no_other(
    settings, store: AggregateStore, live_redis: redis.Redis
) -> None:
    """A shop that started with the default USD before its first order, then set JPY: its
    consumer is refused until rebuild_stats, which finds no row of another currency."""
    store.claim_layout()  # what the first consumer, in USD, recorded
    settings.STATS_CURRENCY = "JPY"
    jpy = in_zone(store, "UTC", "JPY")
    with pytest.raises(LayoutError, match="STATS_CURRENCY=JPY"):
        jpy.claim_layout()

    rebuild()

    assert live_redis.get(f"{store.prefix}:layout") == b"v3;n1;cJPY"
    jpy.claim_layout()
    assert commit(jpy, [message("Y1", "U1", "1200")]).applied == 1
    assert jpy.global_stats().total_revenue_cents == 1200


# --- local days ---------------------------------------------------------------------------------
# Each order's UTC instant and, written out by hand, its day in each zone: New York across both
# daylight-saving changes of 2025 (a 23-hour 9 March, a 25-hour 2 November), Kolkata at
# +05:30, Chatham at +12:45 (+13:45 in its summer). Order i costs i + 1 dollars.
INSTANTS = [
    # UTC instant            UTC     New York  Kolkata  Chatham
    ("2025-03-09T04:59:59Z", "03-09", "03-08", "03-09", "03-09"),  # 23:59:59 EST
    ("2025-03-09T05:00:00Z", "03-09", "03-09", "03-09", "03-09"),  # 00:00 EST
    ("2025-03-10T03:59:59Z", "03-10", "03-09", "03-10", "03-10"),  # 23:59:59 EDT
    ("2025-03-10T04:00:00Z", "03-10", "03-10", "03-10", "03-10"),
    ("2025-08-09T11:14:59Z", "08-09", "08-09", "08-09", "08-09"),  # 23:59:59 in Chatham
    ("2025-08-09T11:15:00Z", "08-09", "08-09", "08-09", "08-10"),
    ("2025-08-09T18:29:59Z", "08-09", "08-09", "08-09", "08-10"),  # 23:59:59 in Kolkata
    ("2025-08-09T18:30:00Z", "08-09", "08-09", "08-10", "08-10"),
    ("2025-11-02T04:00:00Z", "11-02", "11-02", "11-02", "11-02"),  # 00:00 EDT
    ("2025-11-03T04:59:59Z", "11-03", "11-02", "11-03", "11-03"),  # 23:59:59 EST, 25 h later
    ("2025-11-03T05:00:00Z", "11-03", "11-03", "11-03", "11-03"),
]
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]


def oracle(zone: str) -> dict[date, tuple[int, int]]:
    """Orders and revenue (cents) per local day, from the table above."""
    column = ZONES.index(zone) + 1
    days: dict[date, tuple[int, int]] = {}
    for i, row in enumerate(INSTANTS):
        day = date.fromisoformat(f"2025-{row[column]}")
        orders, revenue = days.get(day, (0, 0))
        days[day] = (orders + 1, revenue + (i + 1) * 100)
    return days


def served_days(store: AggregateStore) -> dict[date, tuple[int, int]]:
    return {
        d.day: (d.total_orders, d.total_revenue_cents)
        for d in store.by_date(date(2025, 3, 1), date(2025, 11, 30))
        if d.total_orders
    }


def calendar_messages() -> list[dict]:
    return [
        message(f"T{i}", f"U{i % 3 + 1}", f"{i + 1}.00", timestamp=row[0])
        for i, row in enumerate(INSTANTS)
    ]


@pytest.mark.parametrize("shards", [1, 8])
def test_the_same_ledger_rebuilt_for_each_zone_gives_that_zones_days(
    settings, live_redis: redis.Redis, key_prefix: str, shards: int
) -> None:
    settings.REDIS_SHARDS = shards
    utc = AggregateStore(live_redis, key_prefix, 15 * 24 * 3600, shards=shards)
    commit(utc, calendar_messages())
    assert served_days(utc) == oracle("UTC")

    for zone in [*ZONES[1:], "UTC"]:
        settings.STATS_TIME_ZONE = ZoneInfo(zone)
        rebuild()
        assert served_days(in_zone(utc, zone)) == oracle(zone), zone
        assert reconcile()[0] == 0, zone


@pytest.mark.parametrize("zone", ZONES[1:])
def test_a_consumer_in_a_zone_counts_each_order_on_its_local_day(
    settings, store: AggregateStore, zone: str
) -> None:
    settings.STATS_TIME_ZONE = ZoneInfo(zone)
    local = in_zone(store, zone)
    local.claim_layout()

    assert commit(local, calendar_messages()).applied == len(INSTANTS)

    assert served_days(local) == oracle(zone)
    assert reconcile()[0] == 0  # the ledger's local days agree


def test_a_repair_counts_the_orders_redis_never_applied_on_their_local_days(
    settings, store: AggregateStore
) -> None:
    settings.STATS_TIME_ZONE = ZoneInfo("Asia/Kolkata")
    local = in_zone(store, "Asia/Kolkata")
    local.dedup_ttl = 15 * 24 * 3600
    messages = calendar_messages()
    earlier = NOW - timedelta(hours=1)  # past reconcile's settle time
    commit(local, messages[::2], earlier)
    real = local.apply_batch
    local.apply_batch = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Redis lost it"))
    with pytest.raises(RuntimeError):
        commit(local, messages[1::2], earlier)  # in the ledger, never applied
    local.apply_batch = real

    status, out = reconcile()  # the days Redis has are the ledger's less those, day by day
    assert (status, out.count("\n  day ")) == (1, 0), out
    assert "1 difference(s)" in out and "5 ledger orders recorded but never applied" in out

    assert reconcile("--repair")[0] == 0
    assert served_days(local) == oracle("Asia/Kolkata")
    assert reconcile()[0] == 0


# --- local hours ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 8])
def test_a_rebuild_derives_the_hours_the_consumer_applied_and_reconcile_checks_them(
    settings, live_redis: redis.Redis, key_prefix: str, shards: int
) -> None:
    settings.REDIS_SHARDS = shards
    settings.STATS_TIME_ZONE = ZoneInfo("America/New_York")
    store = AggregateStore(
        live_redis, key_prefix, 15 * 24 * 3600, shards=shards, zone="America/New_York"
    )
    store.claim_layout()
    commit(store, calendar_messages())
    applied = store.all_hours()
    assert applied["2025-11-03T04:00"] == (1, 1000, 0)  # 23:00 EST, 2 Nov: 23:59:59
    assert applied["2025-08-09T11:00"] == (2, 500 + 600, 0)  # 07:14:59 and 07:15 EDT
    assert len(applied) == 9  # and 14:29:59 with 14:30 EDT

    rebuild()

    assert store.all_hours() == applied
    assert reconcile()[0] == 0
    hour = "2025-11-03T04:00"
    shard = store.shard_of("U1")  # order T9's user: (9 % 3) + 1
    gen = store.generations()[shard]
    _orders, gross, refunded = live_redis.hget(store.keys.hours(shard, gen), hour).split(b":")
    live_redis.hset(store.keys.hours(shard, gen), hour, f"7:{gross.decode()}:{refunded.decode()}")
    status, out = reconcile()
    assert status == 1 and "hour 2025-11-03T04:00 (UTC start): 7 orders" in out
    assert reconcile("--repair")[0] == 0
    assert store.all_hours() == applied


def test_a_refund_counts_on_its_local_day_when_applied_and_when_rebuilt(
    settings, store: AggregateStore
) -> None:
    """An order at 23:00 IST on 9 August, refunded at 00:10 IST on the 10th (18:40 UTC on
    the 9th): the refund's day is the 10th in Kolkata, the 9th in UTC."""
    settings.STATS_TIME_ZONE = ZoneInfo("Asia/Kolkata")
    local = in_zone(store, "Asia/Kolkata")
    local.claim_layout()
    commit(local, [message("R1", "U1", "10.00", timestamp="2025-08-09T17:30:00Z")])
    commit(local, [event_message("E1", "R1", "4.00", occurred_at="2025-08-09T18:40:00Z")])

    def figures() -> list[tuple[date, int, int, int]]:
        days = local.by_date(date(2025, 8, 9), date(2025, 8, 10))
        return [(d.day, d.total_orders, d.gross_revenue_cents, d.refunded_cents) for d in days]

    applied = figures()
    assert applied == [(date(2025, 8, 9), 1, 1000, 0), (date(2025, 8, 10), 0, 0, 400)]
    rebuild()
    assert figures() == applied
    assert reconcile()[0] == 0


# Refunds of orders T0, T6 and T8 above, and where each counts, written out by hand: the UTC
# instant its hour began in each zone (New York: 01:30 EDT and 01:30 EST on 2 November, 03:00
# EDT just after 9 March's skipped hour, 14:29:59 and 14:30 EDT in one hour; Kolkata: 11:00 and
# 12:00 IST, 12:30 IST in the hour begun at 12:00, 23:59:59 IST and midnight apart).
REFUNDS = [
    # event order amount (none: a cancellation)  occurred at   New York            Kolkata
    ("E1", "T8", "1.50", "2025-11-02T05:30:00Z", "2025-11-02T05:00", "2025-11-02T05:30"),
    ("E2", "T8", "2.00", "2025-11-02T06:30:00Z", "2025-11-02T06:00", "2025-11-02T06:30"),
    ("E3", "T0", None, "2025-03-09T07:00:00Z", "2025-03-09T07:00", "2025-03-09T06:30"),
    ("E4", "T6", "0.25", "2025-08-09T18:29:59Z", "2025-08-09T18:00", "2025-08-09T17:30"),
    ("E5", "T6", "0.50", "2025-08-09T18:30:00Z", "2025-08-09T18:00", "2025-08-09T18:30"),
]  # fmt: skip
REFUNDED_CENTS = {"E1": 150, "E2": 200, "E3": 100, "E4": 25, "E5": 50}  # E3: all of T0's 1.00


def refunds_by_hour(zone: str) -> dict[str, int]:
    column = 4 if zone == "America/New_York" else 5
    hours: dict[str, int] = {}
    for row in REFUNDS:
        hours[row[column]] = hours.get(row[column], 0) + REFUNDED_CENTS[row[0]]
    return hours


@pytest.mark.parametrize("shards", [1, 8])
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_a_refund_counts_in_its_local_hour_when_applied_rebuilt_and_reconciled(
    settings, live_redis: redis.Redis, key_prefix: str, zone: str, shards: int
) -> None:
    """The consumer adds each refund and cancellation to the local hour it occurred in (not
    its order's); a rebuild derives the same hours key for key; reconcile finds a wrong
    ``<H>:refunded`` and --repair rewrites it."""
    settings.REDIS_SHARDS = shards
    settings.STATS_TIME_ZONE = ZoneInfo(zone)
    store = AggregateStore(live_redis, key_prefix, 15 * 24 * 3600, shards=shards, zone=zone)
    store.claim_layout()
    commit(store, calendar_messages())
    commit(
        store,
        [
            event_message(e, o, amount, "cancelled" if amount is None else "refunded", occurred)
            for e, o, amount, occurred, *_ in REFUNDS
        ],
    )

    applied = store.all_hours()
    assert {h: f for h, (_o, _r, f) in applied.items() if f} == refunds_by_hour(zone)
    served = store.by_hour(date(2025, 11, 2), date(2025, 11, 2))
    assert sum(h.refunded_cents for h in served) == 150 + 200
    gross = {"America/New_York": 900 + 1000, "Asia/Kolkata": 900}[zone]  # T8 (T9: 23:59:59 EST)
    assert sum(h.net_revenue_cents for h in served) == gross - 350
    state = whole_state(store)

    for key in prefix_keys(live_redis, store.prefix):
        live_redis.delete(key)
    rebuild()

    assert store.all_hours() == applied
    assert whole_state(store) == state
    assert reconcile()[0] == 0

    hour = REFUNDS[1][4 if zone == "America/New_York" else 5]  # E2's: no order in it
    shard = store.shard_of("U3")  # order T8's user: (8 % 3) + 1
    gen = store.generations()[shard]
    live_redis.hset(store.keys.hours(shard, gen), hour, "0:0:999")
    status, out = reconcile()
    assert status == 1
    assert (
        f"hour {hour} (UTC start): 0 orders, 0 cents, 999 cents refunded (ledger 0, 0, 200)" in out
    )
    assert reconcile("--repair")[0] == 0
    assert store.all_hours() == applied
    assert whole_state(store) == state


def test_a_repair_counts_a_refund_redis_never_applied_in_its_local_hour(
    settings, store: AggregateStore
) -> None:
    """Reconcile leaves a refund Redis never applied out of what its hour should hold (not a
    difference, reported as never applied); --repair adds it to its hour in Kolkata."""
    settings.STATS_TIME_ZONE = ZoneInfo("Asia/Kolkata")
    local = in_zone(store, "Asia/Kolkata")
    local.dedup_ttl = 15 * 24 * 3600
    local.claim_layout()
    earlier = NOW - timedelta(hours=1)  # past reconcile's settle time
    commit(local, calendar_messages(), earlier)
    real = local.apply_batch
    local.apply_batch = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Redis lost it"))
    with pytest.raises(RuntimeError):
        commit(
            local, [event_message("E4", "T6", "0.25", occurred_at="2025-08-09T18:29:59Z")], earlier
        )
    local.apply_batch = real
    assert "2025-08-09T17:30" not in {h for h, f in local.all_hours().items() if f[2]}

    status, out = reconcile()
    assert (status, out.count("\n  hour ")) == (1, 0), out
    assert "1 ledger events (refunds, cancellations) recorded but never applied" in out

    assert reconcile("--repair")[0] == 0
    assert local.all_hours()["2025-08-09T17:30"] == (1, 700, 25)  # T6 at 23:59:59 IST too
    assert reconcile()[0] == 0
