"""Reproducible sample orders, refunds and cancellations for ``populate_sqs``, tests,
benchmarks and chaos tests.

Every message says what it is (``kind``) and what the pipeline must do with it
(``expected_code``), and ``expected_totals`` computes the aggregates from that metadata alone,
never through the validator or the ledger's rules: an oracle that shares code with the thing it
checks proves nothing.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from orders.validation import (
    CURRENCY_MISMATCH,
    DUPLICATE_EVENT_ID,
    DUPLICATE_ORDER_ID,
    INVALID_FIELD,
    INVALID_ITEMS,
    INVALID_JSON,
    INVALID_TIMESTAMP,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    ORDER_VALIDATOR_CODES,
    REFUND_EXCEEDS_ITEMS,
    REFUND_EXCEEDS_ORDER,
    TOO_MANY_DECIMALS,
    TYPE_CANCELLED,
    TYPE_REFUNDED,
    VALUE_MISMATCH,
)

Kind = Literal[
    "valid",
    "invalid",
    "duplicate",
    "conflict",
    # Events: an accepted refund or cancellation, the same event sent again (a redelivery),
    # the same event_id with another payload (rejected: duplicate_event_id), and a refund worth
    # more than its order or than its items (rejected whatever else the order went through).
    "refund",
    "cancel",
    "event_duplicate",
    "event_conflict",
    "over_refund",
]
EVENT_KINDS: tuple[Kind, ...] = (
    "refund",
    "cancel",
    "event_duplicate",
    "event_conflict",
    "over_refund",
)

# Invalid samples are orders, and cycle through every code the validator can give an order.
INVALID_CYCLE: tuple[str, ...] = ORDER_VALIDATOR_CODES
# Foreign currencies of the currency_mismatch samples: ISO 4217 codes without a minor unit
# (gold, special drawing rights, the testing code, "no currency"), so none can be the shop's
# STATS_CURRENCY and the sample is refused whatever the shop counts in.
FOREIGN_CURRENCIES = ("XAU", "XDR", "XTS", "XXX")


@dataclass(frozen=True, slots=True)
class SampleMessage:
    """One message body and what the pipeline must make of it.

    ``value_cents``/``day`` are the order's as the generator built it (None for invalid ones);
    ``expected_code`` is the single rejection code it must get (``duplicate_order_id`` for a
    conflict, which only the store can see; None when it must be accepted).

    An event (``kind`` in ``EVENT_KINDS``) has its ``event_id``, its order's ``order_id`` and
    ``user_id``, ``day`` = the UTC date of its ``occurred_at`` (the day its refund counts on),
    ``refund_cents`` = what it takes off the order when accepted (a cancellation: the order's
    whole value, as the generator never refunds part of an order it cancels) and
    ``before_order`` when it is sent before its order.
    """

    body: str
    kind: Kind
    order_id: str | None
    user_id: str | None
    value_cents: int | None
    day: date | None
    expected_code: str | None
    event_id: str | None = None
    refund_cents: int | None = None
    before_order: bool = False

    @property
    def is_event(self) -> bool:
        return self.kind in EVENT_KINDS


@dataclass
class UserTotals:
    """A user's figures: ``total_spend_cents`` is GROSS (what was ordered); ``net_cents`` is
    what the API serves as ``total_spend`` and ranks by."""

    order_count: int = 0
    total_spend_cents: int = 0
    refunded_cents: int = 0
    cancelled_orders: int = 0

    @property
    def net_cents(self) -> int:
        return self.total_spend_cents - self.refunded_cents


@dataclass
class DayTotals:
    """A day's orders and gross revenue (orders placed that day) and refunds (events that
    occurred that day, Shopify's rule)."""

    order_count: int = 0
    revenue_cents: int = 0
    refunded_cents: int = 0

    @property
    def net_cents(self) -> int:
        return self.revenue_cents - self.refunded_cents


@dataclass
class Totals:
    """What the aggregates must read after every message was processed (in any order)."""

    users: dict[str, UserTotals] = field(default_factory=dict)
    days: dict[date, DayTotals] = field(default_factory=dict)
    total_orders: int = 0
    total_revenue_cents: int = 0
    refunded_cents: int = 0
    cancelled_orders: int = 0
    rejected: int = 0
    # Per product: units and revenue in cents (each order's lines of a product rounded once).
    products: dict[str, list[int]] = field(default_factory=dict)
    events_applied: int = 0

    @property
    def net_revenue_cents(self) -> int:
        return self.total_revenue_cents - self.refunded_cents


