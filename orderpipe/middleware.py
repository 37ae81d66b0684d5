"""Request logging: one line per request and an ``X-Process-Time`` header on every response."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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
