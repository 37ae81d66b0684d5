"""What a refund or a cancellation may do to its order, decided against the order's state.

Pure: no I/O. The ledger (``orders.ledger``) builds an ``OrderState`` from the order as
recorded and the events recorded before, inside the batch's transaction with the order
locked, and asks it about each new event in turn (``check``, then ``apply`` for an accepted
one). The reasons' codes and messages are the validator's (``orders.validation``), so every
reason reads alike.

A refund by items is priced at the order's own prices: the units of a product are taken from
the order's lines of that product in the order the lines were sent, after the units refunded
before, so two refunds of one unit each of a product sold at two prices refund one of each.
The value of the refunded units is their exact sum rounded half-up to the currency's minor
unit, the rule an order's value follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from orderpipe import money
from orders.validation import (
    CANCELLED,
    REFUNDED,
    Event,
    EventKind,
    Reason,
    amount_mismatch_reason,
    order_cancelled_reason,
    refund_exceeds_items_reasons,
    refund_exceeds_order_reason,
    unknown_item_reasons,
)


@dataclass(frozen=True, slots=True)
class Line:
    """An order's line as the ledger keeps it."""

    product_id: str | None
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class RefundedLine:
    """Units of a product refunded at one of the order's prices."""

    product_id: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Effect:
    """What an accepted event takes off its order: ``amount_cents`` in minor units (for a
    cancellation, what was left unrefunded) and, for a refund by items, the lines priced."""

    amount_cents: int
    items: tuple[RefundedLine, ...] = ()


def lines_of(items: Iterable[Mapping[str, Any]]) -> tuple[Line, ...]:
    """An order's lines from the ledger's ``items`` JSON (prices as exact text)."""
    return tuple(
        Line(item.get("product_id"), int(item["quantity"]), Decimal(item["price_per_unit"]))
        for item in items
    )


def refunded_lines_of(items: Iterable[Mapping[str, Any]]) -> tuple[RefundedLine, ...]:
    """An event's refunded lines from its ``items`` JSON."""
    return tuple(
        RefundedLine(item["product_id"], int(item["quantity"]), Decimal(item["price_per_unit"]))
        for item in items
    )


def lines_total(lines: Iterable[RefundedLine]) -> Decimal:
    """Σ quantity x unit price, exactly (the order's lines summed to its value the same way,
    so a part of them sums exactly too)."""
    total = Decimal(0)
    for line in lines:
        total = money.EXACT.add(
            total, money.EXACT.multiply(Decimal(line.quantity), line.unit_price)
        )
    return total


def refunded_lines_json(lines: Sequence[RefundedLine]) -> list[dict[str, Any]]:
    """Refunded lines as the ledger stores them: prices as their exact text, never floats."""
    return [
        {"product_id": line.product_id, "quantity": line.quantity,
         "price_per_unit": str(line.unit_price)}
        for line in lines
    ]  # fmt: skip


