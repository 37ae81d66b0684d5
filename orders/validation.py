"""The order contract: raw SQS body in, a normalized ``Order`` or every reason out.

Pure: no I/O, no Django models, no Redis, no SQS. Numbers are parsed exactly from the JSON
text (``Decimal``), never through floats.

``validate_message`` never raises: whatever arrives on the queue (non-UTF-8 bytes, NaN,
100 000 levels of ``[``, 5 000-digit integers, lone surrogates, NUL) ends up either as an
``Order`` or as a ``Rejection`` a consumer can store and delete. A validator that raises on
a poison message would make that message loop until the dead-letter queue and hide the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Clamped,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from typing import Any

from orderpipe.timeutils import from_epoch_ms

# --- Rejection codes. Stable: stored in the database and filtered on. -----------------------
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
INVALID_ITEMS = "invalid_items"
VALUE_MISMATCH = "value_mismatch"
INVALID_TIMESTAMP = "invalid_timestamp"
DUPLICATE_ORDER_ID = "duplicate_order_id"

ALL_CODES: tuple[str, ...] = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_FIELD,
    INVALID_ITEMS,
    VALUE_MISMATCH,
    INVALID_TIMESTAMP,
    DUPLICATE_ORDER_ID,
)
# The codes ``validate_message`` itself can produce (conflicting re-sends are found by the
# ledger).
VALIDATOR_CODES: tuple[str, ...] = ALL_CODES[:-1]

# --- Limits ---------------------------------------------------------------------------------
MAX_BODY_BYTES = 256 * 1024
MAX_ID_LENGTH = 128
MAX_ITEMS = 1000
MAX_ORDER_VALUE = Decimal(1_000_000_000)
# Stored ids in a Rejection are cut to the model column's length.
MAX_STORED_ID_LENGTH = 255
# A thousand broken items would otherwise produce thousands of reasons; the first few say it.
MAX_ITEM_REASONS = 10
MAX_TIMESTAMP_LENGTH = 64

_CENTS = Decimal("0.01")
# Exact arithmetic: enough digits for any realistic price, traps instead of silent rounding.
_EXACT = Context(
    prec=2000,
    rounding=ROUND_HALF_UP,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, InvalidOperation, Overflow],
)
# Rounding to cents is allowed to discard digits (that is the point of it).
_ROUNDING = Context(
    prec=2000, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation]
)
# Canonical numbers for the fingerprint: exact, whatever the digits or the exponent. No number
# in a body has more digits than the body has bytes, so nothing is ever rounded; a value the
# context could not normalize exactly raises (and is rejected by the validator).
_CANONICAL = Context(
    prec=MAX_BODY_BYTES,
    rounding=ROUND_HALF_UP,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, Rounded, Clamped, InvalidOperation, Overflow],
)
# The fingerprint before version 2 normalized with Python's default context (28 digits);
# spelled out so that it stays the same whatever a thread's context is.
_LEGACY = Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    Emax=999999,
    Emin=-999999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
FINGERPRINT_VERSION = 2
# Past this the sum can never round to an order_value ≤ MAX_ORDER_VALUE: stop multiplying.
_SUM_CEILING = MAX_ORDER_VALUE + 1
# Whitespace trimmed around ids: what str.strip() removes except the control characters it
# also counts as whitespace (U+001C-001F, U+0085), which must be rejected, not trimmed.
_TRIM = (
    " \t\n\v\f\r\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


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
        re-sent identical order is a harmless duplicate and a changed one is a conflict. It is
        canonical: the items in any order, and any spelling of the same number (``1.5``,
        ``1.50``, ``15e-1``; ``-0`` and ``0``), give the same fingerprint, while numbers that
        differ in their 30th digit or their exponent do not. Versioned (``"2:" + hex``), so a
        mark written by an older release is recognised by its form (see legacy_fingerprint).
        """
        items = sorted(
            (i.product_id or "", i.product_id is None, i.quantity, canonical_number(i.unit_price))
            for i in self.items
        )
        when = self.ordered_at.astimezone(UTC).isoformat() if self.ordered_at else None
        # JSON quotes every string, so no id can imitate a separator.
        text = json.dumps([self.order_id, self.user_id, self.value_cents, when, items])
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{FINGERPRINT_VERSION}:{digest}"

    @property
    def legacy_fingerprint(self) -> str:
        """The fingerprint of releases before version 2, unchanged (items in message order,
        prices normalized to 28 digits), so that an idempotency mark written by one of them
        is still recognised: a message redelivered across the upgrade is a duplicate."""
        parts = [
            self.order_id,
            self.user_id,
            str(self.value_cents),
            self.ordered_at.isoformat() if self.ordered_at else "",
        ]
        parts += [
            f"{i.product_id or ''}*{i.quantity}*{i.unit_price.normalize(_LEGACY)}"
            for i in self.items
        ]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Reason:
    """One broken rule: a stable ``code``, the JSON path it concerns, and a message for staff."""

    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Every reason a message is not a valid order, plus the ids staff will search for.

    ``order_id``/``user_id`` are whatever strings the message carried (even invalid ones),
    escaped so they are safe in any text column (see ``safe_text``); None when absent.
    ``sent_at`` is the message's (first) SQS SentTimestamp, so that a corrected order
    resubmitted from the admin without ``order_timestamp`` keeps its day.
    """

    reasons: tuple[Reason, ...]
    order_id: str | None = None
    user_id: str | None = None
    sent_at: datetime | None = None

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(sorted({r.code for r in self.reasons}))

    def as_dicts(self) -> list[dict[str, str]]:
        return [r.as_dict() for r in self.reasons]


def canonical_number(value: Decimal) -> str:
    """One spelling per value: ``1.50``, ``15e-1`` and ``1.5`` are all ``"1.5"``, any zero
    (``-0``, ``0.00``, ``0e9``) is ``"0"``; exact in ``_CANONICAL`` (raises rather than round)."""
    if value.is_zero():
        return "0"
    return str(value.normalize(_CANONICAL))


def safe_text(value: str, max_length: int = MAX_STORED_ID_LENGTH) -> str:
    """``value`` made storable in PostgreSQL text: lone surrogates and NUL become escapes.

    PostgreSQL refuses NUL in text and psycopg cannot encode lone surrogates; a rejected
    message carrying them must still be recorded, so they are written as ``\\ud800``/``\\x00``.
    """
    text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:max_length]


def conflict_rejection(order: Order) -> Rejection:
    """The rejection for an order whose id was already applied with a different payload.

    The validator cannot see this (it needs what was recorded before); the batch commit
    builds it when the ledger holds this ``order_id`` with another fingerprint. An undated
    order was dated by its SentTimestamp, so ``occurred_at`` is that.
    """
    return Rejection(
        reasons=(
            Reason(
                DUPLICATE_ORDER_ID,
                "order_id",
                f"order {safe_text(order.order_id, 80)!r} was already applied with a different"
                " payload; the first version stands",
            ),
        ),
        order_id=safe_text(order.order_id),
        user_id=safe_text(order.user_id),
        sent_at=order.occurred_at if order.ordered_at is None else None,
    )


# --- Parsing --------------------------------------------------------------------------------
class _NonFiniteError(ValueError):
    pass


class _DuplicateKeyError(ValueError):
    pass


class JSONNumber(Decimal):
    """A JSON number with a fraction or an exponent, carrying the text that was sent, so a
    message can show ``1e0`` rather than the ``1`` it equals."""

    __slots__ = ("token",)
    token: str


class UnrepresentableNumber:
    """A JSON number Decimal cannot hold (``1e999999999999999999999``): well-formed JSON, so
    the body parses, and the field it sits in is rejected by that field's rule (one in an
    ignored field does no harm)."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def _reject_constant(token: str) -> Any:
    raise _NonFiniteError(token)


