"""Money leaves the API as exact JSON numbers, whatever its size."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from stats.api.renderers import ExactJSONRenderer, dumps_exact
from stats.api.serializers import average_cents
from stats.store import cents_to_decimal


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (29999, "299.99"),
        (0, "0.00"),
        (1, "0.01"),
        (100, "1.00"),
        (100000000001099, "1000000000010.99"),
        (10**26 + 1, "1000000000000000000000000.01"),  # 27 digits: beyond any real total
    ],
)
def test_cents_render_as_exact_json_numbers(cents: int, text: str) -> None:
    assert dumps_exact({"v": cents_to_decimal(cents)}) == '{"v":' + text + "}"


def test_money_never_passes_through_float() -> None:
    rendered = dumps_exact([cents_to_decimal(c) for c in range(29990, 30010)])

    assert "9899" not in rendered and "0000001" not in rendered
    assert json.loads(rendered, parse_float=Decimal) == [
        cents_to_decimal(c) for c in range(29990, 30010)
    ]


def test_strings_that_look_like_tokens_are_left_alone() -> None:
    data = {"user_id": "dec0123456789abcdef01234561.5dec0123456789abcdef0123456", "v": Decimal("1")}

    assert json.loads(dumps_exact(data)) == {"user_id": data["user_id"], "v": 1}


def test_indented_rendering_for_the_browsable_api_keeps_exact_money() -> None:
    rendered = ExactJSONRenderer().render(
        {"total": Decimal("1000000000010.99")}, "application/json; indent=4"
    )

    assert rendered == b'{\n    "total": 1000000000010.99\n}'


def test_non_finite_decimal_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps_exact({"v": Decimal("NaN")})


@pytest.mark.parametrize(
    ("total", "count", "average"),
    [(0, 0, 0), (3, 2, 2), (1, 2, 1), (1, 3, 0), (2, 3, 1), (5, 2, 3), (10, 4, 3), (9, 4, 2)],
)
def test_average_is_rounded_half_up_in_cents(total: int, count: int, average: int) -> None:
    assert average_cents(total, count) == average
