"""Renderers: JSON whose money is exact to the cent, and Prometheus / OpenMetrics exposition.

DRF's ``JSONEncoder`` turns a ``Decimal`` into a ``float`` (or a string), so 1000000000010.99
would come out as 1000000000010.9900 at best and 1000000000011.0 at worst. ``ExactJSONRenderer``
keeps DRF's encoder (and its C fast path, indenting for the browsable API, strict NaN
handling) and only swaps each ``Decimal`` for a token that is replaced by the number's exact
text after encoding. The token is random per render, so no user data can fake one.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from decimal import Decimal
from typing import Any

from prometheus_client.exposition import choose_encoder
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.utils.encoders import JSONEncoder


class _TokenDecimalEncoder(JSONEncoder):
    """DRF's encoder with every Decimal written as ``"<token><digits><token>"``."""

    def __init__(self, *args: Any, token: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token = token

    def default(self, obj: Any) -> Any:
        if isinstance(obj, Decimal):
            if not obj.is_finite():
                raise ValueError(f"Out of range Decimal value is not JSON compliant: {obj}")
            return f"{self.token}{obj:f}{self.token}"
        return super().default(obj)


class ExactJSONRenderer(JSONRenderer):
    """Emits ``Decimal`` values as exact JSON numbers (299.99, never 299.98999)."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        token = f"dec{secrets.token_hex(12)}"
        # Renderers are instantiated per request, so this instance attribute is not shared.
        self.encoder_class = functools.partial(_TokenDecimalEncoder, token=token)
        rendered = super().render(data, accepted_media_type, renderer_context)
        if token.encode() not in rendered:
            return rendered
        pattern = re.compile(
            rb'"' + token.encode() + rb"(-?[0-9]+(?:\.[0-9]+)?)" + token.encode() + b'"'
        )
        return pattern.sub(rb"\1", rendered)


def dumps_exact(data: Any) -> str:
    """Exact-money JSON text of ``data`` outside a DRF response (benchmarks, logs)."""
    return ExactJSONRenderer().render(data).decode()


class _ExpositionRenderer(BaseRenderer):
    """Renders a ``MetricsSnapshot`` through prometheus-client; anything else (errors) as JSON.

    The view hands over the snapshot itself rather than the JSON dict, so the exposition is
    built by prometheus-client's collector machinery from typed values, not by reformatting.
    """

    charset = "utf-8"

    def _accept_for_encoder(self, accept: str) -> str:
        """Only this renderer's own Accept entries count (DRF already chose it), so that
        prometheus-client's ``choose_encoder`` picks the matching format and version."""
        parts = [p for p in accept.split(",") if p.split(";")[0].strip() == self.media_type]
        return ",".join(parts) or self.media_type

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        from stats.api.metrics import MetricsSnapshot, exposition_registry

        renderer_context = renderer_context or {}
        response = renderer_context.get("response")
        if not isinstance(data, MetricsSnapshot):
            if response is not None:
                response["Content-Type"] = "application/json"
            return json.dumps(data, cls=JSONEncoder).encode() if data is not None else b""
        request = renderer_context.get("request")
        accept = request.META.get("HTTP_ACCEPT", "") if request is not None else ""
        encode, content_type = choose_encoder(self._accept_for_encoder(accept))
        if response is not None:
            response["Content-Type"] = content_type
        return encode(exposition_registry(data))


class PrometheusTextRenderer(_ExpositionRenderer):
    """Prometheus text format (``Accept: text/plain;version=0.0.4`` or ``?format=prometheus``)."""

    media_type = "text/plain"
    format = "prometheus"


class OpenMetricsRenderer(_ExpositionRenderer):
    """OpenMetrics text (what Prometheus asks for first, or ``?format=openmetrics``)."""

    media_type = "application/openmetrics-text"
    format = "openmetrics"


class FormatFirstNegotiation(DefaultContentNegotiation):
    """``?format=`` wins over the Accept header instead of ending in a 406 when they differ.

    ``curl -H 'Accept: application/json' '/metrics?format=prometheus'`` means "prometheus".
    """

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        fmt = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        if fmt:
            chosen = self.filter_renderers(renderers, fmt)[0]  # Http404 when none matches
            return chosen, chosen.media_type
        return super().select_renderer(request, renderers, format_suffix)
