"""``product_sums``'s integer path (prices with no more decimals than the currency) gives
exactly what the ``Decimal`` path, the rule, gives; a row with a price to round takes the
``Decimal`` path."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpipe import money
from stats.store import products
from stats.store.products import _decimal_sums, product_sums


@dataclass(frozen=True)
class Line:
    product_id: str | None
    quantity: Any
    unit_price: Any


CURRENCIES = ["JPY", "USD", "KWD", "CLF"]  # 0, 2, 3 and 4 decimals


def prices() -> st.SearchStrategy[Decimal]:
    """Prices of 0 to 6 decimals (some more than the currency has), trailing zeros, a
    positive exponent, zero and the odd negative one."""
    return st.builds(
        lambda digits, exponent: Decimal(digits).scaleb(exponent),
        st.integers(-(10**6), 10**12),
        st.integers(-6, 2),
    )


def line_forms(product_id: str | None, quantity: int, price: Decimal) -> st.SearchStrategy[Any]:
    """The line in each of the forms the callers pass: an item, a recorded event's tuple, the
    ledger's JSON."""
    return st.sampled_from(
        [
            Line(product_id, quantity, price),
            (product_id, quantity, price),
            {"product_id": product_id, "quantity": quantity, "price_per_unit": str(price)},
        ]
    )


lines = st.lists(
    st.tuples(
        st.sampled_from(["P1", "P2", "P10", "é", None]),
        st.integers(-3, 10**6),
        prices(),
    ).flatmap(lambda t: line_forms(*t)),
    max_size=12,
)


@given(lines=lines, code=st.sampled_from(CURRENCIES))
def test_the_integer_path_gives_what_the_decimal_path_gives(lines: list[Any], code: str) -> None:
    currency = money.currency(code)
    assert product_sums(lines, currency) == _decimal_sums(lines, currency)
    assert list(product_sums(lines, currency)) == sorted(product_sums(lines, currency))


@given(lines=lines, code=st.sampled_from(CURRENCIES))
def test_a_generator_of_lines_is_read_once_whichever_path(lines: list[Any], code: str) -> None:
    currency = money.currency(code)
    assert product_sums(iter(lines), currency) == _decimal_sums(lines, currency)


class Counted:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = products._decimal_sums

        def counted(lines: Any, currency: money.Currency) -> dict[str, tuple[int, int]]:
            self.calls += 1
            return original(lines, currency)

        monkeypatch.setattr(products, "_decimal_sums", counted)


def sums_and_decimal_paths(
    monkeypatch: pytest.MonkeyPatch, code: str, rows: list[tuple[str, int, str]]
) -> tuple[Any, int]:
    """``product_sums`` of ``rows`` (product, quantity, price text) in ``code``, and how often
    it took the Decimal path."""
    counted = Counted(monkeypatch)
    lines = [(p, q, Decimal(price)) for p, q, price in rows]
    return product_sums(lines, money.currency(code)), counted.calls


@pytest.mark.parametrize(
    ("code", "rows", "expected"),
    [
        # Half-up, once per product and row: 0.125 -> 0.13, 3 x 0.005 = 0.015 -> 0.02.
        ("USD", [("P1", 1, "0.125")], {"P1": (1, 13)}),
        ("USD", [("P1", 1, "0.005"), ("P1", 2, "0.005")], {"P1": (3, 2)}),
        ("USD", [("P1", 1, "0.124")], {"P1": (1, 12)}),
        ("USD", [("P1", -1, "0.125")], {"P1": (-1, -13)}),  # away from zero
        ("JPY", [("P1", 3, "0.5"), ("P2", 1, "19.99")], {"P1": (3, 2), "P2": (1, 20)}),
        ("KWD", [("P1", 1, "1.0005")], {"P1": (1, 1001)}),
        # Exact to the minor unit on its own, but its row has one line to round.
        ("USD", [("P2", 2, "19.99"), ("P1", 1, "0.125")], {"P1": (1, 13), "P2": (2, 3998)}),
    ],
)
def test_a_row_with_a_price_to_round_takes_the_decimal_path(
    monkeypatch: pytest.MonkeyPatch, code: str, rows: list[tuple[str, int, str]], expected: Any
) -> None:
    assert sums_and_decimal_paths(monkeypatch, code, rows) == (expected, 1)


@pytest.mark.parametrize(
    ("code", "rows", "expected"),
    [
        ("USD", [("P1", 2, "19.99"), ("P1", 1, "0.01")], {"P1": (3, 3999)}),
        ("USD", [("P1", 1, "19.990000")], {"P1": (1, 1999)}),  # trailing zeros
        ("USD", [("P1", 1, "2E+3"), ("P2", 0, "5")], {"P1": (1, 200000), "P2": (0, 0)}),
        ("USD", [("P1", 1, "-0.00")], {"P1": (1, 0)}),
        ("JPY", [("P1", 4, "1200")], {"P1": (4, 4800)}),
        ("KWD", [("P1", 3, "1.250"), (None, 1, "0.0001")], {"P1": (3, 3750)}),
    ],
)
def test_prices_within_the_currencys_decimals_take_the_integer_path(
    monkeypatch: pytest.MonkeyPatch, code: str, rows: list[tuple[str, int, str]], expected: Any
) -> None:
    assert sums_and_decimal_paths(monkeypatch, code, rows) == (expected, 0)


def outcome(function: Any, *args: Any) -> Any:
    """What ``function`` returns, or the type of what it raises."""
    try:
        return function(*args)
    except Exception as exc:  # compared, not handled
        return type(exc)


@pytest.mark.parametrize("price", ["NaN", "Infinity", "-Infinity", "sNaN", "1E+5000", "1E-5000"])
def test_what_the_decimal_path_refuses_is_refused_the_same_way(price: str) -> None:
    usd = money.currency("USD")
    lines = [("P1", 1, Decimal("1.00")), ("P1", 2, Decimal(price))]
    refused = outcome(_decimal_sums, lines, usd)
    assert isinstance(refused, type) and issubclass(refused, ArithmeticError | ValueError)
    assert outcome(product_sums, lines, usd) is refused


@pytest.mark.parametrize(
    "line", [Line("P1", 2, 5), Line("P1", True, Decimal("1.5")), Line("P1", 2, 1.5)]
)
def test_an_item_whose_price_or_quantity_is_no_decimal_or_int_takes_the_decimal_path(
    line: Line,
) -> None:
    usd = money.currency("USD")
    assert outcome(product_sums, [line], usd) == outcome(_decimal_sums, [line], usd)
