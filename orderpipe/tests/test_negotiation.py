"""Content negotiation: the remembered choice is DRF's own, and the memory stays bounded."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer
from rest_framework.request import Request

from orderpipe.api.negotiation import FormatFirstNegotiation
from orderpipe.api.renderers import ExactJSONRenderer
from stats.api.renderers import OpenMetricsRenderer, PrometheusTextRenderer

STATS = (ExactJSONRenderer, BrowsableAPIRenderer)
METRICS = (ExactJSONRenderer, BrowsableAPIRenderer, OpenMetricsRenderer, PrometheusTextRenderer)
ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "application/json; indent=4",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "text/plain;version=0.0.4",
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/*",
    "image/png, */*;q=0.1",
]


@pytest.fixture(autouse=True)
def empty_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FormatFirstNegotiation, "_remembered", {})


def request(accept: str | None) -> Request:
    headers: dict[str, Any] = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(RequestFactory().get("/stats/global", **headers))


def chosen(
    negotiation: DefaultContentNegotiation,
    classes: tuple[type[BaseRenderer], ...],
    accept: str | None,
) -> tuple[type[BaseRenderer], str]:
    renderer, media_type = negotiation.select_renderer(request(accept), [c() for c in classes])
    return type(renderer), media_type


def outcome(
    negotiation: DefaultContentNegotiation,
    classes: tuple[type[BaseRenderer], ...],
    accept: str | None,
) -> tuple[type[BaseRenderer], str] | str:
    try:
        return chosen(negotiation, classes, accept)
    except NotAcceptable:
        return "406"


@pytest.mark.parametrize("classes", [STATS, METRICS], ids=["stats", "metrics"])
@pytest.mark.parametrize("accept", ACCEPTS)
def test_remembered_choice_is_drfs_choice(
    classes: tuple[type[BaseRenderer], ...], accept: str | None
) -> None:
    drf = outcome(DefaultContentNegotiation(), classes, accept)

    assert outcome(FormatFirstNegotiation(), classes, accept) == drf  # first: DRF decides
    assert outcome(FormatFirstNegotiation(), classes, accept) == drf  # then: remembered
    assert len(FormatFirstNegotiation._remembered) == (0 if drf == "406" else 1)


def test_the_same_header_with_other_renderers_is_decided_again() -> None:
    accept = "text/plain"
    with pytest.raises(NotAcceptable):
        chosen(FormatFirstNegotiation(), STATS, accept)

    assert chosen(FormatFirstNegotiation(), METRICS, accept) == (PrometheusTextRenderer, accept)


def test_an_unacceptable_header_is_refused_every_time_and_not_remembered() -> None:
    for _ in range(2):
        with pytest.raises(NotAcceptable):
            chosen(FormatFirstNegotiation(), STATS, "image/png")

    assert FormatFirstNegotiation._remembered == {}


def test_memory_is_bounded_and_long_headers_are_not_remembered() -> None:
    for n in range(FormatFirstNegotiation.max_remembered + 50):
        chosen(FormatFirstNegotiation(), STATS, f"application/json; x={n}")
    assert len(FormatFirstNegotiation._remembered) <= FormatFirstNegotiation.max_remembered

    FormatFirstNegotiation._remembered.clear()
    long = ",".join(f"text/x-{n}" for n in range(40)) + ",application/json"
    assert len(long) > FormatFirstNegotiation.max_remembered_length
    assert chosen(FormatFirstNegotiation(), STATS, long)[0] is ExactJSONRenderer
    assert FormatFirstNegotiation._remembered == {}


def test_format_parameter_still_wins_over_a_remembered_header() -> None:
    chosen(FormatFirstNegotiation(), METRICS, "application/json")
    negotiation = FormatFirstNegotiation()
    renderers = [c() for c in METRICS]
    req = Request(
        RequestFactory().get("/metrics?format=prometheus", HTTP_ACCEPT="application/json")
    )

    renderer, media_type = negotiation.select_renderer(req, renderers)

    assert (type(renderer), media_type) == (PrometheusTextRenderer, "text/plain")
