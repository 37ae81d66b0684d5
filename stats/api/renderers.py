"""The Prometheus and OpenMetrics text renderers of /metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from prometheus_client.exposition import choose_encoder
from rest_framework.renderers import BaseRenderer
from rest_framework.utils.encoders import JSONEncoder

from stats.api.metrics import MetricsSnapshot, exposition_registry


class ExpositionRenderer(BaseRenderer):
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
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
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


class PrometheusTextRenderer(ExpositionRenderer):
    """Prometheus text format (``Accept: text/plain;version=0.0.4`` or ``?format=prometheus``)."""

    media_type = "text/plain"
    format = "prometheus"


class OpenMetricsRenderer(ExpositionRenderer):
    """OpenMetrics text (what Prometheus asks for first, or ``?format=openmetrics``)."""

    media_type = "application/openmetrics-text"
    format = "openmetrics"
