"""How a renderer is chosen: ``?format=`` first, then the Accept header, in both APIs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.http import Http404
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

if TYPE_CHECKING:
    # APIView's class body imports this module (DEFAULT_CONTENT_NEGOTIATION_CLASS), so the
    # mixin cannot subclass it at run time; for the type checker it is the view it is mixed in.
    from rest_framework.views import APIView as _View
else:
    _View = object


class FormatParamMixin(_View):
    """An unknown ``?format=`` is a bad parameter (400 naming it), not DRF's bare 404.

    Put before the view class it changes (``class V(FormatParamMixin, ViewSet)``)."""

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        if not force and request.query_params.get("format", None) == "":
            raise self._format_error()  # DRF would silently ignore an empty value
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            raise self._format_error() from None

    def _format_error(self) -> ValidationError:
        formats = sorted({r.format for r in self.get_renderers()})
        return ValidationError({"format": [f"Must be one of: {', '.join(formats)}."]})


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
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderers = list(renderers)  # DRF passes the view's list; a choice is kept by index
        fmt = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        if fmt:
            chosen = self.filter_renderers(renderers, fmt)[0]  # Http404 when none matches
            return chosen, chosen.media_type
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        if len(accept) > self.max_remembered_length:
            choice: tuple[BaseRenderer, str] = super().select_renderer(
                request, renderers, format_suffix
            )
            return choice
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
