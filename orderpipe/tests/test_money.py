"""Money in the shop's currency (``orderpipe.money``): minor units from the ISO 4217 table,
amounts in and out of them exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpipe.money import (
    TooManyDecimalsError,
    UnknownCurrencyError,
    currency,
    currency_problem,
    is_iso_code,
    shop_currency,
)


@pytest.mark.parametrize(
    ("code", "minor_units"),
    [
        ("JPY", 0),
        ("USD", 2),
        ("EUR", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("CLF", 4),
        # ISO 4217 says 3; CLDR (babel's get_currency_precision) says 0: the ISO table is read.
        ("IQD", 3),
    ],
)
def test_minor_units_come_from_the_iso_4217_table(code: str, minor_units: int) -> None:
    assert currency(code).minor_units == minor_units
    assert currency(code).code == str(currency(code)) == code


@pytest.mark.parametrize(
    ("code", "amount", "minor"),
    [
        pytest.param("JPY", "1200", 1200, id="jpy-whole"),
        pytest.param("JPY", "1200.00", 1200, id="jpy-trailing-zeros-are-no-decimals"),
        pytest.param("JPY", "1.2E+3", 1200, id="jpy-exponent"),
        pytest.param("KWD", "1.25", 1250, id="kwd-two-of-three-decimals"),
        pytest.param("KWD", "1.250", 1250, id="kwd-three-decimals"),
        pytest.param("KWD", "0.001", 1, id="kwd-one-fils"),
        pytest.param("USD", "109.97", 10997, id="usd"),
        pytest.param("USD", "10.500", 1050, id="usd-trailing-zero"),
        pytest.param("USD", "0", 0, id="usd-zero"),
        pytest.param("CLF", "0.0001", 1, id="clf-four-decimals"),
    ],
)
def test_an_amount_is_exact_in_minor_units(code: str, amount: str, minor: int) -> None:
    assert currency(code).to_minor_units(Decimal(amount)) == minor


@pytest.mark.parametrize(
    ("code", "amount"),
    [
        pytest.param("JPY", "1200.5", id="jpy-a-fraction-of-a-yen"),
        pytest.param("KWD", "1.2505", id="kwd-four-decimals"),
        pytest.param("USD", "10.505", id="usd-half-a-cent"),
        pytest.param("USD", "1e-99999999", id="usd-extreme-exponent"),
        pytest.param("CLF", "0.00001", id="clf-five-decimals"),
    ],
)
def test_an_amount_finer_than_the_minor_unit_is_refused_not_rounded(code: str, amount: str) -> None:
    with pytest.raises(TooManyDecimalsError, match=f"more decimals than {code} has"):
        currency(code).to_minor_units(Decimal(amount))


@pytest.mark.parametrize(
    ("code", "total", "minor"),
    [
        ("USD", "0.005", 1),
        ("USD", "0.00499", 0),
        ("USD", "109.974", 10997),
        ("JPY", "2.5", 3),
        ("JPY", "2.4999", 2),
        ("KWD", "0.0005", 1),
        ("KWD", "1.2504", 1250),
    ],
)
def test_a_computed_total_is_rounded_half_up_to_the_minor_unit(
    code: str, total: str, minor: int
) -> None:
    assert currency(code).round_to_minor_units(Decimal(total)) == minor


@pytest.mark.parametrize(
    ("code", "minor", "text"),
    [
        ("JPY", 1200, "1200"),
        ("JPY", 0, "0"),
        ("KWD", 1250, "1.250"),
        ("KWD", 1, "0.001"),
        ("USD", 29999, "299.99"),
        ("USD", 0, "0.00"),
        ("USD", 10, "0.10"),
        ("USD", -5, "-0.05"),
        ("USD", 10**30 + 1, "10000000000000000000000000000.01"),  # beyond a default context
        ("CLF", 5, "0.0005"),
    ],
)
def test_minor_units_are_written_with_exactly_the_currencys_decimals(
    code: str, minor: int, text: str
) -> None:
    amount = currency(code).from_minor_units(minor)
    assert str(amount) == text
    assert amount.as_tuple().exponent == -currency(code).minor_units


@given(st.sampled_from(["JPY", "USD", "KWD", "CLF"]), st.integers(-(10**40), 10**40))
def test_minor_units_written_out_read_back_the_same(code: str, minor: int) -> None:
    money = currency(code)
    assert money.to_minor_units(money.from_minor_units(minor)) == minor


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        pytest.param("XYZ", "is not an ISO 4217 currency code", id="unknown"),
        pytest.param("usd", "is not an ISO 4217 currency code", id="lower-case"),
        pytest.param("", "is not an ISO 4217 currency code", id="empty"),
        pytest.param("BYR", "is not an ISO 4217 currency code", id="withdrawn"),
        pytest.param("XAU", "has no minor unit in ISO 4217", id="gold"),
        pytest.param("XXX", "has no minor unit in ISO 4217", id="no-currency"),
    ],
)
def test_a_code_amounts_cannot_be_counted_in_is_refused(code: str, problem: str) -> None:
    found = currency_problem(code)
    assert found is not None and found.startswith(problem)
    with pytest.raises(UnknownCurrencyError, match=problem):
        currency(code)


def test_iso_codes_include_those_without_a_minor_unit() -> None:
    assert is_iso_code("EUR") and is_iso_code("XAU") and is_iso_code("XTS")
    assert not is_iso_code("XYZ") and not is_iso_code("eur")
    assert currency_problem("EUR") is None


def test_the_shops_currency_is_the_setting(settings: Any) -> None:
    assert shop_currency() == currency("USD")
    settings.STATS_CURRENCY = "KWD"
    assert shop_currency() == currency("KWD")
    assert shop_currency().from_minor_units(1250) == Decimal("1.250")
