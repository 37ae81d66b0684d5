"""Optional authentication (STATS_API_AUTH), the stats.view_stats permission, throttling.

Every stats and orders path is asserted with its exact status: a user U1 exists in the store
and the ledger holds ORD1000 of U100, so a route that answered 404 (deleted, renamed) would
fail here rather than pass as "not refused".
"""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from rest_framework.test import APIClient

from orderpipe.api.access import StatsAccess
from orders.tests.conftest import accept, body_of, valid_doc
from stats.models import VIEW_STATS
from stats.store import AggregateStore
from tests.ingestion_helpers import make_order

pytestmark = pytest.mark.django_db

PROTECTED_PATHS = [
    "/users/U1/stats",
    "/stats/global",
    "/stats/top-spenders",
    "/stats/top-buyers",
    "/stats/by-date?start_date=2025-01-01&end_date=2025-01-02",
    "/stats/top-products",
    "/products/P001/stats",
    "/metrics",
    # The orders API (orders/api/) exposes orders too: the same rules.
    "/orders/ORD1000",
    "/users/U100/orders",
]
NO_PERMISSION = {"detail": "Reading statistics needs the stats.view_stats permission."}


@pytest.fixture
def store(fake_store: AggregateStore) -> AggregateStore:
    fake_store.apply_orders([make_order("O1", "U1", 1999)], received=1)
    accept(body_of(valid_doc()))  # ORD1000 of U100 in the ledger
    return fake_store


def test_the_permission_exists_for_the_admin_to_grant(analyst: User) -> None:
    permission = Permission.objects.get(codename="view_stats")
    assert (permission.content_type.app_label, permission.name) == (
        "stats",
        "Can view order statistics and revenue",
    )
    assert analyst.has_perm(VIEW_STATS)
    assert StatsAccess.message == NO_PERMISSION["detail"]


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_stats_are_open_when_auth_is_off(
    store: AggregateStore, api: APIClient, settings, path: str
) -> None:
    settings.STATS_API_AUTH = "none"

    assert api.get(path).status_code == 200


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_token_mode_refuses_anonymous_with_401(
    store: AggregateStore, api: APIClient, settings, path: str
) -> None:
    settings.STATS_API_AUTH = "token"

    response = api.get(path)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_session_mode_refuses_anonymous_with_403(
    store: AggregateStore, api: APIClient, settings, path: str
) -> None:
    settings.STATS_API_AUTH = "session"

    response = api.get(path)

    assert response.status_code == 403
    assert response.json() == {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize("mode", ["token", "session"])
@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_an_account_without_the_permission_gets_403(
    store: AggregateStore, settings, customer: User, client_as, mode: str, path: str
) -> None:
    settings.STATS_API_AUTH = mode
    client = client_as(customer, mode)

    response = client.get(path)

    assert response.status_code == 403
    assert response.json() == NO_PERMISSION


@pytest.mark.parametrize("mode", ["token", "session"])
@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_an_account_with_the_permission_gets_200(
    store: AggregateStore, settings, analyst: User, client_as, mode: str, path: str
) -> None:
    settings.STATS_API_AUTH = mode
    client = client_as(analyst, mode)

    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_a_superuser_has_the_permission(
    store: AggregateStore, settings, client_as, path: str
) -> None:
    settings.STATS_API_AUTH = "token"
    admin = User.objects.create_superuser("root", password="a-long-test-password")

    assert client_as(admin, "token").get(path).status_code == 200


def test_the_user_stats_body_is_served_to_a_permitted_user(
    store: AggregateStore, settings, analyst: User, client_as
) -> None:
    settings.STATS_API_AUTH = "token"

    response = client_as(analyst, "token").get("/users/U1/stats")

    assert response.json() == {
        "user_id": "U1",
        "order_count": 1,
        "total_spend": 19.99,
        "gross_spend": 19.99,
        "refunded": 0,
        "cancelled_orders": 0,
        "average_order_value": 19.99,
        "first_order_at": "2025-08-09T10:15:00Z",
        "last_order_at": "2025-08-09T10:15:00Z",
        "currency": "USD",
    }


def test_token_mode_rejects_a_wrong_token(store: AggregateStore, api: APIClient, settings) -> None:
    settings.STATS_API_AUTH = "token"

    response = api.get("/stats/global", HTTP_AUTHORIZATION="Token not-a-real-token")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


@pytest.mark.parametrize("mode", ["token", "session"])
@pytest.mark.parametrize("path", ["/health", "/", "/api/schema", "/api/docs"])
def test_health_root_and_docs_stay_open_when_auth_is_on(
    store: AggregateStore, api: APIClient, settings, mode: str, path: str
) -> None:
    settings.STATS_API_AUTH = mode

    assert api.get(path).status_code == 200


def test_throttling_is_off_by_default(store: AggregateStore, api: APIClient, settings) -> None:
    settings.STATS_THROTTLE_RATE = ""

    assert {api.get("/stats/global").status_code for _ in range(20)} == {200}


def test_throttling_limits_requests_per_client_but_not_health(
    store: AggregateStore, api: APIClient, settings
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
    store: AggregateStore, api: APIClient, settings
) -> None:
    settings.STATS_THROTTLE_RATE = "2/minute"  # NUM_PROXIES is 0: the socket address counts

    statuses = [
        api.get("/stats/global", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code for i in range(4)
    ]

    assert statuses == [200, 200, 429, 429]


@pytest.mark.parametrize(("mode", "level"), [("none", logging.WARNING), ("token", logging.INFO)])
def test_the_consumer_says_who_may_read_the_apis_once_at_start(
    fake_redis,
    settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    level: int,
) -> None:
    """The consumer serves no API, but its log is the one operators watch: an open API is said
    there too, once, whatever it then does (here it stops at the SQS queue)."""
    from orders.management.commands import consume_orders

    settings.STATS_API_AUTH = mode
    monkeypatch.setattr(
        consume_orders.Command, "_ensure_queue", lambda self, consumer, options: consumer.stop.set()
    )
    with caplog.at_level(logging.INFO):
        call_command("consume_orders", "--once")

    said = [(r.name, r.levelno) for r in caplog.records if "STATS_API_AUTH=" in r.getMessage()]
    assert said == [("orderpipe.api.access", level)]


def test_requests_do_not_repeat_the_open_api_warning(
    store: AggregateStore, api: APIClient, settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.STATS_API_AUTH = "none"

    with caplog.at_level(logging.INFO):
        statuses = [api.get(path).status_code for path in PROTECTED_PATHS]

    assert set(statuses) == {200}
    assert [r for r in caplog.records if "STATS_API_AUTH" in r.getMessage()] == []
