"""Reproducible sample orders for ``populate_sqs``, tests, benchmarks and chaos tests.

Every message says what it is (``kind``) and what the pipeline must do with it
(``expected_code``), and ``expected_totals`` computes the aggregates from that metadata alone,
never through the validator: an oracle that shares code with the thing it checks proves nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from orders.validation import (
    CURRENCY_MISMATCH,
    DUPLICATE_ORDER_ID,
    INVALID_FIELD,
    INVALID_ITEMS,
    INVALID_JSON,
    INVALID_TIMESTAMP,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    ORDER_VALIDATOR_CODES,
    TOO_MANY_DECIMALS,
    VALUE_MISMATCH,
)

Kind = Literal["valid", "invalid", "duplicate", "conflict"]

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
    """

    body: str
    kind: Kind
    order_id: str | None
    user_id: str | None
    value_cents: int | None
    day: date | None
    expected_code: str | None


@dataclass
class UserTotals:
    order_count: int = 0
    total_spend_cents: int = 0


@dataclass
class DayTotals:
    order_count: int = 0
    revenue_cents: int = 0


@dataclass
class Totals:
    """What the aggregates must read after every message was processed (in any order)."""

    users: dict[str, UserTotals] = field(default_factory=dict)
    days: dict[date, DayTotals] = field(default_factory=dict)
    total_orders: int = 0
    total_revenue_cents: int = 0
    rejected: int = 0
    # Per product: units and revenue in cents (each order's lines of a product rounded once).
    products: dict[str, list[int]] = field(default_factory=dict)


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


class SampleGenerator:
    """Deterministic stream of sample messages: the same seed (and ``today``) gives the same list.

    ``today`` defaults to the current UTC date, which makes timestamps (and so bodies) depend
    on the day they are generated; pass it to pin the output completely.

    A conflict reuses an earlier order's id, user and timestamp with different items, so
    per-user and per-day order counts do not depend on which version arrives first; spend and
    revenue assume the earlier (original) version was applied, as when messages are sent and
    consumed in order.
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
    ) -> None:
        if users < 1 or days < 1:
            raise ValueError("users and days must be at least 1")
        if min(invalid_ratio, duplicate_ratio, conflict_ratio) < 0 or (
            invalid_ratio + duplicate_ratio + conflict_ratio > 1
        ):
            raise ValueError("ratios must be ≥ 0 and add up to at most 1")
        self.seed = seed
        self.users = users
        self.days = days
        self.invalid_ratio = invalid_ratio
        self.duplicate_ratio = duplicate_ratio
        self.conflict_ratio = conflict_ratio
        self.today = today or datetime.now(UTC).date()
        self._user_width = max(4, len(str(users)))

    def messages(self, count: int) -> list[SampleMessage]:
        return list(self.iter_messages(count))

    def iter_messages(self, count: int) -> Iterator[SampleMessage]:
        """``count`` messages; a fresh iteration restarts the same sequence."""
        rng = random.Random(self.seed)
        originals: list[tuple[SampleMessage, dict[str, Any]]] = []
        invalid_index = 0
        serial = 0
        for _ in range(count):
            roll = rng.random()
            if roll < self.invalid_ratio:
                serial += 1
                code = INVALID_CYCLE[invalid_index % len(INVALID_CYCLE)]
                invalid_index += 1
                doc, _, _ = self._order(rng, serial)
                yield self._invalid(rng, doc, code)
                continue
            roll -= self.invalid_ratio
            if roll < self.duplicate_ratio and originals:
                original, _ = rng.choice(originals)
                yield SampleMessage(
                    body=original.body,
                    kind="duplicate",
                    order_id=original.order_id,
                    user_id=original.user_id,
                    value_cents=original.value_cents,
                    day=original.day,
                    expected_code=None,
                )
                continue
            roll -= self.duplicate_ratio
            if roll < self.conflict_ratio and originals:
                original, original_doc = rng.choice(originals)
                yield self._conflict(rng, original, original_doc)
                continue
            serial += 1
            doc, cents, day = self._order(rng, serial)
            message = SampleMessage(
                body=json.dumps(doc),
                kind="valid",
                order_id=doc["order_id"],
                user_id=doc["user_id"],
                value_cents=cents,
                day=day,
                expected_code=None,
            )
            originals.append((message, doc))
            yield message

    # --- builders -----------------------------------------------------------------------------
    def _order(self, rng: random.Random, serial: int) -> tuple[dict[str, Any], int, date]:
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
        return doc, cents, moment.date()

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


def expected_totals(messages: Iterable[SampleMessage]) -> Totals:
    """The aggregates the pipeline must produce, from the generator's metadata alone.

    Each valid order counts once; duplicates and conflicts change nothing; invalid messages
    and conflicts count as rejected.
    """
    totals = Totals()
    for message in messages:
        if message.kind in ("invalid", "conflict"):
            totals.rejected += 1
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
        per_product: dict[str, list[Any]] = {}
        for item in json.loads(message.body, parse_float=Decimal)["items"]:
            if item.get("product_id") is not None:
                found = per_product.setdefault(item["product_id"], [0, Decimal(0)])
                found[0] += item["quantity"]
                found[1] += item["quantity"] * Decimal(item["price_per_unit"])
        for product_id, (units, value) in per_product.items():
            product = totals.products.setdefault(product_id, [0, 0])
            product[0] += units
            product[1] += int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return totals


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
