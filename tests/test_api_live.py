"""Every endpoint against a real Redis server, with data written through the aggregate store.

Each test runs twice: on one node with one shard (the default), and with ``REDIS_SHARDS=8`` on
a real 3-primary Valkey cluster (``REDIS_CLUSTER=true``), where every read merges the shards.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from rest_framework.test import APIClient

from stats.store import AggregateStore, servers
from tests.event_helpers import (
    ALICE_BODY,
    BY_DATE_BODY,
    BY_DATE_EXACT_TEXT,
    CAROL_BODY,
    GLOBAL_BODY,
    TOP_SPENDERS_BODY,
    apply_events,
    day,
    fill_with_refunds,
    refund,
)
from tests.ingestion_helpers import make_order
from tests.product_helpers import fill_with_products

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

WRITE_TIME = datetime(2025, 9, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2025, 9, 1, 12, 0, 30, tzinfo=UTC)


@pytest.fixture(params=["node", "cluster"])
def clocked_store(request, settings, key_prefix: str) -> AggregateStore:
    """The real-Redis store with a fixed clock, so heartbeat and batch times are known."""
    if request.param == "cluster":
        settings.REDIS_SHARDS = 8
        client = request.getfixturevalue("live_redis_cluster")
    else:
        client = request.getfixturevalue("live_redis")
    return AggregateStore(
        client, prefix=key_prefix, clock=WRITE_TIME.timestamp, shards=settings.REDIS_SHARDS
    )


@pytest.fixture
def redis_nodes(clocked_store: AggregateStore) -> list[dict[str, Any]]:
    """How /health and /metrics describe the servers, from each primary's own INFO."""
    client = clocked_store.client
    if isinstance(client, RedisCluster):
        infos = [(p.name, client.info(target_nodes=p)) for p in client.get_primaries()]
    else:
        kwargs = client.connection_pool.connection_kwargs
        infos = [(f"{kwargs['host']}:{kwargs['port']}", client.info())]
    nodes = []
    for name, info in infos:
        nodes.append(
            {
                "node": name,
                "reachable": True,
                "version": f"valkey {info['valkey_version']}",
                "eviction_policy": info["maxmemory_policy"],
            }
        )
    return nodes


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    return NOW


@pytest.fixture
def filled(clocked_store: AggregateStore) -> AggregateStore:
    clocked_store.apply_orders(
        [
            make_order("O1", "alice", 29999, datetime(2025, 8, 9, 10, 15, tzinfo=UTC)),
            make_order("O2", "alice", 10000, datetime(2025, 8, 11, 8, 0, 0, 250000, tzinfo=UTC)),
            make_order("O3", "bob", 100000000001099, datetime(2025, 8, 9, 23, 59, 59, tzinfo=UTC)),
            make_order("O4", "carol", 40000, datetime(2025, 8, 11, 0, 0, tzinfo=UTC)),
            make_order("O5", "dave", 1, datetime(2025, 8, 11, 0, 0, tzinfo=UTC)),
            make_order("O6", "dave", 1, datetime(2025, 8, 11, 0, 0, 1, tzinfo=UTC)),
            make_order("O7", "dave", 1, datetime(2025, 8, 11, 0, 0, 2, tzinfo=UTC)),
        ]
    )
    return clocked_store


def test_user_stats_has_exact_money_and_utc_times(filled: AggregateStore, api: APIClient) -> None:
    response = api.get("/users/alice/stats")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.content == (
        b'{"user_id":"alice","order_count":2,"total_spend":399.99,"gross_spend":399.99,'
        b'"refunded":0.00,"cancelled_orders":0,'
        b'"average_order_value":200.00,"first_order_at":"2025-08-09T10:15:00Z",'
        b'"last_order_at":"2025-08-11T08:00:00.250000Z","currency":"USD"}'
    )


def test_user_average_is_rounded_half_up_to_cents(filled: AggregateStore, api: APIClient) -> None:
    filled.apply_orders([make_order("O8", "erin", 1), make_order("O9", "erin", 2)])

    assert api.get("/users/erin/stats").json()["average_order_value"] == 0.02


def test_unknown_user_is_404_with_detail(filled: AggregateStore, api: APIClient) -> None:
    response = api.get("/users/zoe/stats")

    assert response.status_code == 404
    assert response.json() == {"detail": "No orders recorded for user zoe."}


def test_user_id_with_reserved_characters_is_found_when_percent_encoded(
    clocked_store: AggregateStore, api: APIClient
) -> None:
    clocked_store.apply_orders([make_order("O1", "a/b c?é", 500)])

    response = api.get("/users/a%2Fb%20c%3F%C3%A9/stats")

    assert response.status_code == 200
    assert response.json()["user_id"] == "a/b c?é"


