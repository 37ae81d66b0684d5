"""The order contract (contract §2): raw SQS body in, a normalized ``Order`` or every reason out.

Pure: no I/O, no Django models, no Redis, no SQS. Numbers are parsed exactly from the JSON
text (``Decimal``), never through floats.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Item:
    product_id: str | None
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Order:
    """A valid order. Money is integer cents; ``ordered_at`` is UTC (None when absent)."""

    order_id: str
    user_id: str
    value_cents: int
    items: tuple[Item, ...]
    ordered_at: datetime | None
    # When the order happened: ``ordered_at``, else the message's SentTimestamp (UTC).
    occurred_at: datetime
    day: date = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "day", self.occurred_at.date())

    @property
    def fingerprint(self) -> str:
        """Identity of the payload: the same order sent twice has the same fingerprint.

        Built from the normalized fields that define the order (not the SQS envelope), so a
        re-sent identical order is a harmless duplicate and a changed one is a conflict.
        """
        parts = [
            self.order_id,
            self.user_id,
            str(self.value_cents),
            self.ordered_at.isoformat() if self.ordered_at else "",
        ]
        parts += [
            f"{i.product_id or ''}*{i.quantity}*{i.unit_price.normalize()}" for i in self.items
        ]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]
