"""Optional authentication (STATS_API_AUTH) and throttling (STATS_THROTTLE_RATE)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from stats.store import AggregateStore

pytestmark = pytest.mark.django_db

STATS_PATHS = [
    "/users/U1/stats",
    "/stats/global",
    "/stats/top-spenders",
    "/stats/top-buyers",
    "/stats/by-date?start_date=2025-01-01&end_date=2025-01-02",
    "/metrics",
]


@pytest.fixture
def user() -> User:
    return User.objects.create_user("analyst", password="a-long-test-password")


@pytest.mark.parametrize("path", STATS_PATHS)
def test_stats_are_open_when_auth_is_off(
    fake_store: AggregateStore, api: APIClient, settings, path: str
) -> None:
    settings.STATS_API_AUTH = "none"

    assert api.get(path).status_code in (200, 404)


@pytest.mark.parametrize("path", STATS_PATHS)
def test_token_mode_refuses_anonymous_with_401(
    fake_store: AggregateStore, api: APIClient, settings, path: str
) -> None:
    settings.STATS_API_AUTH = "token"

    response = api.get(path)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("path", STATS_PATHS)
def test_token_mode_accepts_a_valid_token(
    fake_store: AggregateStore, api: APIClient, settings, user: User, path: str
) -> None:
    settings.STATS_API_AUTH = "token"
    token = Token.objects.create(user=user)

    response = api.get(path, HTTP_AUTHORIZATION=f"Token {token.key}")

    assert response.status_code in (200, 404)


def test_token_mode_rejects_a_wrong_token(
    fake_store: AggregateStore, api: APIClient, settings
) -> None:
    settings.STATS_API_AUTH = "token"

    response = api.get("/stats/global", HTTP_AUTHORIZATION="Token not-a-real-token")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_session_mode_refuses_anonymous_and_accepts_a_logged_in_user(
    fake_store: AggregateStore, api: APIClient, settings, user: User
) -> None:
    settings.STATS_API_AUTH = "session"

    refused = api.get("/stats/global")
    api.login(username="analyst", password="a-long-test-password")
    accepted = api.get("/stats/global")

    assert refused.status_code == 403
    assert refused.json() == {"detail": "Authentication credentials were not provided."}
    assert accepted.status_code == 200


@pytest.mark.parametrize("mode", ["token", "session"])
@pytest.mark.parametrize("path", ["/health", "/", "/api/schema", "/api/docs"])
def test_health_root_and_docs_stay_open_when_auth_is_on(
    fake_store: AggregateStore, api: APIClient, settings, mode: str, path: str
) -> None:
    settings.STATS_API_AUTH = mode

    assert api.get(path).status_code == 200


def test_throttling_is_off_by_default(fake_store: AggregateStore, api: APIClient, settings) -> None:
    settings.STATS_THROTTLE_RATE = ""

    assert {api.get("/stats/global").status_code for _ in range(20)} == {200}


def test_throttling_limits_requests_per_client_but_not_health(
    fake_store: AggregateStore, api: APIClient, settings
) -> None:
    settings.STATS_THROTTLE_RATE = "3/minute"

    statuses = [api.get("/stats/global").status_code for _ in range(5)]
    throttled = api.get("/stats/top-buyers")

    assert statuses == [200, 200, 200, 429, 429]
    assert throttled.status_code == 429
    assert throttled.json()["detail"].startswith("Request was throttled.")
    assert int(throttled["Retry-After"]) > 0
    assert {api.get("/health").status_code for _ in range(5)} == {200}


def test_a_forged_forwarded_for_does_not_escape_the_throttle(
    fake_store: AggregateStore, api: APIClient, settings
) -> None:
    settings.STATS_THROTTLE_RATE = "2/minute"  # NUM_PROXIES is 0: the socket address counts

    statuses = [
        api.get("/stats/global", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code for i in range(4)
    ]

    assert statuses == [200, 200, 429, 429]