@dataclass(slots=True)
class OrderState:
    """An order and what its recorded events did to it: refunded so far, units refunded per
    product, cancelled or not."""

    order_id: str
    value_cents: int
    currency: str
    lines: tuple[Line, ...]
    refunded_cents: int = 0
    units_refunded: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False

    def apply(self, kind: EventKind, effect: Effect) -> None:
        """Count an accepted event (one recorded before, or one ``check`` just accepted)."""
        self.refunded_cents += effect.amount_cents
        for line in effect.items:
            self.units_refunded[line.product_id] = (
                self.units_refunded.get(line.product_id, 0) + line.quantity
            )
        if kind == CANCELLED:
            self.cancelled = True

    def units_left(self) -> dict[str, int]:
        """Per product of the order: the units not refunded yet."""
        left: dict[str, int] = {}
        for line in self.lines:
            if line.product_id is not None:
                left[line.product_id] = left.get(line.product_id, 0) + line.quantity
        return {p: n - self.units_refunded.get(p, 0) for p, n in left.items()}

    def remaining_lines(self) -> tuple[RefundedLine, ...]:
        """The order's units not refunded yet, priced at its own prices (lines without a
        product_id are no product's): what a cancellation takes back from its products."""
        return tuple(
            line
            for product_id, units in self.units_left().items()
            if units > 0
            for line in self._price(product_id, units)
        )

    def check(self, event: Event) -> Effect | list[Reason]:
        """What ``event`` would take off the order, or every reason it may not.

        Nothing may happen to a cancelled order. A cancellation takes whatever is left. A
        refund's items must be the order's products, each with no more units than remain;
        given with an amount, they must come to it; and the order's refunded total may never
        exceed its value. The items are priced only when each of them is one the order has
        units of left (a mismatch against items that cannot be refunded says nothing).
        """
        if self.cancelled:
            return [order_cancelled_reason(event)]
        left = max(self.value_cents - self.refunded_cents, 0)
        if event.kind == CANCELLED:
            return Effect(left)
        reasons: list[Reason] = []
        priced: tuple[RefundedLine, ...] = ()
        items_cents: int | None = None
        if event.items:
            remaining = self.units_left()
            reasons += unknown_item_reasons(event, remaining.keys())
            reasons += refund_exceeds_items_reasons(event, remaining)
            if not reasons:
                priced = tuple(
                    line
                    for item in event.items
                    for line in self._price(item.product_id, item.quantity)
                )
                items_cents = money.currency(self.currency).round_to_minor_units(
                    lines_total(priced)
                )
                if event.amount_cents is not None and event.amount_cents != items_cents:
                    reasons.append(amount_mismatch_reason(event, items_cents))
        refund = event.amount_cents if event.amount_cents is not None else items_cents
        if refund is not None and self.refunded_cents + refund > self.value_cents:
            reasons.append(
                refund_exceeds_order_reason(event, refund, self.refunded_cents, self.value_cents)
            )
        if reasons:
            return reasons
        assert refund is not None  # a valid refund has an amount or items, priced above
        return Effect(refund, priced)

    def _price(self, product_id: str, quantity: int) -> list[RefundedLine]:
        """``quantity`` units of ``product_id`` at the order's prices: from its lines of that
        product in the order sent, after the units refunded before (``units_left`` said
        there are enough)."""
        skip = self.units_refunded.get(product_id, 0)
        wanted = quantity
        taken: list[RefundedLine] = []
        for line in self.lines:
            if line.product_id != product_id or wanted == 0:
                continue
            available = line.quantity - min(skip, line.quantity)
            skip -= line.quantity - available
            units = min(available, wanted)
            if units:
                taken.append(RefundedLine(product_id, units, line.unit_price))
                wanted -= units
        return taken


def cancelled_lines(
    order_items: Iterable[Mapping[str, Any]], refunds: Iterable[Iterable[Mapping[str, Any]]]
) -> tuple[RefundedLine, ...]:
    """What a cancellation takes back from its order's products: the order's lines (its
    ledger ``items``) less the lines its refunds took (each refund's ``items``; an order
    takes no event after its cancellation, so these are all of its other events'), priced
    at the order's prices. Not stored with the event (its ``items`` stay empty): derived
    from the ledger wherever products are counted, so every cancellation ever recorded
    counts alike."""
    state = OrderState("", 0, "", lines_of(order_items))
    for items in refunds:
        state.apply(REFUNDED, Effect(0, refunded_lines_of(items)))
    return state.remaining_lines()


# What an accepted order has become through its events (the orders API's ``status``).
STATUS_ACCEPTED = "accepted"
STATUS_PARTIALLY_REFUNDED = "partially_refunded"
STATUS_REFUNDED = "refunded"
STATUS_CANCELLED = "cancelled"
ORDER_STATUSES = (STATUS_ACCEPTED, STATUS_PARTIALLY_REFUNDED, STATUS_REFUNDED, STATUS_CANCELLED)


def order_status(value_cents: int, events: Iterable[tuple[str, int]]) -> tuple[str, int]:
    """An order's status and refunded total (minor units) from its events' (kind, amount):
    ``cancelled`` once cancelled; ``refunded`` when refunds took all of its value;
    ``partially_refunded`` after any other refund (one of an item worth less than a cent
    too); ``accepted`` without events."""
    refunded = 0
    kinds = set()
    for kind, amount_cents in events:
        kinds.add(kind)
        refunded += amount_cents
    if CANCELLED in kinds:
        return STATUS_CANCELLED, refunded
    if REFUNDED in kinds:
        status = STATUS_REFUNDED if refunded >= value_cents else STATUS_PARTIALLY_REFUNDED
        return status, refunded
    return STATUS_ACCEPTED, refunded
