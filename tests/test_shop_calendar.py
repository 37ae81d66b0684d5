"""The shop's calendar and money in the aggregates (a real Valkey, orders through the real
commit path): Redis records the zone and currency it was built for, processes configured for
another refuse or say so, rebuild_stats derives the days in the configured zone, and never
adds up rows of two currencies."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import redis
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from stats.store import AggregateStore, LayoutError, StoreCommandError
from tests.projection_helpers import commit, message, rebuild, reconcile

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
    assert live_redis.get(filled.key("gen")) == b"1;v2;n1;zAsia/Kolkata"
    assert live_redis.get(f"{filled.prefix}:layout") == b"v2;n1;zAsia/Kolkata"

    # A consumer started with the old zone: refused at start, and refused if already running.
    with pytest.raises(LayoutError, match="STATS_TIME_ZONE=Asia/Kolkata"):
        filled.claim_layout()
    with pytest.raises(StoreCommandError, match=r"time zone Asia/Kolkata.*rebuild_stats"):
        commit(filled, [message("LATE", "U1", "1.00")])
    kolkata = in_zone(filled, "Asia/Kolkata")
    kolkata.claim_layout()
    assert commit(kolkata, [message("NEW", "U1", "1.00")]).applied == 1
    assert reconcile()[0] == 0


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

    assert live_redis.get(f"{store.prefix}:layout") == b"v2;n1;cJPY"
    jpy.claim_layout()
    assert commit(jpy, [message("Y1", "U1", "1200")]).applied == 1
    assert jpy.global_stats().total_revenue_cents == 1200