def _money(cents: int) -> float:
    # Safe: a value below 1e13 cents has at most 15 significant digits, and Python's float
    # repr gives back the shortest string that round-trips, i.e. exactly "<units>.<cents>".
    return float(Decimal(cents) / 100)


def _timestamp(moment: datetime, style: int) -> str:
    """The same instant written in several ISO 8601 styles the validator must all accept."""
    if style == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == 1:
        return moment.isoformat()  # +00:00
    if style == 2:
        return moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    if style == 3:
        return moment.astimezone(timezone(timedelta(hours=-7))).isoformat()
    return moment.replace(tzinfo=None).isoformat()  # no offset means UTC


# The reasons sample events give; a conflicting re-send changes only the reason (another
# payload, the same figures), so what the aggregates read does not depend on which version of
# the event is recorded first.
REFUND_REASONS: tuple[str | None, ...] = ("arrived damaged", "wrong size", "changed mind", None)
CANCEL_REASONS: tuple[str | None, ...] = ("customer request", "payment failed", None)
# How far behind their order events come: its time plus 10 minutes to 3 days (never after the
# generator's ``today``), and in the stream up to this many messages after it.
EVENT_LAG_SECONDS = (600, 3 * 86400)
EVENT_LAG_MESSAGES = 50
# An order whose event is sent before it comes up to this many messages after that event.
ORDER_LAG_MESSAGES = 20
# A redelivered or conflicting re-send of an event comes up to this many messages after it.
RESEND_LAG_MESSAGES = 100


@dataclass(frozen=True, slots=True)
class _Placed:
    """A valid order as the event planner needs it: its message, time and lines
    (product_id, quantity, unit price in cents)."""

    message: SampleMessage
    moment: datetime
    lines: tuple[tuple[str, int, int], ...]


class _Schedule:
    """The stream's clock (messages yielded so far) and the messages due later: a heap by due
    position (ties in scheduling order), and per order not sent yet what follows it."""

    def __init__(self) -> None:
        self.sent = 0
        self._seq = 0
        self._heap: list[tuple[int, int, SampleMessage]] = []
        self.after: dict[str, list[tuple[int, SampleMessage]]] = {}

    def later(self, delay: int, message: SampleMessage) -> None:
        heapq.heappush(self._heap, (self.sent + delay, self._seq, message))
        self._seq += 1

    def due(self, everything: bool = False) -> Iterator[SampleMessage]:
        while self._heap and (everything or self._heap[0][0] <= self.sent):
            yield heapq.heappop(self._heap)[2]


