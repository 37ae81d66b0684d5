"""How both APIs answer errors, and how their OpenAPI schema describes them.

A database or Redis outage is a 503 JSON answer with ``Retry-After``, never a 500 page; every
other error keeps DRF's ``{"detail": ...}`` body, and a bad parameter DRF's
``{"<name>": ["<rule>", ...]}``. Only an outage (a connection lost or refused) is a 503: a
database error about the query itself, a value the database refuses say, is a bug, a 500 logged
with its traceback, not something a client should retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import InterfaceError, OperationalError
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from stats.store import LayoutError, StoreUnavailableError

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE_DETAIL = "The database is unavailable; try again shortly."
STORE_UNAVAILABLE_DETAIL = "The statistics store (Redis) is unavailable; try again shortly."


REPEATED_PARAMETER = "Give this parameter once."


def refuse_repeated(query: Any, names: Iterable[str]) -> None:
    """A 400 for each of ``names`` the query string gives more than once (``?limit=5&limit=x``):
    reading one of the values (Django's ``get`` takes the last) would answer a request that
    asked for something else."""
    repeated = {
        name: [ErrorDetail(REPEATED_PARAMETER, code="repeated")]
        for name in names
        if len(query.getlist(name)) > 1
    }
    if repeated:
        raise serializers.ValidationError(repeated)


def _unavailable(detail: str) -> Response:
    response = Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OperationalError | InterfaceError):
        # The connection is lost or refused, the server shutting down or busy: the orders API
        # reads the ledger, and token or session authentication (STATS_API_AUTH) reads the
        # database for the stats API too. Any other database error falls through to a 500.
        logger.warning("database unavailable: %s", exc)
        return _unavailable(DATABASE_UNAVAILABLE_DETAIL)
    if isinstance(exc, LayoutError):
        # Configured for other aggregates than Redis holds: say what to do, never zeros.
        logger.error("store refused: %s", exc)
        return _unavailable(f"The statistics store cannot be read by this process: {exc}")
    if isinstance(exc, StoreUnavailableError):
        logger.warning("store unavailable: %s", exc)
        return _unavailable(STORE_UNAVAILABLE_DETAIL)
    return drf_exception_handler(exc, context)


class DetailSerializer(serializers.Serializer[dict[str, str]]):
    detail = serializers.CharField()


def parameter_error(example_name: str, example: dict[str, list[str]]) -> OpenApiResponse:
    """The 400 shape: each offending parameter mapped to the rules it broke."""
    return OpenApiResponse(
        response={
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        description="A parameter is invalid: its name maps to the rules it broke.",
        examples=[OpenApiExample(example_name, value=example)],
    )


PROTECTED_ERRORS: dict[int, OpenApiResponse] = {
    401: OpenApiResponse(DetailSerializer, description="Authentication required (token mode)."),
    403: OpenApiResponse(
        DetailSerializer,
        description="Authentication required (session mode), or the stats.view_stats permission.",
    ),
    429: OpenApiResponse(DetailSerializer, description="Throttled (STATS_THROTTLE_RATE)."),
    503: OpenApiResponse(DetailSerializer, description="Redis is unavailable."),
}
