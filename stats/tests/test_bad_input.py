"""Every bad parameter is a 400 whose JSON names the parameter and the rule; never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from stats.store import AggregateStore

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/stats/top-spenders", "/stats/top-buyers"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Ensure this value is greater than or equal to 1."),
        ("-1", "Ensure this value is greater than or equal to 1."),
        ("101", "Ensure this value is less than or equal to 100."),
        ("abc", "A valid integer is required."),
        ("", "A valid integer is required."),
        ("2.5", "A valid integer is required."),
        ("9" * 400, "Ensure this value is less than or equal to 100."),
    ],
)
def test_bad_limit_is_400_naming_limit(
    fake_store: AggregateStore, api: APIClient, path: str, value: str, message: str
) -> None:
    response = api.get(path, {"limit": value})

    assert response.status_code == 400
    assert response.json() == {"limit": [message]}


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(fake_store: AggregateStore, api: APIClient, limit: str) -> None:
    assert api.get("/stats/top-spenders", {"limit": limit}).json() == []


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (
            {"start_date": "2025-02-30", "end_date": "2025-03-01"},
            {"start_date": ["2025-02-30 is not a calendar date."]},
        ),
        (
            {"start_date": "2025/01/01", "end_date": "2025-01-02"},
            {"start_date": ["Must be a date in the form YYYY-MM-DD (got '2025/01/01')."]},
        ),
        (
            {"start_date": "2025-01-01", "end_date": "20250102"},
            {"end_date": ["Must be a date in the form YYYY-MM-DD (got '20250102')."]},
        ),
        (
            {"start_date": "2025-1-1", "end_date": "2025-01-02"},
            {"start_date": ["Must be a date in the form YYYY-MM-DD (got '2025-1-1')."]},
        ),
        ({"end_date": "2025-01-02"}, {"start_date": ["This field is required."]}),
        (
            {"start_date": "", "end_date": "2025-01-02"},
            {"start_date": ["Must be a date in the form YYYY-MM-DD (got '')."]},
        ),
        ({"start_date": "2025-01-02"}, {"end_date": ["This field is required."]}),
        (
            {},
            {"start_date": ["This field is required."], "end_date": ["This field is required."]},
        ),
        (
            {"start_date": "2025-03-01", "end_date": "2025-02-28"},
            {"end_date": ["Must not be before start_date (2025-03-01)."]},
        ),
        (
            {"start_date": "2024-01-01", "end_date": "2025-02-03"},
            {"end_date": ["The range may span at most 366 days; this one spans 400."]},
        ),
        (
            {"start_date": "2024-01-01", "end_date": "2025-01-01"},
            {"end_date": ["The range may span at most 366 days; this one spans 367."]},
        ),
    ],
)
def test_bad_date_range_is_400_naming_the_parameter(
    fake_store: AggregateStore, api: APIClient, query: dict[str, str], body: dict[str, Any]
) -> None:
    response = api.get("/stats/by-date", query)

    assert response.status_code == 400
    assert response.json() == body


def test_range_limit_follows_the_setting(
    fake_store: AggregateStore, api: APIClient, settings
) -> None:
    settings.STATS_MAX_RANGE_DAYS = 7

    too_long = api.get("/stats/by-date", {"start_date": "2025-01-01", "end_date": "2025-01-08"})
    longest = api.get("/stats/by-date", {"start_date": "2025-01-01", "end_date": "2025-01-07"})

    assert too_long.json() == {"end_date": ["The range may span at most 7 days; this one spans 8."]}
    assert longest.status_code == 200


def test_single_day_range_is_allowed(fake_store: AggregateStore, api: APIClient) -> None:
    response = api.get("/stats/by-date", {"start_date": "2024-02-29", "end_date": "2024-02-29"})

    assert response.json() == {
        "start_date": "2024-02-29",
        "end_date": "2024-02-29",
        "interval": "day",
        "currency": "USD",
        "total_orders": 0,
        "total_revenue": 0,
        "gross_revenue": 0,
        "refunded": 0,
        "days": [
            {
                "date": "2024-02-29",
                "total_orders": 0,
                "total_revenue": 0,
                "gross_revenue": 0,
                "refunded": 0,
            }
        ],
    }


def test_over_long_user_id_is_400_naming_user_id(
    fake_store: AggregateStore, api: APIClient
) -> None:
    response = api.get("/users/" + "u" * 129 + "/stats")

    assert response.status_code == 400
    assert response.json() == {"user_id": ["Must be at most 128 characters long."]}


def test_longest_user_id_is_looked_up(fake_store: AggregateStore, api: APIClient) -> None:
    assert api.get("/users/" + "u" * 128 + "/stats").status_code == 404


@pytest.mark.parametrize(
    "path", ["/stats/global/", "/users/U1/stats/", "/nowhere", "/users//stats", "/stats"]
)
def test_unknown_paths_are_json_404(fake_store: AggregateStore, api: APIClient, path: str) -> None:
    response = api.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    ("path", "formats"),
    [
        ("/stats/global", "api, json"),
        ("/health", "api, json"),
        ("/metrics", "api, json, openmetrics, prometheus"),
    ],
)
def test_unknown_format_is_400_naming_format(
    fake_store: AggregateStore, api: APIClient, path: str, formats: str
) -> None:
    response = api.get(path, {"format": "xml"})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"format": [f"Must be one of: {formats}."]}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writes_are_405(fake_store: AggregateStore, api: APIClient, method: str) -> None:
    response = getattr(api, method)("/stats/global")

    assert response.status_code == 405
    assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.'}


def test_empty_format_is_400_not_silently_json(fake_store: AggregateStore, api: APIClient) -> None:
    response = api.get("/metrics?format=")

    assert response.status_code == 400
    assert response.json() == {"format": ["Must be one of: api, json, openmetrics, prometheus."]}


@pytest.mark.django_db
def test_schema_and_docs_are_served_without_a_cdn(api: APIClient) -> None:
    schema = api.get("/api/schema", HTTP_ACCEPT="application/json")
    docs = api.get("/api/docs")
    bundle = api.get("/api/docs/assets/swagger-ui-bundle.js")

    assert schema.status_code == 200
    assert set(schema.json()["paths"]) == {
        "/",
        "/health",
        "/metrics",
        "/orders/{order_id}",
        "/products/{product_id}/stats",
        "/stats/by-date",
        "/stats/by-hour",
        "/stats/global",
        "/stats/top-buyers",
        "/stats/top-products",
        "/stats/top-spenders",
        "/users/{user_id}/orders",
        "/users/{user_id}/stats",
    }
    assert docs.status_code == 200
    assert b'src="/api/docs/assets/swagger-ui-bundle.js"' in docs.content
    assert b"cdn" not in docs.content.lower()
    assert bundle.status_code == 200


def test_api_root_links_every_endpoint(api: APIClient) -> None:
    response = api.get("/")

    assert response.status_code == 200
    assert response.json() == {
        "user_stats": "http://testserver/users/{user_id}/stats",
        "order": "http://testserver/orders/{order_id}",
        "user_orders": "http://testserver/users/{user_id}/orders",
        "global_stats": "http://testserver/stats/global",
        "top_spenders": "http://testserver/stats/top-spenders?limit=5",
        "top_buyers": "http://testserver/stats/top-buyers?limit=5",
        "by_date": "http://testserver/stats/by-date?start_date={YYYY-MM-DD}&end_date={YYYY-MM-DD}",
        "top_products": "http://testserver/stats/top-products?limit=5&by=revenue",
        "product_stats": "http://testserver/products/{product_id}/stats",
        "by_hour": "http://testserver/stats/by-hour",
        "health": "http://testserver/health",
        "metrics": "http://testserver/metrics",
        "schema": "http://testserver/api/schema",
        "docs": "http://testserver/api/docs",
    }


def test_browser_gets_the_browsable_api(fake_store: AggregateStore, api: APIClient) -> None:
    response = api.get("/stats/global", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert b"&quot;total_revenue&quot;: 0.00" in response.content