def _parse_float(token: str) -> JSONNumber | UnrepresentableNumber:
    try:
        number = JSONNumber(token)
    except ArithmeticError:
        return UnrepresentableNumber(token)
    number.token = token
    return number


def _parse_int(token: str) -> int | Decimal:
    # Python refuses int() on > 4300 digits; Decimal keeps the exact value so an enormous
    # number in an ignored field does not sink an otherwise valid order, and one in a field
    # that matters is rejected by that field's own rule.
    try:
        return int(token)
    except ValueError:
        return Decimal(token)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is refused (which one counts is up to the parser,
    and a reviewer shown one of them would not see the other)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return obj


def _short(value: Any, limit: int = 40) -> str:
    """A bounded, escaped rendering of an offending value for a human message."""
    if isinstance(value, JSONNumber | UnrepresentableNumber):
        token = value.token
        text = token if len(token) <= limit else token[:limit] + "…"
    elif isinstance(value, str):
        text = repr(value if len(value) <= limit else value[:limit] + "…")
    elif isinstance(value, dict):
        text = "an object"
    elif isinstance(value, list):
        text = "an array"
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Decimal | int):
        digits = str(value) if not isinstance(value, int) or value.bit_length() < 200 else "…"
        text = digits if len(digits) <= limit else digits[:limit] + "…"
    else:
        text = type(value).__name__
    return safe_text(text, limit + 20)


