"""Money in one currency: its ISO 4217 minor unit, amounts in and out of integer minor units.

Every amount orderpipe counts is an integer number of the shop's currency's minor unit
(``STATS_CURRENCY``: USD cents, JPY yen, KWD fils), exact in the ledger and in Redis; a
``Decimal`` only on the way in (a message's amount) and on the way out (an API figure). How
many decimals a currency has comes from the ``iso4217`` package, generated from the ISO 4217
maintenance agency's own table (JPY 0, USD 2, KWD 3, CLF 4), never from a list kept here.

Both apps import this module (validation parses amounts with it, the store's readers and the
API write them back), so a currency's decimals are decided in one place. Pure, but for
``shop_currency``, which reads Django's settings when it is called (the Django side's way to
the shop's currency; the validator is told it instead, and stays testable without Django).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
)

from iso4217 import Currency as ISOCurrency

# The currency of every amount before the currency was a setting, and STATS_CURRENCY's default.
DEFAULT_CURRENCY = "USD"

# Exact arithmetic for money: a result that would lose a digit raises instead (Inexact),
# whatever the calling thread's context; 2000 digits hold any amount a message or a counter
# can carry. The validator sums an order's lines in it too.
EXACT = Context(
    prec=2000,
    rounding=ROUND_HALF_UP,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, InvalidOperation, Overflow],
)
# Rounding to the minor unit may discard digits: that is what it is for.
_ROUNDING = Context(
    prec=2000, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation]
)


class UnknownCurrencyError(ValueError):
    """A code that cannot be a currency amounts are counted in (the message says why)."""


class TooManyDecimalsError(ValueError):
    """An amount finer than the currency's minor unit (``10.505`` US dollars)."""


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency with a minor unit: ``minor_units`` is its number of decimals.

    Obtained with ``currency(code)``, which reads the ISO table; its methods are the only way
    amounts cross between ``Decimal`` and integer minor units.
    """

    code: str
    minor_units: int

    def __str__(self) -> str:
        return self.code

    @property
    def quantum(self) -> Decimal:
        """The smallest amount of the currency: ``0.01`` for USD, ``1`` for JPY."""
        return _quantum(self.minor_units)

    def to_minor_units(self, amount: Decimal) -> int:
        """``amount`` in minor units, exactly: ``10.50`` USD is 1050, ``1200`` JPY is 1200.

        Raises ``TooManyDecimalsError`` when that would drop a digit (``10.505`` USD, ``1.5``
        JPY): such an amount cannot be paid, so it is refused, never rounded. Trailing zeros
        are no digits of the value: ``10.500`` USD is 1050.
        """
        try:
            exact = amount.quantize(self.quantum, context=EXACT)
        except Inexact:
            raise TooManyDecimalsError(
                f"more decimals than {self.code} has ({self.minor_units})"
            ) from None
        return int(exact.scaleb(self.minor_units, context=EXACT))

    def round_to_minor_units(self, amount: Decimal) -> int:
        """``amount`` rounded half-up to minor units: a computed total (quantity times a unit price
        that may have more decimals than the currency), not an amount someone sent."""
        rounded = amount.quantize(self.quantum, rounding=ROUND_HALF_UP, context=_ROUNDING)
        return int(rounded.scaleb(self.minor_units, context=_ROUNDING))

    def from_minor_units(self, minor: int) -> Decimal:
        """Minor units as the exact amount, with exactly the currency's decimals: 29999 USD is
        ``Decimal('299.99')``, 0 USD ``Decimal('0.00')``, 1200 JPY ``Decimal('1200')``, 1250
        KWD ``Decimal('1.250')``. Parsed from ``<minor>E-<units>`` (exact whatever the size: a
        string never rounds), a third faster than ``scaleb``: a year of /stats/by-date is
        1,100 of these per request."""
        return Decimal(f"{minor}E-{self.minor_units}")


@functools.cache
def _quantum(minor_units: int) -> Decimal:
    return Decimal(1).scaleb(-minor_units)


@functools.cache
def _iso_table() -> dict[str, int | None]:
    """Every current ISO 4217 code and its minor units (None: the table says N.A.)."""
    return {entry.code: entry.exponent for entry in ISOCurrency}


def is_iso_code(code: str) -> bool:
    """Whether ISO 4217 lists ``code`` (exactly as written: ``USD``, not ``usd``) as a current
    currency, with a minor unit or without one (gold, ``XXX``)."""
    return code in _iso_table()


def currency_problem(code: str) -> str | None:
    """Why amounts cannot be counted in ``code`` (None when they can), as the end of a
    sentence that starts with the code."""
    if code not in _iso_table():
        return "is not an ISO 4217 currency code (three capital letters, e.g. USD, EUR, JPY)"
    if _iso_table()[code] is None:
        return (
            "has no minor unit in ISO 4217 (a precious metal, a fund or a testing code), so "
            "amounts in it cannot be counted in minor units"
        )
    return None


@functools.cache
def currency(code: str) -> Currency:
    """The currency ``code`` (an ISO 4217 code, exactly as written), read from the ISO table
    once; raises ``UnknownCurrencyError`` for a code ``currency_problem`` refuses."""
    problem = currency_problem(code)
    if problem is not None:
        raise UnknownCurrencyError(f"{code!r} {problem}")
    minor_units = _iso_table()[code]
    assert minor_units is not None  # currency_problem refuses a code without one
    return Currency(code, minor_units)


def shop_currency() -> Currency:
    """The shop's currency, ``STATS_CURRENCY`` (checked at start-up, so always known)."""
    from django.conf import settings

    return currency(settings.STATS_CURRENCY)
