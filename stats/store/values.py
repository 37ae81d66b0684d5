"""What goes into the store and what comes out of it, and how Redis replies become it.

Money is integer minor units of the shop's currency in Redis (HINCRBY, or added exactly in
the scripts where one field holds a day's three figures); it becomes a
``Decimal`` only on the way out (``orderpipe.money``). Times are epoch milliseconds in Redis and
UTC datetimes here.

The store takes any object with an order's fields (``OrderLike``) or an event's
(``EventLike``): the stats app does not import the orders app, whose ``Order`` and ledger rows
are what arrives in practice.

Redis keeps gross figures and refunds apart (``spend``/``revenue`` gross, ``refunded`` the
refunds); net is always derived (gross - refunded), so aggregates written before refunds
existed read as refunded 0.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    def fingerprint(self) -> str: ...


class RecordedOrderLike(OrderLike, Protocol):
    """An order the ledger holds: ``received_at`` is when it was first recorded."""

    @property
    def received_at(self) -> datetime: ...


class EventLike(Protocol):
    """What the store needs of a refund or cancellation to apply it once. ``kind`` is
    ``OrderEvent.Kind``'s value (``refunded`` or ``cancelled``); ``amount_cents`` is what it
    took off its order (a cancellation: what was left unrefunded). It counts on the day it
    occurred in the store's zone (refunds count on their own day, not the order's)."""

    @property
    def event_id(self) -> str: ...
    @property
    def order_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def items(self) -> Sequence[object]: ...


# The kind of event that cancels its order (``OrderEvent.Kind.CANCELLED``'s value).
CANCELLED = "cancelled"


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
    # False: a context order (the order of an event in the batch, recorded earlier), applied
    # first if its mark is absent and it is inside the window, so Redis never holds a refund
    # without its order, but not one of the batch's messages (not counted as received).
    counted: bool = True


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event on its way to Redis: ``first_recorded_at`` is when the ledger recorded it
    (the window rule of its mark, as for orders); ``counted`` says whether its message is
    one of the batch's (an event that waited for its order has none any more)."""

    event: EventLike
    first_recorded_at: datetime | None = None
    counted: bool = True


@dataclass(frozen=True, slots=True)
class BatchApplied:
    statuses: list[ApplyStatus]  # one per order, in order
    rejections_counted: int
    event_statuses: list[ApplyStatus] = field(default_factory=list)  # one per event, in order


@dataclass(frozen=True, slots=True)
class UserStats:
    """A user's figures: ``total_spend_cents`` is GROSS (what the orders were worth, the
    hash's ``spend``), ``refunded_cents`` what was given back, ``net_spend_cents`` the
    difference. ``order_count`` counts orders placed, cancelled ones included."""

    user_id: str
    order_count: int
    total_spend_cents: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    refunded_cents: int = 0
    cancelled_orders: int = 0

    @property
    def gross_spend_cents(self) -> int:
        return self.total_spend_cents

    @property
    def net_spend_cents(self) -> int:
        return self.total_spend_cents - self.refunded_cents


@dataclass(frozen=True, slots=True)
class GlobalStats:
    """``total_revenue_cents`` is GROSS; ``net_revenue_cents`` is it less the refunds."""

    total_orders: int
    total_revenue_cents: int
    unique_users: int
    refunded_cents: int = 0
    cancelled_orders: int = 0

    @property
    def gross_revenue_cents(self) -> int:
        return self.total_revenue_cents

    @property
    def net_revenue_cents(self) -> int:
        return self.total_revenue_cents - self.refunded_cents


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int
    user_id: str
    value: int  # NET cents for spenders (gross - refunded), orders placed for buyers


@dataclass(frozen=True, slots=True)
class DayStats:
    """A day: orders placed on it and their GROSS value (``total_revenue_cents``), and the
    refunds that occurred on it (``refunded_cents``, whatever day their orders were)."""

    day: date
    total_orders: int
    total_revenue_cents: int
    refunded_cents: int = 0

    @property
    def gross_revenue_cents(self) -> int:
        return self.total_revenue_cents

    @property
    def net_revenue_cents(self) -> int:
        return self.total_revenue_cents - self.refunded_cents


@dataclass(frozen=True, slots=True)
class HourStats:
    """A local hour of the shop's zone (``start``: when it began, aware, in that zone): the
    orders placed in it and their GROSS value, and the refunds that occurred in it
    (``refunded_cents``, whatever hour their orders were), as a day's."""

    start: datetime
    total_orders: int
    gross_revenue_cents: int
    refunded_cents: int = 0

    @property
    def net_revenue_cents(self) -> int:
        return self.gross_revenue_cents - self.refunded_cents


@dataclass(frozen=True, slots=True)
class IngestionStats:
    received: int
    applied: int
    duplicates: int
    rejected: int
    rejected_by_code: dict[str, int]
    last_batch_at: datetime | None
    heartbeat_at: datetime | None
    # Event messages received (those of the batches; an event that waited for its order is
    # counted when its message came), applied now, and found applied already.
    events_received: int = 0
    events_applied: int = 0
    events_duplicates: int = 0


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


def packed(*figures: int) -> str:
    """A field of the days or hours hash (``<orders>:<gross cents>:<refunded cents>``): its
    figures joined by ``:``."""
    return ":".join(map(str, figures))


def unpacked(value: bytes | str) -> tuple[int, ...]:
    """A field of the days or hours hash read back: its figures."""
    parts = value.split(b":") if isinstance(value, bytes) else value.split(":")
    return tuple(map(int, parts))


# What ``user_from_row`` reads of a user hash, in its order.
USER_FIELDS = ("orders", "spend", "first", "last", "refunded", "cancelled")


def user_from_row(user_id: str, row: Sequence[Any]) -> UserStats | None:
    """A user hash read as ``HMGET <USER_FIELDS>``; None when there is none (a hash without
    ``refunded``/``cancelled``, written before events existed, reads as 0)."""
    orders, spend, first, last, refunded, cancelled = row
    if orders is None:
        return None
    return UserStats(
        user_id=user_id,
        order_count=int(orders),
        total_spend_cents=int_or_zero(spend),
        first_order_at=ms_to_datetime(first),
        last_order_at=ms_to_datetime(last),
        refunded_cents=int_or_zero(refunded),
        cancelled_orders=int_or_zero(cancelled),
    )