class SampleGenerator:
    """Deterministic stream of sample messages: the same seed (and ``today``) gives the same list.

    ``today`` defaults to the current UTC date, which makes timestamps (and so bodies) depend
    on the day they are generated; pass it to pin the output completely.

    A conflict reuses an earlier order's id, user and timestamp with different items, so
    per-user and per-day order counts do not depend on which version arrives first; spend and
    revenue assume the earlier (original) version was applied, as when messages are sent and
    consumed in order.

    Events (all ratios 0 by default: a stream of orders only): ``refund_ratio`` of the valid
    orders are refunded, in whole (by amount), in part by amount (sometimes twice) or in part by
    items (units of a product the order has on one line, with or without the amount they come
    to); ``cancel_ratio`` of them are cancelled instead (never both, so that no arrival order
    can turn a refund into an ``order_cancelled`` reject). Of the events, ``early_event_ratio``
    are sent before their order (the order follows within ``ORDER_LAG_MESSAGES``),
    ``event_duplicate_ratio`` are sent twice (a redelivery) and ``event_conflict_ratio`` (of
    those not sent twice) are followed by the same ``event_id`` with another reason.
    ``over_refund_ratio`` of the orders not cancelled get a refund worth more than the order or
    more units than it has: rejected whatever else happened to the order. The accepted events of
    an order never take more than its value or its units, in any arrival order.

    Events come from a random stream of their own, so the orders (bodies and order) are the
    same whatever the event ratios; ``count`` counts the order messages, the events come on top.
    """

    def __init__(
        self,
        seed: int,
        users: int = 100,
        days: int = 30,
        invalid_ratio: float = 0.1,
        duplicate_ratio: float = 0.0,
        conflict_ratio: float = 0.0,
        today: date | None = None,
        *,
        refund_ratio: float = 0.0,
        cancel_ratio: float = 0.0,
        early_event_ratio: float = 0.0,
        event_duplicate_ratio: float = 0.0,
        event_conflict_ratio: float = 0.0,
        over_refund_ratio: float = 0.0,
    ) -> None:
        if users < 1 or days < 1:
            raise ValueError("users and days must be at least 1")
        if min(invalid_ratio, duplicate_ratio, conflict_ratio) < 0 or (
            invalid_ratio + duplicate_ratio + conflict_ratio > 1
        ):
            raise ValueError("ratios must be ≥ 0 and add up to at most 1")
        event_ratios = (
            refund_ratio,
            cancel_ratio,
            early_event_ratio,
            event_duplicate_ratio,
            event_conflict_ratio,
            over_refund_ratio,
        )
        if not all(0 <= r <= 1 for r in event_ratios) or refund_ratio + cancel_ratio > 1:
            raise ValueError(
                "event ratios must be between 0 and 1, refund and cancel ratios add up to at most 1"
            )
        self.seed = seed
        self.users = users
        self.days = days
        self.invalid_ratio = invalid_ratio
        self.duplicate_ratio = duplicate_ratio
        self.conflict_ratio = conflict_ratio
        self.refund_ratio = refund_ratio
        self.cancel_ratio = cancel_ratio
        self.early_event_ratio = early_event_ratio
        self.event_duplicate_ratio = event_duplicate_ratio
        self.event_conflict_ratio = event_conflict_ratio
        self.over_refund_ratio = over_refund_ratio
        self.today = today or datetime.now(UTC).date()
        self._user_width = max(4, len(str(users)))
        self._last_moment = datetime.combine(self.today, datetime.max.time(), UTC)

    def messages(self, count: int) -> list[SampleMessage]:
        return list(self.iter_messages(count))

    def iter_messages(self, count: int) -> Iterator[SampleMessage]:
        """``count`` order messages and their events; a fresh iteration restarts the same
        sequence."""
        rng = random.Random(self.seed)
        events = random.Random(f"events:{self.seed}")
        schedule = _Schedule()
        originals: list[tuple[SampleMessage, dict[str, Any]]] = []
        serials = {"order": 0, "event": 0, "invalid": 0}
        for _ in range(count):
            yield from self._send(events, schedule, schedule.due())
            message, placed = self._next_order(rng, serials, originals)
            order_id = message.order_id
            if placed is not None and order_id is not None:
                planned = self._plan_events(events, placed, serials)
                early = [m for m in planned if m.before_order]
                schedule.after[order_id] = [
                    (events.randint(1, EVENT_LAG_MESSAGES), m)
                    for m in planned
                    if not m.before_order
                ]
                if early:
                    yield from self._send(events, schedule, early)
                    schedule.later(events.randint(1, ORDER_LAG_MESSAGES), message)
                    continue
            elif message.kind == "conflict" and order_id in schedule.after:
                # Its original is still held back behind an early event: it follows it.
                schedule.after[order_id].append((events.randint(1, EVENT_LAG_MESSAGES), message))
                continue
            yield from self._send(events, schedule, [message])
        yield from self._send(events, schedule, schedule.due(everything=True))

    def _send(
        self, rng: random.Random, schedule: _Schedule, messages: Iterable[SampleMessage]
    ) -> Iterator[SampleMessage]:
        """Yield ``messages`` (and what falls due meanwhile), scheduling what follows each: an
        order's events, an accepted event's redelivery or conflicting re-send."""
        for message in list(messages):
            yield message
            schedule.sent += 1
            if message.kind == "valid" and message.order_id is not None:
                for delay, follower in schedule.after.pop(message.order_id, []):
                    schedule.later(delay, follower)
            elif message.kind in ("refund", "cancel"):
                if rng.random() < self.event_duplicate_ratio:
                    again = replace(message, kind="event_duplicate", before_order=False)
                    schedule.later(rng.randint(1, RESEND_LAG_MESSAGES), again)
                elif rng.random() < self.event_conflict_ratio:
                    schedule.later(rng.randint(1, RESEND_LAG_MESSAGES), _event_conflict(message))

    def _next_order(
        self,
        rng: random.Random,
        serials: dict[str, int],
        originals: list[tuple[SampleMessage, dict[str, Any]]],
    ) -> tuple[SampleMessage, _Placed | None]:
        """The next order message (as before events existed: the same ``rng`` draws), and for
        a valid one what its events are planned from."""
        roll = rng.random()
        if roll < self.invalid_ratio:
            serials["order"] += 1
            code = INVALID_CYCLE[serials["invalid"] % len(INVALID_CYCLE)]
            serials["invalid"] += 1
            doc, _, _ = self._order(rng, serials["order"])
            return self._invalid(rng, doc, code), None
        roll -= self.invalid_ratio
        if roll < self.duplicate_ratio and originals:
            original, _ = rng.choice(originals)
            return replace(original, kind="duplicate"), None
        roll -= self.duplicate_ratio
        if roll < self.conflict_ratio and originals:
            original, original_doc = rng.choice(originals)
            return self._conflict(rng, original, original_doc), None
        serials["order"] += 1
        doc, cents, moment = self._order(rng, serials["order"])
        message = SampleMessage(
            body=json.dumps(doc),
            kind="valid",
            order_id=doc["order_id"],
            user_id=doc["user_id"],
            value_cents=cents,
            day=moment.date(),
            expected_code=None,
        )
        originals.append((message, doc))
        lines = tuple(
            (i["product_id"], i["quantity"], round(Decimal(str(i["price_per_unit"])) * 100))
            for i in doc["items"]
        )
        return message, _Placed(message, moment, lines)

    # --- events -------------------------------------------------------------------------------
    def _plan_events(
        self, rng: random.Random, placed: _Placed, serials: dict[str, int]
    ) -> list[SampleMessage]:
        """The events of one valid order, in the order they happen; each flagged when it is to
        be sent before its order."""
        value = placed.message.value_cents
        assert value is not None
        planned: list[SampleMessage] = []
        roll = rng.random()
        cancelled = False
        if roll < self.refund_ratio:
            for fields, cents in self._refunds(rng, placed, value):
                planned.append(self._event(rng, serials, placed, "refund", fields, cents))
        elif roll < self.refund_ratio + self.cancel_ratio:
            planned.append(self._event(rng, serials, placed, "cancel", {}, value))
            cancelled = True
        if not cancelled and rng.random() < self.over_refund_ratio:
            planned.append(self._over_refund(rng, serials, placed, value))
        return [replace(m, before_order=rng.random() < self.early_event_ratio) for m in planned]

    @staticmethod
    def _refunds(
        rng: random.Random, placed: _Placed, value: int
    ) -> list[tuple[dict[str, Any], int]]:
        """An order's refunds (message fields, cents): whole, in part by amount (once or
        twice, never above the value) or in part by items (a product on one line only, so
        the price of each unit is that line's whatever else was refunded)."""
        style = rng.random()
        if style < 0.35 or value < 2:
            return [({"amount": _money(value)}, value)]
        counts: dict[str, int] = {}
        for product_id, _, _ in placed.lines:
            counts[product_id] = counts.get(product_id, 0) + 1
        single = [line for line in placed.lines if counts[line[0]] == 1]
        if style < 0.65 or not single:
            first = rng.randint(1, value - 1)
            refunds = [({"amount": _money(first)}, first)]
            if rng.random() < 0.3:
                second = rng.randint(1, value - first)
                refunds.append(({"amount": _money(second)}, second))
            return refunds
        product_id, quantity, price = rng.choice(single)
        units = rng.randint(1, quantity)
        fields: dict[str, Any] = {"items": [{"product_id": product_id, "quantity": units}]}
        if rng.random() < 0.5:
            fields["amount"] = _money(units * price)
        return [(fields, units * price)]

    def _over_refund(
        self, rng: random.Random, serials: dict[str, int], placed: _Placed, value: int
    ) -> SampleMessage:
        """A refund no state of its order allows: more than its value, or more units of a
        product than it was sold."""
        if rng.random() < 0.5:
            cents = value + rng.randint(1, 10_000)
            message = self._event(rng, serials, placed, "over_refund", {"amount": _money(cents)})
            return replace(message, expected_code=REFUND_EXCEEDS_ORDER)
        product_id = rng.choice(placed.lines)[0]
        sold = sum(q for p, q, _ in placed.lines if p == product_id)
        items = [{"product_id": product_id, "quantity": sold + rng.randint(1, 3)}]
        message = self._event(rng, serials, placed, "over_refund", {"items": items})
        return replace(message, expected_code=REFUND_EXCEEDS_ITEMS)

    def _event(
        self,
        rng: random.Random,
        serials: dict[str, int],
        placed: _Placed,
        kind: Kind,
        fields: dict[str, Any],
        refund_cents: int | None = None,
    ) -> SampleMessage:
        serials["event"] += 1
        event_id = f"EVT{self.seed}-{serials['event']:07d}"
        moment = min(
            placed.moment + timedelta(seconds=rng.randrange(*EVENT_LAG_SECONDS)),
            self._last_moment,
        ).replace(microsecond=0)
        doc: dict[str, Any] = {
            "type": TYPE_CANCELLED if kind == "cancel" else TYPE_REFUNDED,
            "event_id": event_id,
            "order_id": placed.message.order_id,
            **fields,
            "occurred_at": _timestamp(moment, rng.randrange(5)),
        }
        reason = rng.choice(CANCEL_REASONS if kind == "cancel" else REFUND_REASONS)
        if reason is not None:
            doc["reason"] = reason
        return SampleMessage(
            body=json.dumps(doc),
            kind=kind,
            order_id=placed.message.order_id,
            user_id=placed.message.user_id,
            value_cents=None,
            day=moment.date(),
            expected_code=None,
            event_id=event_id,
            refund_cents=refund_cents,
        )

    # --- builders -----------------------------------------------------------------------------
    def _order(self, rng: random.Random, serial: int) -> tuple[dict[str, Any], int, datetime]:
        moment = datetime.combine(
            self.today - timedelta(days=rng.randrange(self.days)), datetime.min.time(), UTC
        ) + timedelta(seconds=rng.randrange(86400))
        items, cents = self._items(rng)
        doc = {
            "order_id": f"ORD{self.seed}-{serial:07d}",
            "user_id": f"U{rng.randint(1, self.users):0{self._user_width}d}",
            "order_timestamp": _timestamp(moment, rng.randrange(5)),
            "order_value": _money(cents),
            "items": items,
            "shipping_address": f"{rng.randint(1, 999)} Main St, Springfield",
            "payment_method": rng.choice(["CreditCard", "PayPal", "BankTransfer"]),
        }
        return doc, cents, moment

    @staticmethod
    def _items(rng: random.Random) -> tuple[list[dict[str, Any]], int]:
        items = []
        cents = 0
        for _ in range(rng.randint(1, 5)):
            quantity = rng.randint(1, 5)
            price = rng.randint(50, 50_000)
            cents += quantity * price
            items.append(
                {
                    "product_id": f"P{rng.randint(1, 500):04d}",
                    "quantity": quantity,
                    "price_per_unit": _money(price),
                }
            )
        return items, cents

    def _conflict(
        self, rng: random.Random, original: SampleMessage, original_doc: dict[str, Any]
    ) -> SampleMessage:
        items, cents = self._items(rng)
        if cents == original.value_cents:
            items[0]["quantity"] += 1
            cents += round(Decimal(str(items[0]["price_per_unit"])) * 100)
        doc = dict(original_doc, items=items, order_value=_money(cents))
        return SampleMessage(
            body=json.dumps(doc),
            kind="conflict",
            order_id=original.order_id,
            user_id=original.user_id,
            value_cents=cents,
            day=original.day,
            expected_code=DUPLICATE_ORDER_ID,
        )

    @staticmethod
    def _invalid(rng: random.Random, doc: dict[str, Any], code: str) -> SampleMessage:
        order_id: str | None = doc["order_id"]
        user_id: str | None = doc["user_id"]
        variant = rng.randrange(4)
        body: str
        if code == INVALID_JSON:
            text = json.dumps(doc)
            body = [
                text[: len(text) // 2],
                text.replace('"order_value": ', '"order_value": NaN, "x": ', 1),
                text + " trailing",
                "{'order_id': 'single quotes'}",
            ][variant]
            order_id = user_id = None
        elif code == NOT_AN_OBJECT:
            body = json.dumps([[doc], "ORD1", 42, None][variant])
            order_id = user_id = None
        elif code == MISSING_FIELD:
            name = ["order_id", "user_id", "order_value", "items"][variant]
            del doc[name]
            body = json.dumps(doc)
            order_id = doc.get("order_id")
            user_id = doc.get("user_id")
        elif code == INVALID_FIELD:
            name, bad = [
                ("order_id", ""),
                ("user_id", 12345),
                ("order_value", str(doc["order_value"])),
                ("order_value", -1.5),
            ][variant]
            doc[name] = bad
            body = json.dumps(doc)
            order_id = doc["order_id"] or None
            user_id = doc["user_id"] if isinstance(doc["user_id"], str) else None
        elif code == INVALID_ITEMS:
            if variant == 0:
                doc["items"] = []
            elif variant == 1:
                doc["items"][0]["quantity"] = 2.5
            elif variant == 2:
                doc["items"][0]["price_per_unit"] = "19.99"
            else:
                doc["items"][0]["quantity"] = True
            body = json.dumps(doc)
        elif code == VALUE_MISMATCH:
            cents = round(Decimal(str(doc["order_value"])) * 100)
            doc["order_value"] = _money(cents + [1, -1, 100, cents or 1][variant])
            if doc["order_value"] < 0:
                doc["order_value"] = _money(cents + 1)
            body = json.dumps(doc)
        elif code == INVALID_TIMESTAMP:
            doc["order_timestamp"] = ["yesterday", "2025-13-45T00:00:00Z", 1723198500, ""][variant]
            body = json.dumps(doc)
        elif code == TOO_MANY_DECIMALS:
            # The value with a fraction of a cent more: JSON text, so no float rounds it away.
            text = json.dumps(doc | {"order_value": "#"})
            value = Decimal(str(doc["order_value"])) + Decimal(
                ["0.001", "0.005", "0.009", "1e-6"][variant]
            )
            body = text.replace('"#"', str(value), 1)
        elif code == CURRENCY_MISMATCH:
            body = json.dumps(doc | {"currency": FOREIGN_CURRENCIES[variant]})
        else:  # pragma: no cover - INVALID_CYCLE holds only the codes above
            raise ValueError(code)
        return SampleMessage(
            body=body,
            kind="invalid",
            order_id=order_id,
            user_id=user_id,
            value_cents=None,
            day=None,
            expected_code=code,
        )


def _event_conflict(message: SampleMessage) -> SampleMessage:
    """The same ``event_id`` with another payload: only its reason differs, so its figures are
    the original's and which of the two is recorded first changes no aggregate."""
    doc = json.loads(message.body)
    doc["reason"] = f"{doc.get('reason') or 'no reason given'} (corrected)"
    return replace(
        message,
        body=json.dumps(doc),
        kind="event_conflict",
        expected_code=DUPLICATE_EVENT_ID,
        before_order=False,
    )


def expected_totals(messages: Iterable[SampleMessage]) -> Totals:
    """The aggregates the pipeline must produce, from the generator's metadata alone.

    Each valid order counts once; duplicates and conflicts change nothing; invalid messages
    and conflicts count as rejected. Each accepted refund or cancellation counts once: its
    cents refunded on its user, on the day it occurred and in total, a cancellation also as a
    cancelled order; redeliveries change nothing; conflicting events and over-refunds count as
    rejected.
    """
    totals = Totals()
    messages_seen: list[SampleMessage] = []
    for message in messages:
        messages_seen.append(message)
        if message.kind in ("invalid", "conflict", "event_conflict", "over_refund"):
            totals.rejected += 1
        if message.kind in ("refund", "cancel"):
            assert message.user_id is not None and message.day is not None
            assert message.refund_cents is not None
            user = totals.users.setdefault(message.user_id, UserTotals())
            user.refunded_cents += message.refund_cents
            day = totals.days.setdefault(message.day, DayTotals())
            day.refunded_cents += message.refund_cents
            totals.refunded_cents += message.refund_cents
            totals.events_applied += 1
            if message.kind == "cancel":
                user.cancelled_orders += 1
                totals.cancelled_orders += 1
            continue
        if message.kind != "valid":
            continue
        assert message.user_id is not None and message.value_cents is not None
        assert message.day is not None
        user = totals.users.setdefault(message.user_id, UserTotals())
        user.order_count += 1
        user.total_spend_cents += message.value_cents
        day = totals.days.setdefault(message.day, DayTotals())
        day.order_count += 1
        day.revenue_cents += message.value_cents
        totals.total_orders += 1
        totals.total_revenue_cents += message.value_cents
    totals.products = _expected_products(list(messages_seen))
    return totals


def _expected_products(messages: list[SampleMessage]) -> dict[str, list[int]]:
    """Per product: units and revenue in cents, net. Each valid order's lines of a product
    rounded once; a refund by items takes its units at the price of the order's one line of
    that product; a cancellation (the generator cancels only orders it never refunded) takes
    all of its order's lines; a refund by amount takes nothing."""
    orders: dict[str, dict[str, list[Any]]] = {}
    for message in messages:
        if message.kind != "valid" or message.order_id is None:
            continue
        per_product: dict[str, list[Any]] = {}
        for item in json.loads(message.body, parse_float=Decimal)["items"]:
            if item.get("product_id") is not None:
                found = per_product.setdefault(item["product_id"], [0, Decimal(0), Decimal(0)])
                found[0] += item["quantity"]
                found[1] += item["quantity"] * Decimal(item["price_per_unit"])
                found[2] = Decimal(item["price_per_unit"])
        orders[message.order_id] = per_product
    products: dict[str, list[int]] = {}

    def add(product_id: str, units: int, value: Decimal) -> None:
        product = products.setdefault(product_id, [0, 0])
        product[0] += units
        product[1] += int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))

    for per_product in orders.values():
        for product_id, (units, value, _price) in per_product.items():
            add(product_id, units, value)
    for message in messages:
        if message.kind not in ("refund", "cancel") or message.order_id not in orders:
            continue
        lines = orders[message.order_id]
        if message.kind == "cancel":
            for product_id, (units, value, _price) in lines.items():
                add(product_id, -units, -value)
            continue
        for item in json.loads(message.body).get("items", []):
            price = lines[item["product_id"]][2]
            add(item["product_id"], -item["quantity"], -item["quantity"] * price)
    return products


