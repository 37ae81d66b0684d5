"""The database down: /health names it, and token authentication answers 503, never a 500."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_health_names_the_database_as_the_failed_dependency(
    fake_store, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr("stats.api.views.connection.cursor", refuse)

    response = api.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["redis"], body["database"]) == (
        "unhealthy",
        "connected",
        "unavailable",
    )
    assert isinstance(body["redis_latency_ms"], float)


@pytest.mark.django_db
def test_token_auth_with_the_database_down_is_a_503_not_a_500(
    fake_store, api: APIClient, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.STATS_API_AUTH = "token"

    def refuse(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr("rest_framework.authtoken.models.Token.objects.select_related", refuse)

    response = api.get("/stats/global", HTTP_AUTHORIZATION="Token abc123")

    assert response.status_code == 503
    assert response.json() == {"detail": "The database is unavailable; try again shortly."}


def test_health_with_a_token_and_the_database_down_still_answers_its_fields(
    fake_store, api: APIClient, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is looked up in the database: when that is down, /health still says so in
    its own fields, for an anonymous caller."""
    settings.STATS_API_AUTH = "token"

    def refuse(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr("rest_framework.authtoken.models.Token.objects.select_related", refuse)
    monkeypatch.setattr("stats.api.views.connection.cursor", refuse)

    response = api.get("/health", HTTP_AUTHORIZATION="Token abc123")

    assert response.status_code == 503
    body = response.json()
    assert body.pop("timestamp") and isinstance(body.pop("redis_latency_ms"), float)
    assert body == {"status": "unhealthy", "redis": "connected", "database": "unavailable"}
