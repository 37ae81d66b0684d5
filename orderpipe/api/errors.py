"""DRF exception handling: a Redis outage is a 503 JSON answer, never a 500 page."""

from __future__ import annotations

import logging
from typing import Any

from django.db import Error as DjangoDatabaseError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from stats.store import StoreUnavailableError

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE_DETAIL = "The database is unavailable; try again shortly."
STORE_UNAVAILABLE_DETAIL = "The statistics store (Redis) is unavailable; try again shortly."


def _unavailable(detail: str) -> Response:
    response = Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoDatabaseError):
        # Token or session authentication (STATS_API_AUTH) reads the database.
        logger.warning("database unavailable: %s", exc)
        return _unavailable(DATABASE_UNAVAILABLE_DETAIL)
    if isinstance(exc, StoreUnavailableError):
        logger.warning("store unavailable: %s", exc)
        return _unavailable(STORE_UNAVAILABLE_DETAIL)
    return drf_exception_handler(exc, context)
