"""The validator's short paths agree with the long ones they stand in for: an item checked on
``_check_item``'s short path gives what ``_check_item_fully`` gives, ``_loads`` what
``json.loads`` with the strict hooks gives (or raises), ``_text_problem``'s one-pass
screen what its two rules say, ``_items_total`` what the plain exact sum gives."""

from __future__ import annotations

import json
from decimal import Decimal, DecimalException
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpipe import money
from orders import validation
from orders.validation import (
    _CONTROL,
    _SUM_CEILING,
    _SURROGATE,
    Item,
    _check_item,
    _check_item_fully,
    _items_total,
    _loads,
    _parse_float,
    _parse_int,
    _reject_constant,
    _text_problem,
)


def strict_loads(text: str) -> Any:
    """The parse as it was: ``json.loads`` with every hook, a decoder per call."""
    return json.loads(
        text,
        parse_float=_parse_float,
        parse_int=_parse_int,
        parse_constant=_reject_constant,
        object_pairs_hook=validation._object,
    )


def parsed(token: str) -> Any:
    return _loads(token)


number_tokens = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["19.99", "0.0", "-0.0", "1e0", "15e-1", "1.50", "-3.5", "1e999999999999999999",
                     "1E+5", "0.000000001", "5" * 60 + ".5", "1e-999999999", "7" * 5000]),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: f"{d:e}"),
)  # fmt: skip
texts = st.text(
    alphabet=st.sampled_from(
        ["P", "1", " ", "\t", "\x00", "\x1f", "\x85", "\ud800", "é", "\u3000"]
    ),
    max_size=6,
) | st.text(max_size=140)
json_values = st.one_of(
    number_tokens.map(parsed),
    texts,
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
)


@given(
    st.dictionaries(
        st.sampled_from(["quantity", "price_per_unit", "product_id", "other"]),
        json_values,
    )
)
def test_an_item_gets_the_same_answer_on_either_path(item: dict[str, Any]) -> None:
    short = _check_item("items[3]", item)
    full = _check_item_fully("items[3]", item)
    assert short == full
    if short[0] is not None and full[0] is not None:
        # Equal decimals may differ in exponent: the very same number must come out.
        assert type(short[0].unit_price) is Decimal
        assert str(short[0].unit_price) == str(full[0].unit_price)


@given(
    st.one_of(
        number_tokens,
        st.lists(number_tokens, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.sampled_from(
            [
                '{"a": 1, "a": 2}',
                '{"a": NaN}',
                "\ufeff{}",
                '{"a": [1, 2.50, {"b": -0}]}',
                '{"n": ' + "9" * 4400 + "}",
                '{"n": ' + "9" * 4400 + ', "n": 1}',
                "[" * 50 + "]" * 50,
                "{",
                "",
                '{"x": Infinity}',
            ]
        ),
        st.text(max_size=30),
    )
)
def test_the_parse_gives_what_json_loads_with_the_hooks_gives(text: str) -> None:
    try:
        expected: Any = strict_loads(text)
    except Exception as exc:
        with pytest.raises(type(exc)) as raised:
            _loads(text)
        assert str(raised.value) == str(exc)
        return
    got = _loads(text)
    assert repr(got) == repr(expected)
    assert got == expected


@given(texts)
def test_the_text_screen_says_what_the_two_rules_say(value: str) -> None:
    expected = None
    if _SURROGATE.search(value):
        expected = "contains a lone surrogate (not valid Unicode)"
    elif _CONTROL.search(value):
        expected = "contains control characters"
    assert _text_problem(value) == expected


@given(texts | st.integers() | st.none())
def test_an_id_gets_the_same_answer_as_its_rules_give(value: Any) -> None:
    got = validation._id_text(value, "order_id")
    if not isinstance(value, str):
        assert got[0] is None and got[1] is not None
        return
    trimmed = value.strip(validation._TRIM)
    problem = validation.id_problem(trimmed)
    assert got == ((None, f"order_id {problem}") if problem else (trimmed, None))


def plain_total(items: tuple[Item, ...]) -> Decimal | None:
    """``_items_total`` as it was written first."""
    total = Decimal(0)
    try:
        for item in items:
            if item.unit_price == 0:
                continue
            if item.unit_price > _SUM_CEILING or item.quantity > _SUM_CEILING:
                return _SUM_CEILING + 1
            line = money.EXACT.multiply(Decimal(item.quantity), item.unit_price)
            total = money.EXACT.add(total, line)
            if total > _SUM_CEILING:
                return total
    except DecimalException:
        return None
    return total


@given(
    st.lists(
        st.builds(
            Item,
            st.just("P"),
            st.integers(1, 2 * 10**9),
            st.decimals(min_value=0, allow_nan=False, allow_infinity=False)
            | st.sampled_from([Decimal("1e-1999"), Decimal("1e2000"), Decimal("-0"),
                               Decimal("0E+5"), Decimal("1000000001"), Decimal("1" * 1990)]),
        ),
        max_size=6,
    ).map(tuple)
)  # fmt: skip
def test_the_items_total_is_the_plain_exact_sum(items: tuple[Item, ...]) -> None:
    total, expected = _items_total(items), plain_total(items)
    assert str(total) == str(expected)
