"""The request log (one line per request: method, path, status, ms; X-Process-Time), and the
browser-session middlewares that run only where sessions are used."""

from __future__ import annotations

import logging
import re

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from rest_framework.test import APIClient

from orderpipe.middleware import (
    AuthenticationMiddleware,
    MessageMiddleware,
    RequestLogMiddleware,
    SessionMiddleware,
)

LINE = re.compile(r"^(GET|POST) (\S+) (\d{3}) (\d+\.\d{2})ms$")


def request_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "orderpipe.requests"]


@pytest.mark.django_db
def test_each_request_is_logged_once_at_info_with_its_duration(
    fake_store, api: APIClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="orderpipe.requests"):
        response = api.get("/stats/top-buyers?limit=2")

    [record] = request_log(caplog)
    match = LINE.match(record.getMessage())
    assert record.levelno == logging.INFO
    assert match is not None
    assert match.groups()[:3] == ("GET", "/stats/top-buyers?limit=2", "200")
    assert re.fullmatch(r"\d+\.\d{2}ms", response["X-Process-Time"])


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "status"), [("/stats/top-buyers?limit=0", 400), ("/nope", 404)])
def test_client_errors_are_logged_at_info_and_timed(
    fake_store, api: APIClient, caplog: pytest.LogCaptureFixture, path: str, status: int
) -> None:
    with caplog.at_level(logging.INFO, logger="orderpipe.requests"):
        response = api.get(path)

    [record] = request_log(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(f"GET {path} {status} ")
    assert "X-Process-Time" in response


def test_server_errors_are_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    middleware = RequestLogMiddleware(lambda request: HttpResponse(status=500))

    with caplog.at_level(logging.INFO, logger="orderpipe.requests"):
        response = middleware(RequestFactory().post("/x"))

    [record] = request_log(caplog)
    assert record.levelno == logging.ERROR
    match = LINE.match(record.getMessage())
    assert match is not None
    assert match.groups()[:3] == ("POST", "/x", "500")
    assert response["X-Process-Time"].endswith("ms")


def test_duration_is_measured_around_the_whole_stack(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter([10.0, 10.25])

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    middleware = RequestLogMiddleware(view)
    middleware.clock = lambda: next(ticks)

    with caplog.at_level(logging.INFO, logger="orderpipe.requests"):
        response = middleware(RequestFactory().get("/stats/global"))

    assert response["X-Process-Time"] == "250.00ms"
    assert request_log(caplog)[0].getMessage() == "GET /stats/global 200 250.00ms"


def test_logged_path_is_percent_encoded_so_one_request_is_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    middleware = RequestLogMiddleware(lambda request: HttpResponse())

    with caplog.at_level(logging.INFO, logger="orderpipe.requests"):
        middleware(RequestFactory().get("/users/a%0Ab/stats"))

    message = request_log(caplog)[0].getMessage()
    assert "\n" not in message
    assert message.startswith("GET /users/a%0Ab/stats 200 ")


def browser_state(path: str) -> tuple[bool, bool, bool]:
    """Whether the session, user and messages middlewares ran for a GET of ``path``."""
    seen: list[tuple[bool, bool, bool]] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(
            (hasattr(request, "session"), hasattr(request, "user"), hasattr(request, "_messages"))
        )
        return HttpResponse()

    chain = SessionMiddleware(AuthenticationMiddleware(MessageMiddleware(view)))
    chain(RequestFactory().get(path))
    return seen[0]


@pytest.mark.parametrize("mode", ["none", "token"])
@pytest.mark.parametrize(
    "path", ["/stats/global", "/users/U1/stats", "/metrics", "/", "/api/schema", "/nope"]
)
def test_api_paths_skip_sessions_when_the_api_does_not_use_them(
    settings, mode: str, path: str
) -> None:
    settings.STATS_API_AUTH = mode

    assert browser_state(path) == (False, False, False)


@pytest.mark.parametrize("mode", ["none", "token", "session"])
@pytest.mark.parametrize("path", ["/admin/", "/admin", "/admin/dashboard/", "/api-auth/login/"])
def test_admin_and_login_pages_always_get_sessions(settings, mode: str, path: str) -> None:
    settings.STATS_API_AUTH = mode

    assert browser_state(path) == (True, True, True)


def test_session_mode_gives_every_path_its_session(settings) -> None:
    settings.STATS_API_AUTH = "session"

    assert browser_state("/stats/global") == (True, True, True)


@pytest.mark.django_db
def test_api_answers_keep_the_security_headers(fake_store, api: APIClient) -> None:
    response = api.get("/stats/global")

    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Set-Cookie" not in response
