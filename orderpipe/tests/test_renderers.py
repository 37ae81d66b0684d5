"""Money leaves the API as exact JSON numbers, whatever its size; the rest as DRF renders it."""

from __future__ import annotations

import json
import uuid
from collections import namedtuple
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from orderpipe.api.renderers import ExactJSONRenderer, dumps_exact
from orderpipe.money import currency


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (29999, "299.99"),
        (0, "0.00"),
        (1, "0.01"),
        (10, "0.10"),
        (100, "1.00"),
        (100000000001099, "1000000000010.99"),
        (10**26 + 1, "1000000000000000000000000.01"),  # 27 digits: beyond any real total
    ],
)
def test_cents_render_as_exact_json_numbers(cents: int, text: str) -> None:
    assert dumps_exact({"v": currency("USD").from_minor_units(cents)}) == '{"v":' + text + "}"


def test_money_never_passes_through_float() -> None:
    rendered = dumps_exact([currency("USD").from_minor_units(c) for c in range(29990, 30010)])

    assert "9899" not in rendered and "0000001" not in rendered
    assert json.loads(rendered, parse_float=Decimal) == [
        currency("USD").from_minor_units(c) for c in range(29990, 30010)
    ]


def test_strings_that_look_like_tokens_are_left_alone() -> None:
    data = {"user_id": "dec0123456789abcdef01234561.5dec0123456789abcdef0123456", "v": Decimal("1")}

    assert json.loads(dumps_exact(data)) == {"user_id": data["user_id"], "v": 1}


def test_indented_rendering_for_the_browsable_api_keeps_exact_money() -> None:
    rendered = ExactJSONRenderer().render(
        {"total": Decimal("1000000000010.99")}, "application/json; indent=4"
    )

    assert rendered == b'{\n    "total": 1000000000010.99\n}'


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("nan")])
def test_non_finite_numbers_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps_exact({"v": value})


Pair = namedtuple("Pair", "a b")
EVERYTHING_BUT_DECIMALS = {
    "when": datetime(2025, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
    "day": date(2024, 2, 29),
    "span": timedelta(seconds=90),
    "lazy": gettext_lazy("Not found."),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "text": 'ü \u2028 \u2029 " \\ </script>',
    "numbers": [0, -1, 2**70, 1.5, True, None],
    "pair": Pair(1, 2),
    "bytes": b"abc",
    "nested": {"list": [{"x": []}], "empty": {}},
}


@pytest.mark.parametrize(
    "media_type",
    [None, "application/json", "application/json; indent=4", "application/json; indent=0"],
)
def test_everything_but_decimals_renders_exactly_as_drfs_renderer(media_type: str | None) -> None:
    assert ExactJSONRenderer().render(EVERYTHING_BUT_DECIMALS, media_type) == JSONRenderer().render(
        EVERYTHING_BUT_DECIMALS, media_type
    )


def test_no_body_renders_as_nothing() -> None:
    assert ExactJSONRenderer().render(None) == b""