# Bodies that have broken naive pipelines; every one must be rejected (never crash a consumer).
POISON_EXPECTED_CODES: dict[str, str] = {
    "lone_surrogate_ids": INVALID_FIELD,
    "nul_in_ids": INVALID_FIELD,
    "deep_nesting": INVALID_JSON,
    "large_250k": MISSING_FIELD,
    "invalid_json": INVALID_JSON,
    "nan_value": INVALID_JSON,
    "huge_int_value": INVALID_FIELD,
    "not_an_object": NOT_AN_OBJECT,
}


def poison_bodies() -> dict[str, str]:
    """Named hostile bodies (all sendable through SQS); ``POISON_EXPECTED_CODES`` says the code.

    Lone surrogates and NUL appear as JSON escapes, the only way they can travel in an SQS
    body, and must come out as storable text in the database (PostgreSQL refuses both).
    """
    item = '"items": [{"product_id": "P0001", "quantity": 1, "price_per_unit": 1.00}]'
    return {
        "lone_surrogate_ids": (
            '{"order_id": "\\ud800", "user_id": "U\\udfff", "order_value": 1.00, '
            '"order_timestamp": "2025-08-09T10:15:00Z", ' + item + "}"
        ),
        "nul_in_ids": (
            '{"order_id": "ORD\\u0000X", "user_id": "U\\u0000", "order_value": 1.00, '
            '"order_timestamp": "2025-08-09T10:15:00Z", ' + item + "}"
        ),
        "deep_nesting": "[" * 100_000 + "]" * 100_000,
        "large_250k": json.dumps(
            {
                "order_id": "ORD-LARGE",
                "order_value": 1.0,
                "order_timestamp": "2025-08-09T10:15:00Z",
                "items": [{"product_id": "P0001", "quantity": 1, "price_per_unit": 1.0}],
                "shipping_address": "x" * (250 * 1024 - 200),
            }
        ),
        "invalid_json": '{"order_id": "ORD-BROKEN", "user_id": "U0001", "order_value": ',
        "nan_value": (
            '{"order_id": "ORD-NAN", "user_id": "U0001", "order_value": NaN, ' + item + "}"
        ),
        "huge_int_value": (
            '{"order_id": "ORD-HUGE", "user_id": "U0001", "order_value": 1'
            + "0" * 5000
            + ", "
            + item
            + "}"
        ),
        "not_an_object": '["ORD-ARRAY", "U0001", 1.00]',
    }
