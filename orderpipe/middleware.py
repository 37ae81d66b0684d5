"""Request logging (one line per request, ``X-Process-Time`` on every response), and the
browser-session middlewares limited to the paths that use them."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

logger = logging.getLogger("orderpipe.requests")


class RequestLogMiddleware:
    """Outermost middleware, so the duration covers the whole stack and every status is seen."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.clock = time.perf_counter

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = self.clock()
        response = self.get_response(request)
        elapsed_ms = (self.clock() - started) * 1000
        response["X-Process-Time"] = f"{elapsed_ms:.2f}ms"
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        logger.log(
            level,
            "%s %s %s %.2fms",
            request.method,
            request.get_full_path(),
            response.status_code,
            elapsed_ms,
        )
        return response


def uses_browser_session(request: HttpRequest) -> bool:
    """Whether this request needs sessions, ``request.user`` and messages: the admin and DRF's
    login pages always do, every path does with ``STATS_API_AUTH=session``.

    Otherwise the API authenticates by token or not at all, and DRF never reads Django's
    session or user, so skipping those middlewares there saves their work on every API request
    (about a tenth of one) and changes no answer. A Django view added later that reads
    ``request.session`` or ``request.user`` outside these paths fails loudly (no attribute),
    it is never treated as logged in.
    """
    return settings.STATS_API_AUTH == "session" or request.path_info.startswith(
        settings.BROWSER_SESSION_PATHS
    )


class _BrowserSessionOnly(MiddlewareMixin):
    """Runs the wrapped Django middleware (the next class in the MRO) only where
    ``uses_browser_session`` says so."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if uses_browser_session(request):
            return super().__call__(request)
        return self.get_response(request)


class SessionMiddleware(_BrowserSessionOnly, sessions.SessionMiddleware):
    pass


class AuthenticationMiddleware(_BrowserSessionOnly, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserSessionOnly, messages.MessageMiddleware):
    pass