def _decode(body: Any) -> tuple[str | None, Reason | None]:
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        if len(raw) > MAX_BODY_BYTES:
            return None, Reason(
                INVALID_JSON, "body", f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}"
            )
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            return None, Reason(
                INVALID_JSON, "body", f"body is not UTF-8 (bad byte at offset {exc.start})"
            )
    if isinstance(body, str):
        size = (
            len(body) if len(body) > MAX_BODY_BYTES else len(body.encode("utf-8", "surrogatepass"))
        )
        if size > MAX_BODY_BYTES:
            return None, Reason(
                INVALID_JSON, "body", f"body is over {MAX_BODY_BYTES} bytes of UTF-8"
            )
        return body, None
    return None, Reason(INVALID_JSON, "body", f"body is a {type(body).__name__}, not text")


def _parse(text: str) -> tuple[Any, Reason | None]:
    try:
        return (
            json.loads(
                text,
                parse_float=_parse_float,
                parse_int=_parse_int,
                parse_constant=_reject_constant,
                object_pairs_hook=_object,
            ),
            None,
        )
    except _NonFiniteError as exc:
        return None, Reason(INVALID_JSON, "body", f"{exc.args[0]} is not a JSON number")
    except _DuplicateKeyError as exc:
        reason = Reason(
            INVALID_JSON, "body", f"key {_short(exc.args[0])} appears twice in one object"
        )
        # Parsed again, last key winning, only to keep the ids staff search the admin by.
        try:
            lenient = json.loads(text, parse_float=_parse_float, parse_int=_parse_int)
        except (ValueError, ArithmeticError, RecursionError, MemoryError, TypeError):
            lenient = None  # broken further on as well: the first problem is reported
        return (lenient if isinstance(lenient, dict) else None), reason
    except json.JSONDecodeError as exc:
        return None, Reason(
            INVALID_JSON, "body", f"not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        )
    except RecursionError:
        return None, Reason(INVALID_JSON, "body", "JSON is nested too deeply")
    except (ValueError, ArithmeticError, MemoryError, TypeError) as exc:
        return None, Reason(INVALID_JSON, "body", f"not JSON: {type(exc).__name__}")


# --- Field rules ----------------------------------------------------------------------------
def _text_problem(value: str) -> str | None:
    """Why a string cannot be an id (None when it can)."""
    # One regex pass each (the consumer's hot path); Cc is exactly U+0000-001F, U+007F-009F.
    if _SURROGATE.search(value):
        return "contains a lone surrogate (not valid Unicode)"
    if _CONTROL.search(value):
        return "contains control characters"
    return None


def id_problem(value: str) -> str | None:
    """Why ``value``, trimmed, cannot be an order or user id (None when it can): what every
    stored id satisfies, so a value that fails it names no stored order or user."""
    problem = _text_problem(value)
    if problem is None and not 1 <= len(value) <= MAX_ID_LENGTH:
        problem = f"must be 1-{MAX_ID_LENGTH} characters after trimming, got {len(value)}"
    return problem


def _check_id(doc: dict[str, Any], name: str, reasons: list[Reason]) -> str | None:
    if name not in doc:
        reasons.append(Reason(MISSING_FIELD, name, f"{name} is missing"))
        return None
    value = doc[name]
    if not isinstance(value, str):
        reasons.append(Reason(INVALID_FIELD, name, f"{name} must be a string, got {_short(value)}"))
        return None
    trimmed = value.strip(_TRIM)
    problem = id_problem(trimmed)
    if problem is not None:
        reasons.append(Reason(INVALID_FIELD, name, f"{name} {problem}"))
        return None
    return trimmed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _check_value(doc: dict[str, Any], reasons: list[Reason]) -> Decimal | None:
    if "order_value" not in doc:
        reasons.append(Reason(MISSING_FIELD, "order_value", "order_value is missing"))
        return None
    value = doc["order_value"]
    if isinstance(value, UnrepresentableNumber):
        reasons.append(
            Reason(
                INVALID_FIELD,
                "order_value",
                f"order_value {_short(value)} is out of the range of decimal numbers",
            )
        )
        return None
    if not _is_number(value):
        reasons.append(
            Reason(
                INVALID_FIELD,
                "order_value",
                f"order_value must be a JSON number, got {_short(value)}",
            )
        )
        return None
    amount = Decimal(value)
    if not amount.is_finite():
        problem = "must be finite"
    elif amount < 0:
        problem = "must not be negative"
    elif amount > MAX_ORDER_VALUE:
        problem = f"must not exceed {MAX_ORDER_VALUE:,}"
    else:
        return amount
    reasons.append(Reason(INVALID_FIELD, "order_value", f"order_value {problem}"))
    return None


def _check_item(index: int, item: Any) -> tuple[Item | None, list[Reason]]:
    where = f"items[{index}]"
    if not isinstance(item, dict):
        return None, [
            Reason(INVALID_ITEMS, where, f"{where} must be an object, got {_short(item)}")
        ]
    problems: list[Reason] = []

    quantity = item.get("quantity")
    if "quantity" not in item:
        problems.append(Reason(INVALID_ITEMS, f"{where}.quantity", "quantity is missing"))
    elif isinstance(quantity, bool) or not isinstance(quantity, int):
        problems.append(
            Reason(
                INVALID_ITEMS,
                f"{where}.quantity",
                f"quantity must be a whole number, got {_short(quantity)}",
            )
        )
    elif quantity < 1:
        problems.append(
            Reason(INVALID_ITEMS, f"{where}.quantity", f"quantity must be ≥ 1, got {quantity}")
        )

    price = item.get("price_per_unit")
    if "price_per_unit" not in item:
        problems.append(
            Reason(INVALID_ITEMS, f"{where}.price_per_unit", "price_per_unit is missing")
        )
    elif isinstance(price, UnrepresentableNumber):
        problems.append(
            Reason(
                INVALID_ITEMS,
                f"{where}.price_per_unit",
                f"price_per_unit {_short(price)} is out of the range of decimal numbers",
            )
        )
    elif not _is_number(price):
        problems.append(
            Reason(
                INVALID_ITEMS,
                f"{where}.price_per_unit",
                f"price_per_unit must be a JSON number, got {_short(price)}",
            )
        )
    elif not Decimal(price).is_finite() or Decimal(price) < 0:
        problems.append(
            Reason(INVALID_ITEMS, f"{where}.price_per_unit", "price_per_unit must be finite, ≥ 0")
        )
    elif not _canonical_ok(price):
        problems.append(
            Reason(
                INVALID_ITEMS,
                f"{where}.price_per_unit",
                f"price_per_unit {_short(price)} cannot be represented exactly",
            )
        )

    product_id = item.get("product_id")
    if product_id is not None:
        problem = None
        if not isinstance(product_id, str):
            problem = f"must be a string, got {_short(product_id)}"
        else:
            product_id = product_id.strip(_TRIM) or None
            if product_id is not None:
                problem = _text_problem(product_id)
                if problem is None and len(product_id) > MAX_ID_LENGTH:
                    problem = f"must be at most {MAX_ID_LENGTH} characters"
        if problem is not None:
            problems.append(Reason(INVALID_ITEMS, f"{where}.product_id", f"product_id {problem}"))

    if problems:
        return None, problems
    return Item(product_id=product_id, quantity=quantity, unit_price=Decimal(price)), []


def _canonical_ok(price: Decimal | int) -> bool:
    """Whether the fingerprint can spell ``price`` exactly (every number a body can hold)."""
    try:
        canonical_number(Decimal(price))
    except DecimalException:
        return False
    return True


def _check_items(doc: dict[str, Any], reasons: list[Reason]) -> tuple[Item, ...] | None:
    if "items" not in doc:
        reasons.append(Reason(MISSING_FIELD, "items", "items is missing"))
        return None
    raw = doc["items"]
    if not isinstance(raw, list):
        reasons.append(Reason(INVALID_ITEMS, "items", f"items must be an array, got {_short(raw)}"))
        return None
    if not raw:
        reasons.append(Reason(INVALID_ITEMS, "items", "items must not be empty"))
        return None
    if len(raw) > MAX_ITEMS:
        reasons.append(
            Reason(
                INVALID_ITEMS, "items", f"items has {len(raw)} entries; the limit is {MAX_ITEMS}"
            )
        )
        return None
    items: list[Item] = []
    problems: list[Reason] = []
    for index, entry in enumerate(raw):
        item, item_problems = _check_item(index, entry)
        if item is not None:
            items.append(item)
        problems.extend(item_problems)
    if problems:
        reasons.extend(problems[:MAX_ITEM_REASONS])
        if len(problems) > MAX_ITEM_REASONS:
            reasons.append(
                Reason(
                    INVALID_ITEMS,
                    "items",
                    f"…and {len(problems) - MAX_ITEM_REASONS} more item problems",
                )
            )
        return None
    return tuple(items)


def _cents(amount: Decimal) -> int:
    rounded = amount.quantize(_CENTS, rounding=ROUND_HALF_UP, context=_ROUNDING)
    return int(rounded.scaleb(2, context=_ROUNDING))


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _items_total(items: tuple[Item, ...]) -> Decimal | None:
    """Sum of quantity * price, exactly; a value above the ceiling stands for "too large to match".

    None when the prices carry more digits than can be summed exactly (absurd input).
    """
    total = Decimal(0)
    try:
        for item in items:
            if item.unit_price == 0:
                continue
            if item.unit_price > _SUM_CEILING or item.quantity > _SUM_CEILING:
                return _SUM_CEILING + 1
            total = _EXACT.add(total, _EXACT.multiply(Decimal(item.quantity), item.unit_price))
            if total > _SUM_CEILING:
                return total
    except DecimalException:
        return None
    return total


def _check_timestamp(doc: dict[str, Any], reasons: list[Reason]) -> tuple[bool, datetime | None]:
    """(ok, UTC datetime or None when absent)."""
    value = doc.get("order_timestamp")
    if value is None:
        return True, None
    problem = None
    if not isinstance(value, str):
        problem = f"must be an ISO 8601 string, got {_short(value)}"
    elif len(value) > MAX_TIMESTAMP_LENGTH:
        problem = "is too long to be an ISO 8601 timestamp"
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return True, parsed.astimezone(UTC)
        except (ValueError, OverflowError, TypeError):
            problem = f"is not an ISO 8601 timestamp: {_short(value)}"
    reasons.append(Reason(INVALID_TIMESTAMP, "order_timestamp", f"order_timestamp {problem}"))
    return False, None


def _sent_at(attributes: Any) -> datetime | None:
    """SQS ``SentTimestamp`` (epoch milliseconds) as UTC; None when absent or unreadable."""
    if not isinstance(attributes, Mapping):
        return None
    raw = attributes.get("SentTimestamp")
    try:
        millis = int(str(raw).strip())
        return from_epoch_ms(millis)
    except (ValueError, OverflowError, TypeError):
        return None


def _stored_id(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if not isinstance(value, str):
        return None
    return safe_text(value.strip(_TRIM)) or None


def validate_message(
    body: bytes | str,
    attributes: Mapping[str, str] | None = None,
    *,
    received_at: datetime | None = None,
) -> Order | Rejection:
    """Check one SQS message body against the order contract; never raises.

    ``attributes`` are the message's SQS system attributes; only ``SentTimestamp`` (epoch ms)
    is read. An order's ``occurred_at`` (and so its day bucket) is its ``order_timestamp``,
    else ``SentTimestamp``, else ``received_at`` (callers outside SQS, e.g. the admin form,
    pass "now"). An otherwise valid order that has none of the three cannot be put in a day
    bucket and is rejected with ``invalid_timestamp``; the validator does not read the clock
    itself, so the same input always gives the same answer.

    Every applicable reason is collected; the value cross-check runs only when the value and
    every item are individually valid (a mismatch against broken items says nothing).
    """
    try:
        result = _validate(body, attributes, received_at)
    except Exception as exc:  # pragma: no cover - a bug here must not poison the queue
        result = Rejection(
            reasons=(Reason(INVALID_JSON, "body", f"unexpected {type(exc).__name__}"),),
        )
    if isinstance(result, Rejection):
        result = replace(result, sent_at=_sent_at(attributes))
    return result


def _validate(
    body: Any, attributes: Mapping[str, str] | None, received_at: datetime | None
) -> Order | Rejection:
    text, problem = _decode(body)
    if problem is not None:
        return Rejection(reasons=(problem,))
    doc, problem = _parse(text)
    if problem is not None:
        if isinstance(doc, dict):
            return Rejection(
                reasons=(problem,),
                order_id=_stored_id(doc, "order_id"),
                user_id=_stored_id(doc, "user_id"),
            )
        return Rejection(reasons=(problem,))
    if not isinstance(doc, dict):
        return Rejection(
            reasons=(
                Reason(
                    NOT_AN_OBJECT, "body", f"top level must be a JSON object, got {_short(doc)}"
                ),
            )
        )

    reasons: list[Reason] = []
    order_id = _check_id(doc, "order_id", reasons)
    user_id = _check_id(doc, "user_id", reasons)
    value = _check_value(doc, reasons)
    items = _check_items(doc, reasons)
    timestamp_ok, ordered_at = _check_timestamp(doc, reasons)

    value_cents = None
    if value is not None and items is not None:
        value_cents = _cents(value)
        total = _items_total(items)
        if total is None:
            reasons.append(
                Reason(INVALID_ITEMS, "items", "prices have too many digits to total exactly")
            )
        elif total > _SUM_CEILING or _cents(total) != value_cents:
            shown = _money(_cents(total)) if total <= _SUM_CEILING else "over 1,000,000,000"
            reasons.append(
                Reason(
                    VALUE_MISMATCH,
                    "order_value",
                    f"order_value {_money(value_cents)} does not equal the items' total {shown}",
                )
            )

    occurred_at = ordered_at
    # Dating only matters for an otherwise valid order; on a broken one it would be noise.
    if occurred_at is None and timestamp_ok and not reasons:
        occurred_at = _sent_at(attributes)
        if occurred_at is None and isinstance(received_at, datetime):
            occurred_at = (
                received_at.replace(tzinfo=UTC)
                if received_at.tzinfo is None
                else received_at.astimezone(UTC)
            )
        if occurred_at is None:
            reasons.append(
                Reason(
                    INVALID_TIMESTAMP,
                    "order_timestamp",
                    "order_timestamp is absent and the message has no SentTimestamp to date it",
                )
            )

    if reasons:
        return Rejection(
            reasons=tuple(reasons),
            order_id=_stored_id(doc, "order_id"),
            user_id=_stored_id(doc, "user_id"),
        )
    assert order_id is not None and user_id is not None and items is not None
    assert value_cents is not None and occurred_at is not None
    return Order(
        order_id=order_id,
        user_id=user_id,
        value_cents=value_cents,
        items=items,
        ordered_at=ordered_at,
        occurred_at=occurred_at,
    )
