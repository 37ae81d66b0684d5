"""What goes into the store and what comes out of it, and how Redis replies become it.

Money is integer minor units of the shop's currency in Redis (HINCRBY, exact); it becomes a
``Decimal`` only on the way out (``orderpipe.money``). Times are epoch milliseconds in Redis and
UTC datetimes here.

The store takes any object with an order's fields (``OrderLike``): the stats app does not
import the orders app, whose ``Order`` and ledger rows are what arrives in practice.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from orderpipe.timeutils import from_epoch_ms


class OrderLike(Protocol):
    """What the store needs of an order to apply it or to find its mark. An order that also
    has a ``legacy_fingerprint`` (the form earlier releases wrote into marks) has a mark of
    that form recognised as its own."""

    @property
    def order_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def value_cents(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def day(self) -> date: ...
    @property
    def fingerprint(self) -> str: ...


class RecordedOrderLike(OrderLike, Protocol):
    """An order the ledger holds: ``received_at`` is when it was first recorded."""

    @property
    def received_at(self) -> datetime: ...


class ApplyStatus(enum.IntEnum):
    DUPLICATE = 0
    APPLIED = 1
    CONFLICT = 2  # the mark holds another payload's fingerprint (one applied before the ledger)
    BEFORE_WINDOW = 3  # no mark, first recorded before the marks' window: never applied again


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order on its way to Redis: ``first_recorded_at`` is when the ledger first saw it
    (None: just now), which decides what a missing mark means."""

    order: OrderLike
    first_recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BatchApplied:
    statuses: list[ApplyStatus]  # one per order, in order
    rejections_counted: int


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    order_count: int
    total_spend_cents: int
    first_order_at: datetime | None
    last_order_at: datetime | None


@dataclass(frozen=True, slots=True)
class GlobalStats:
    total_orders: int
    total_revenue_cents: int
    unique_users: int


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int
    user_id: str
    value: int  # cents for spenders, orders for buyers


@dataclass(frozen=True, slots=True)
class DayStats:
    day: date
    total_orders: int
    total_revenue_cents: int


@dataclass(frozen=True, slots=True)
class IngestionStats:
    received: int
    applied: int
    duplicates: int
    rejected: int
    rejected_by_code: dict[str, int]
    last_batch_at: datetime | None
    heartbeat_at: datetime | None


# --- Redis replies ---------------------------------------------------------------------------
def int_or_zero(value: bytes | str | None) -> int:
    return int(value) if value is not None else 0


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ms_to_datetime(value: bytes | str | int | None) -> datetime | None:
    return from_epoch_ms(int(value)) if value is not None else None


def score_to_int(value: bytes | str | float) -> int:
    # Scores come back as text such as b"-1.5e+15"; Decimal reads any form of it exactly.
    if isinstance(value, bytes):
        value = value.decode()
    return int(Decimal(str(value)))


# What ``user_from_row`` reads of a user hash, in its order.
USER_FIELDS = ("orders", "spend", "first", "last")


def user_from_row(user_id: str, row: Sequence[Any]) -> UserStats | None:
    """A user hash read as ``HMGET <USER_FIELDS>``; None when there is none."""
    orders, spend, first, last = row
    if orders is None:
        return None
    return UserStats(
        user_id=user_id,
        order_count=int(orders),
        total_spend_cents=int_or_zero(spend),
        first_order_at=ms_to_datetime(first),
        last_order_at=ms_to_datetime(last),
    )
