"""Per-product figures: what an order's lines add to their products and what a refund or a
cancellation takes off them. Pure: no I/O.

One rule for the apply script's arguments, ``rebuild_stats`` and ``reconcile_stats``: a row's
(an order's, a refund's, a cancellation's) lines are grouped by ``product_id`` (a line without
one is no product's: it counts in its order's revenue, in no product's), each product's units
summed and its value (quantity x unit price, exact) rounded half-up to the currency's minor
unit once per row and product. A refund by amount has no lines and changes no product; a
refund by items takes the lines it priced; a cancellation takes what its order's refunds left
(``orders.event_rules.cancelled_lines``). Products are kept net: an event's figures are
subtracted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from orderpipe import money
from orderpipe.money import Currency


@dataclass(frozen=True, slots=True)
class ProductFigures:
    """A product's units and revenue (minor units), net of what was refunded."""

    product_id: str
    units: int
    revenue_cents: int


@dataclass(frozen=True, slots=True)
class RankedProduct:
    rank: int
    product_id: str
    units: int
    revenue_cents: int


def line_values(line: Any) -> tuple[str | None, int, Decimal]:
    """(product_id, quantity, unit price) of a line in any of the forms it travels in: a
    validated order's item or a ledger line (attributes), a recorded event's tuple, or the
    ledger's JSON (a dict, ``price_per_unit`` as exact text). Exact types, not ABCs: this runs
    for every line the consumer applies."""
    kind = type(line)
    if kind is tuple:
        product_id, quantity, price = line
        return product_id, int(quantity), Decimal(price)
    if kind is dict:
        return line.get("product_id"), int(line["quantity"]), Decimal(line["price_per_unit"])
    return line.product_id, line.quantity, line.unit_price


# A line's price numerator (its value as a reduced fraction) below this, and a row's lines
# within any list memory holds, keep every minor-unit sum a few dozen digits long: far inside
# what the Decimal path computes without an error (2,000 digits), so both give one result.
_EXACT_NUMERATOR = 2**63


def product_sums(lines: Iterable[Any], currency: Currency) -> dict[str, tuple[int, int]]:
    """One row's lines per product: (units, value in minor units rounded half-up), in
    product_id order; lines without a product_id left out.

    When every price has no more decimals than the currency (``19.99`` USD, ``1200`` JPY),
    each line's value is a whole number of minor units and the row is summed in integers
    (a fifth of the cost: this runs for every order and event the consumer applies); a row
    with any other price (``0.125`` USD, a line to round) is summed in ``Decimal`` and
    rounded once per product, as ever. Both give the same figures (``tests``' comparison)."""
    if type(lines) is not tuple and type(lines) is not list:
        lines = tuple(lines)  # read twice when a line leaves the integer path
    scale = 10**currency.minor_units
    sums: dict[str, tuple[int, int]] = {}
    try:
        for product_id, quantity, price in _product_lines(lines):
            if type(price) is not Decimal or type(quantity) is not int:
                return _decimal_sums(lines, currency)
            numerator, denominator = price.as_integer_ratio()  # NaN, Infinity: raise
            if scale % denominator or not -_EXACT_NUMERATOR < numerator < _EXACT_NUMERATOR:
                return _decimal_sums(lines, currency)
            minor = quantity * numerator * (scale // denominator)
            found = sums.get(product_id)
            if found is None:
                sums[product_id] = (quantity, minor)
            else:
                sums[product_id] = (found[0] + quantity, found[1] + minor)
    except (ValueError, OverflowError):  # the Decimal path raises what it raises
        return _decimal_sums(lines, currency)
    if len(sums) > 1:
        return dict(sorted(sums.items()))
    return sums


def _product_lines(lines: Iterable[Any]) -> Iterator[tuple[str, int, Decimal]]:
    """``line_values`` of the lines that have a product_id; the ledger's JSON read directly
    (the rebuild's millions of rows), its product_id looked at first."""
    for line in lines:
        if type(line) is dict:
            product_id = line.get("product_id")
            if product_id is None:
                continue
            yield product_id, int(line["quantity"]), Decimal(line["price_per_unit"])
        else:
            product_id, quantity, price = line_values(line)
            if product_id is not None:
                yield product_id, quantity, price


def _decimal_sums(lines: Iterable[Any], currency: Currency) -> dict[str, tuple[int, int]]:
    """``product_sums`` in exact ``Decimal`` arithmetic, each product's value rounded half-up
    to the minor unit once: the rule, for any price."""
    add, multiply = money.EXACT.add, money.EXACT.multiply
    exact: dict[str, list[Any]] = {}
    for product_id, quantity, price in _product_lines(lines):
        found = exact.get(product_id)
        if found is None:
            exact[product_id] = [quantity, multiply(Decimal(quantity), price)]
        else:
            found[0] += quantity
            found[1] = add(found[1], multiply(Decimal(quantity), price))
    if len(exact) > 1:
        exact = dict(sorted(exact.items()))
    rounded = currency.round_to_minor_units
    return {product_id: (units, rounded(value)) for product_id, (units, value) in exact.items()}


def parse_product_field(name: str) -> tuple[str, str]:
    """``<product_id>:units`` or ``<product_id>:revenue`` as (product_id, which); a product id
    may itself hold ``:``."""
    product_id, _, which = name.rpartition(":")
    return product_id, which


def rank_products(figures: Iterable[ProductFigures], by: str, limit: int) -> list[RankedProduct]:
    """The first ``limit`` products by ``by`` (``revenue`` or ``units``), highest first, ties by
    product_id ascending (code points)."""
    if by == "revenue":
        ranked = heapq.nsmallest(limit, figures, key=lambda f: (-f.revenue_cents, f.product_id))
    else:
        ranked = heapq.nsmallest(limit, figures, key=lambda f: (-f.units, f.product_id))
    return [
        RankedProduct(i, f.product_id, f.units, f.revenue_cents)
        for i, f in enumerate(ranked, start=1)
    ]
