"""Redis down (a private server, stopped): 503 JSON answers, never a 500, and recovery after its
restart. The database down is in stats/tests/test_database_down.py."""

from __future__ import annotations

import logging

import pytest
from rest_framework.test import APIClient

from devtools.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

STORE_PATHS = [
    "/users/U1/stats",
    "/stats/global",
    "/stats/top-spenders?limit=3",
    "/stats/top-buyers",
    "/stats/by-date?start_date=2025-01-01&end_date=2025-12-31",
    "/metrics",
    "/metrics?format=prometheus",
]


@pytest.fixture
def redis_down(settings, private_redis: RedisServer) -> RedisServer:
    """django-redis pointed at a Redis of this test with short timeouts, then stopped."""
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": private_redis.url,
            "OPTIONS": {
                **settings.CACHES["default"]["OPTIONS"],
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    }
    private_redis.stop()
    return private_redis


@pytest.mark.parametrize("path", STORE_PATHS)
def test_stats_answer_503_json_when_redis_is_down(
    redis_down: RedisServer, api: APIClient, path: str
) -> None:
    response = api.get(path)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "The statistics store (Redis) is unavailable; try again shortly."
    }
    assert response["Retry-After"] == "5"


def test_bad_parameters_are_still_400_when_redis_is_down(
    redis_down: RedisServer, api: APIClient
) -> None:
    assert api.get("/stats/top-buyers?limit=0").status_code == 400


def test_throttled_api_answers_503_not_500_when_redis_is_down(
    redis_down: RedisServer, api: APIClient, settings
) -> None:
    settings.STATS_THROTTLE_RATE = "100/minute"

    assert api.get("/stats/global").status_code == 503


def test_health_names_redis_as_the_failed_dependency(
    redis_down: RedisServer, api: APIClient
) -> None:
    response = api.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert body.pop("timestamp")
    assert body == {
        "status": "unhealthy",
        "redis": "unavailable",
        "redis_latency_ms": None,
        "redis_nodes": [],
        "database": "connected",
    }
    assert "no-store" in response["Cache-Control"]


def test_api_recovers_when_redis_comes_back(redis_down: RedisServer, api: APIClient) -> None:
    assert api.get("/stats/global").status_code == 503

    redis_down.start()

    assert api.get("/stats/global").status_code == 200
    assert api.get("/health").json()["status"] == "healthy"


def test_503_is_logged_at_error_by_the_request_log(
    redis_down: RedisServer, api: APIClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="orderpipe.requests"):
        api.get("/stats/global")

    records = [r for r in caplog.records if r.name == "orderpipe.requests"]
    assert [(r.levelno, r.getMessage().split()[:3]) for r in records] == [
        (logging.ERROR, ["GET", "/stats/global", "503"])
    ]
