"""Renderers: JSON whose money is exact to the cent, and Prometheus / OpenMetrics exposition.

DRF's ``JSONEncoder`` turns a ``Decimal`` into a ``float`` (or a string), so 1000000000010.99
would come out as 1000000000010.9900 at best and 1000000000011.0 at worst. ``ExactJSONRenderer``
encodes with simplejson instead, whose C encoder writes a ``Decimal`` as its own digits
(``use_decimal``); everything else DRF knows (dates, lazy strings, ...) still goes through DRF's
encoder, and indenting for the browsable API, strict NaN handling and the U+2028/U+2029
escaping stay as in DRF's ``JSONRenderer``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import simplejson
from prometheus_client.exposition import choose_encoder
from rest_framework.compat import INDENT_SEPARATORS, LONG_SEPARATORS, SHORT_SEPARATORS
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.utils.encoders import JSONEncoder

# DRF's conversions (datetime with "Z", lazy strings, UUID, ...) for what simplejson lacks.
_drf_default = JSONEncoder().default


@functools.cache
def _exact_encoder(
    indent: int | None, separators: tuple[str, str], ensure_ascii: bool, allow_nan: bool
) -> simplejson.JSONEncoder:
    """One encoder per option set: ``encode`` keeps no state between calls (thread-safe)."""
    return simplejson.JSONEncoder(
        use_decimal=True,
        # Like the stdlib's json: a namedtuple is an array, not an object.
        namedtuple_as_object=False,
        # Bodies are trees the views build; skipping the cycle bookkeeping saves a fifth of
        # the encoding, and a cyclic structure would still fail (RecursionError), not loop.
        check_circular=False,
        default=_drf_default,
        indent=indent,
        separators=separators,
        ensure_ascii=ensure_ascii,
        allow_nan=allow_nan,
    )


class ExactJSONRenderer(JSONRenderer):
    """Emits ``Decimal`` values as exact JSON numbers (299.99, never 299.98999)."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        indent = self.get_indent(accepted_media_type, renderer_context or {})
        if indent is None:
            separators = SHORT_SEPARATORS if self.compact else LONG_SEPARATORS
        else:
            separators = INDENT_SEPARATORS
        encoder = _exact_encoder(indent, separators, self.ensure_ascii, not self.strict)
        text = encoder.encode(data)
        # As DRF does: U+2028/U+2029 escaped, so the output is also valid JavaScript.
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


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

    DRF's choice from an Accept header depends only on that header and the renderer classes, and
    parsing it cost about a tenth of a request, so the outcome is remembered per (header,
    renderers) for short headers; the memory is bounded (cleared when full) because headers are
    client input. A header that matches no renderer is not remembered (406 every time).
    """

    max_remembered = 256
    max_remembered_length = 256
    _remembered: dict[tuple[str, tuple[type[BaseRenderer], ...]], tuple[int, str]] = {}

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        fmt = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        if fmt:
            chosen = self.filter_renderers(renderers, fmt)[0]  # Http404 when none matches
            return chosen, chosen.media_type
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        if len(accept) > self.max_remembered_length:
            return super().select_renderer(request, renderers, format_suffix)
        key = (accept, tuple(type(r) for r in renderers))
        remembered = self._remembered.get(key)
        if remembered is None:
            renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            remembered = (renderers.index(renderer), media_type)
            if len(self._remembered) >= self.max_remembered:
                self._remembered.clear()
            self._remembered[key] = remembered
        index, media_type = remembered
        return renderers[index], media_type