def test_global_stats_total_revenue_beyond_float_precision_is_exact(
    filled: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/global")

    assert response.status_code == 200
    assert response.content == (
        b'{"total_orders":7,"total_revenue":1000000000811.01,"gross_revenue":1000000000811.01,'
        b'"refunded":0.00,"cancelled_orders":0,"unique_users":4,'
        b'"average_order_value":142857142973.00,"currency":"USD"}'
    )


def test_top_spenders_highest_first_with_rank(filled: AggregateStore, api: APIClient) -> None:
    response = api.get("/stats/top-spenders?limit=3")

    assert response.status_code == 200
    assert response.json() == [
        {"rank": 1, "user_id": "bob", "total_spend": 1000000000010.99},
        {"rank": 2, "user_id": "carol", "total_spend": 400.0},
        {"rank": 3, "user_id": "alice", "total_spend": 399.99},
    ]
    assert b'"total_spend":1000000000010.99' in response.content


def test_top_buyers_ties_are_broken_by_user_id_ascending(
    filled: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/top-buyers?limit=4")

    assert response.status_code == 200
    assert response.json() == [
        {"rank": 1, "user_id": "dave", "order_count": 3},
        {"rank": 2, "user_id": "alice", "order_count": 2},
        {"rank": 3, "user_id": "bob", "order_count": 1},
        {"rank": 4, "user_id": "carol", "order_count": 1},
    ]


def test_top_lists_default_to_five(clocked_store: AggregateStore, api: APIClient) -> None:
    clocked_store.apply_orders([make_order(f"O{i}", f"U{i:02d}", 100 + i) for i in range(8)])

    spenders = api.get("/stats/top-spenders").json()
    buyers = api.get("/stats/top-buyers").json()

    assert [s["user_id"] for s in spenders] == ["U07", "U06", "U05", "U04", "U03"]
    assert [b["user_id"] for b in buyers] == ["U00", "U01", "U02", "U03", "U04"]


def test_by_date_lists_every_day_inclusive_with_zero_days(
    filled: AggregateStore, api: APIClient
) -> None:
    response = api.get("/stats/by-date?start_date=2025-08-08&end_date=2025-08-12")

    assert response.status_code == 200
    assert response.json() == {
        "start_date": "2025-08-08",
        "end_date": "2025-08-12",
        "interval": "day",
        "currency": "USD",
        "total_orders": 7,
        "total_revenue": 1000000000811.01,
        "gross_revenue": 1000000000811.01,
        "refunded": 0,
        "days": [
            day("2025-08-08", 0, 0, 0, 0),
            day("2025-08-09", 2, 1000000000310.98, 1000000000310.98, 0),
            day("2025-08-10", 0, 0, 0, 0),
            day("2025-08-11", 5, 500.03, 500.03, 0),
            day("2025-08-12", 0, 0, 0, 0),
        ],
    }
    assert b'"total_revenue":1000000000310.98' in response.content


def test_by_date_full_366_day_range_is_answered(filled: AggregateStore, api: APIClient) -> None:
    response = api.get("/stats/by-date?start_date=2024-08-11&end_date=2025-08-11")

    assert response.status_code == 200
    body = response.json()
    assert len(body["days"]) == 366
    assert body["days"][0]["date"] == "2024-08-11"
    assert body["days"][-1] == day("2025-08-11", 5, 500.03, 500.03, 0)
    assert body["total_orders"] == 7


def test_health_reports_redis_and_database(
    filled: AggregateStore, api: APIClient, frozen_now: datetime, redis_nodes: list[dict[str, Any]]
) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert isinstance(body.pop("redis_latency_ms"), float)
    assert body == {
        "status": "healthy",
        "redis": "connected",
        "redis_nodes": redis_nodes,
        "database": "connected",
        "timestamp": "2025-09-01T12:00:30Z",
    }
    assert "no-store" in response["Cache-Control"]


def health_body(response) -> dict:
    """The /health body without its latency (a timing: checked to be a number)."""
    body = response.json()
    assert isinstance(body.pop("redis_latency_ms"), float)
    return body


def test_health_shows_the_nodes_only_to_readers_of_the_stats(
    filled: AggregateStore,
    settings,
    frozen_now: datetime,
    redis_nodes: list[dict],
    client_as,
    analyst,
    customer,
) -> None:
    settings.STATS_API_AUTH = "token"
    anonymous = APIClient().get("/health")
    without = client_as(customer, "token").get("/health")
    bad_token = APIClient().get("/health", HTTP_AUTHORIZATION="Token not-a-token")
    reader = client_as(analyst, "token").get("/health")

    assert [r.status_code for r in (anonymous, without, bad_token, reader)] == [200] * 4
    basic = {
        "status": "healthy",
        "redis": "connected",
        "database": "connected",
        "timestamp": "2025-09-01T12:00:30Z",
    }
    for response in (anonymous, without, bad_token):
        assert health_body(response) == basic
    assert health_body(reader) == basic | {"redis_nodes": redis_nodes}


def test_health_over_plain_http_honours_no_token_where_https_is_required(
    filled: AggregateStore, settings, frozen_now: datetime, redis_nodes: list[dict], client_as,
    analyst,
) -> None:  # fmt: skip
    """/health is exempt from the HTTPS redirect (load balancers probe plain HTTP): a token
    sent there has travelled unencrypted, so it shows nothing more."""
    settings.STATS_API_AUTH = "token"
    settings.SECURE_SSL_REDIRECT = True
    client = client_as(analyst, "token")

    plain = client.get("/health")
    secure = client.get("/health", secure=True)

    assert "redis_nodes" not in plain.json()
    assert secure.json()["redis_nodes"] == redis_nodes


def test_health_and_metrics_read_info_at_most_once_a_minute(
    filled: AggregateStore, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two INFO per primary on every call of an open endpoint would cost every primary work
    for nothing: both endpoints share one answer per process for a minute."""
    calls: list[str] = []
    original = servers._server_info

    def counted(client, name, target=None):
        calls.append(name)
        return original(client, name, target)

    now = [1000.0]
    monkeypatch.setattr(servers, "_server_info", counted)
    monkeypatch.setattr(servers.ServersMixin, "monotonic", staticmethod(lambda: now[0]))
    primaries = 3 if filled.cluster else 1

    statuses = [api.get(path).status_code for path in ("/health", "/metrics", "/health")]
    read_once = len(calls)
    now[0] += 60
    api.get("/health")
    still = len(calls)
    now[0] += 0.001
    api.get("/health")

    assert statuses == [200, 200, 200]
    assert (read_once, still, len(calls)) == (primaries, primaries, 2 * primaries)


def test_metrics_json_has_totals_and_ingestion_counters(
    filled: AggregateStore, api: APIClient, frozen_now: datetime, redis_nodes: list[dict[str, Any]]
) -> None:
    filled.apply_batch([], received=2)
    filled.record_rejections(
        {"m1": ("invalid_json",), "m2": ("value_mismatch",), "m3": ("value_mismatch",)}
    )
    filled.heartbeat()
    filled.apply_orders(
        [make_order("O1", "alice", 29999, datetime(2025, 8, 9, 10, 15, tzinfo=UTC))]
    )

    response = api.get("/metrics")

    assert response.status_code == 200
    assert response.json() == {
        "total_orders": 7,
        "total_revenue": 1000000000811.01,
        "gross_revenue": 1000000000811.01,
        "refunded": 0,
        "cancelled_orders": 0,
        "unique_users": 4,
        "average_order_value": 142857142973.00,
        "timestamp": "2025-09-01T12:00:30Z",
        "ingestion": {
            "received": 10,
            "applied": 7,
            "duplicates": 1,
            "rejected": 3,
            "rejected_by_code": {"invalid_json": 1, "value_mismatch": 2},
            "events_received": 0,
            "events_applied": 0,
            "events_duplicates": 0,
            "events_waiting": 0,
            "events_orphaned": 0,
            "last_batch_at": "2025-09-01T12:00:00Z",
            "consumer_heartbeat_at": "2025-09-01T12:00:00Z",
            "consumer_lag_seconds": 30.0,
        },
        "redis": redis_nodes,
        "currency": "USD",
    }
    assert "no-store" in response["Cache-Control"]


def test_by_date_reads_one_redis_round_trip(
    filled: AggregateStore, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    if filled.cluster:
        pytest.skip("on a cluster the one pipeline is a round trip per node")
    calls: list[str] = []
    original_execute = redis.client.Pipeline.execute
    original_command = redis.Redis.execute_command

    def pipeline_execute(self, *args, **kwargs):
        calls.append("pipeline: " + " ".join(str(c[0][0]) for c in self.command_stack))
        return original_execute(self, *args, **kwargs)

    def command(self: redis.Redis, *args: object, **kwargs: object) -> object:
        calls.append(str(args[0]))
        return original_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline_execute)
    monkeypatch.setattr(redis.Redis, "execute_command", command)

    response = api.get("/stats/by-date?start_date=2024-08-11&end_date=2025-08-11")

    assert response.status_code == 200
    # One round trip: one HMGET of the days hash, then the generation check.
    assert calls == ["pipeline: HMGET GET"]
    assert date(2025, 8, 11).isoformat() in response.content.decode()


# --- Refunds and cancellations: net figures, refunds on their own day, ranking by net ---------
@pytest.fixture
def refunded(clocked_store: AggregateStore) -> AggregateStore:
    return fill_with_refunds(clocked_store)


def test_every_stats_endpoint_serves_net_figures_with_refunds_in_the_data(
    refunded: AggregateStore, api: APIClient
) -> None:
    responses = {
        path: api.get(path)
        for path in (
            "/stats/global",
            "/users/alice/stats",
            "/users/carol/stats",
            "/stats/top-spenders?limit=10",
            "/stats/by-date?start_date=2025-08-08&end_date=2025-08-12",
        )
    }

    assert {path: r.status_code for path, r in responses.items()} == dict.fromkeys(responses, 200)
    assert [r.json() for r in responses.values()] == [
        GLOBAL_BODY,
        ALICE_BODY,
        CAROL_BODY,
        TOP_SPENDERS_BODY,
        BY_DATE_BODY,
    ]
    assert (
        BY_DATE_EXACT_TEXT
        in responses["/stats/by-date?start_date=2025-08-08&end_date=2025-08-12"].content
    )


def test_metrics_json_has_net_revenue_and_the_event_counters(
    refunded: AggregateStore,
    api: APIClient,
    frozen_now: datetime,
    redis_nodes: list[dict[str, Any]],
) -> None:
    alice_first = make_order("O1", "alice", 29999, datetime(2025, 8, 9, 10, 15, tzinfo=UTC))
    apply_events(
        refunded, [refund("E1", alice_first, 5000, datetime(2025, 8, 10, 9, 0, tzinfo=UTC))]
    )
    refunded.record_rejections({"m1": ("refund_exceeds_order",)})

    response = api.get("/metrics")

    assert response.status_code == 200
    assert response.json() == {
        key: GLOBAL_BODY[key]
        for key in ("total_orders", "total_revenue", "gross_revenue", "refunded")
    } | {
        "cancelled_orders": 1,
        "unique_users": 4,
        "average_order_value": 142857142973.00,
        "timestamp": "2025-09-01T12:00:30Z",
        "ingestion": {
            "received": 11,
            "applied": 7,
            "duplicates": 0,
            "rejected": 1,
            "rejected_by_code": {"refund_exceeds_order": 1},
            "events_received": 4,
            "events_applied": 3,
            "events_duplicates": 1,
            "events_waiting": 0,
            "events_orphaned": 0,
            "last_batch_at": "2025-09-01T12:00:00Z",
            "consumer_heartbeat_at": "2025-09-01T12:00:00Z",
            "consumer_lag_seconds": 30.0,
        },
        "redis": redis_nodes,
        "currency": "USD",
    }


# --- Products: net of refunds by items and cancellations, merged over the shards --------------
@pytest.fixture
def with_products(clocked_store: AggregateStore) -> AggregateStore:
    return fill_with_products(clocked_store)


def test_both_products_endpoints_serve_net_figures_merged_over_the_shards(
    with_products: AggregateStore, api: APIClient
) -> None:
    paths = (
        "/stats/top-products?limit=10",
        "/stats/top-products?by=units&start_date=2025-08-12&end_date=2025-08-12",
        "/products/P1/stats",
        "/products/nope/stats",
    )
    responses = [api.get(path) for path in paths]

    assert [r.status_code for r in responses] == [200, 200, 200, 404]
    usd = {"currency": "USD"}
    assert [r.json() for r in responses] == [
        [{"rank": 1, "product_id": "P1", "units": 1, "revenue": 10.0} | usd,
         {"rank": 2, "product_id": "P3", "units": 3, "revenue": 3.33} | usd,
         {"rank": 3, "product_id": "P2", "units": 0, "revenue": 0} | usd],
        [{"rank": 1, "product_id": "P2", "units": -1, "revenue": -5.5} | usd,
         {"rank": 2, "product_id": "P1", "units": -2, "revenue": -20.0} | usd],
        {"product_id": "P1", "units": 1, "revenue": 10.0} | usd,
        {"detail": "No orders recorded with product nope."},
    ]  # fmt: skip


def test_top_products_over_a_range_read_one_redis_round_trip(
    with_products: AggregateStore, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    if with_products.cluster:
        pytest.skip("on a cluster the one pipeline is a round trip per node")
    calls: list[str] = []
    original_execute = redis.client.Pipeline.execute

    def pipeline_execute(self, *args, **kwargs):
        calls.append(" ".join(str(c[0][0]) for c in self.command_stack))
        return original_execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline_execute)

    response = api.get("/stats/top-products?start_date=2025-08-09&end_date=2025-08-12")

    assert response.status_code == 200
    assert calls == [" ".join(["HGETALL"] * 4 + ["GET"])]  # four days, then the generation
