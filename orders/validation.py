"""The message contract: raw SQS body in, a normalized ``Order`` or ``Event``, or every reason out.

Pure: no I/O, no Django models, no Redis, no SQS. Numbers are parsed exactly from the JSON
text (``Decimal``), never through floats.

``validate_message`` never raises: whatever arrives on the queue (non-UTF-8 bytes, NaN,
100 000 levels of ``[``, 5 000-digit integers, lone surrogates, NUL) ends up either as an
``Order``, an ``Event`` or a ``Rejection`` a consumer can store and delete. A validator that
raises on a poison message would make that message loop until the dead-letter queue and hide
the reason.

A message's ``type`` says what it is: absent (or ``null``) or ``"order.placed"`` is an order,
``"order.refunded"`` and ``"order.cancelled"`` are events on an order. What an event does to
its order (how much is left to refund, which items) needs the ledger, so those rules are
decided there; their codes and messages are built here so every reason reads alike.

Money is in the shop's one currency (``STATS_CURRENCY``): a message in another is refused, an
amount finer than its minor unit too, and every accepted amount is an integer number of minor
units (``orderpipe.money``). Which currency that is, is module configuration (``CURRENCY``),
set once when the orders app starts, so the validator itself never reads Django's settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
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
from typing import Any, Literal, TypedDict, TypeVar

from orderpipe import money
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
# Events (refunds and cancellations), found by the validator ...
UNKNOWN_TYPE = "unknown_type"
# ... an amount finer than the currency's minor unit (an event's amount, an order's value) ...
TOO_MANY_DECIMALS = "too_many_decimals"
# ... and by the ledger, against the order's state.
AMOUNT_MISMATCH = "amount_mismatch"
REFUND_EXCEEDS_ORDER = "refund_exceeds_order"
UNKNOWN_ITEM = "unknown_item"
REFUND_EXCEEDS_ITEMS = "refund_exceeds_items"
ORDER_CANCELLED = "order_cancelled"
DUPLICATE_EVENT_ID = "duplicate_event_id"
# Any message: a ``currency`` other than the shop's (nothing is summed across currencies).
CURRENCY_MISMATCH = "currency_mismatch"

# The first codes there were: an order's body and fields.
_ORDER_FIELD_CODES: tuple[str, ...] = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_FIELD,
    INVALID_ITEMS,
    VALUE_MISMATCH,
    INVALID_TIMESTAMP,
)
# What ``validate_message`` itself can answer to an order message ...
ORDER_VALIDATOR_CODES: tuple[str, ...] = (*_ORDER_FIELD_CODES, TOO_MANY_DECIMALS, CURRENCY_MISMATCH)
# ... and to any message (a ``type`` it does not know).
VALIDATOR_CODES: tuple[str, ...] = (*ORDER_VALIDATOR_CODES, UNKNOWN_TYPE)
# The order the admin's filter, the dashboard and pipeline_status list codes in: the order
# they were introduced, so a new code is appended and never moves an existing one.
ALL_CODES: tuple[str, ...] = (
    *_ORDER_FIELD_CODES,
    DUPLICATE_ORDER_ID,
    UNKNOWN_TYPE,
    TOO_MANY_DECIMALS,
    AMOUNT_MISMATCH,
    REFUND_EXCEEDS_ORDER,
    UNKNOWN_ITEM,
    REFUND_EXCEEDS_ITEMS,
    ORDER_CANCELLED,
    DUPLICATE_EVENT_ID,
    CURRENCY_MISMATCH,
)
# Found only against what the ledger recorded before (conflicts, the order's state).
LEDGER_CODES: tuple[str, ...] = tuple(c for c in ALL_CODES if c not in VALIDATOR_CODES)

# --- Message types ----------------------------------------------------------------------------
TYPE_PLACED = "order.placed"
TYPE_REFUNDED = "order.refunded"
TYPE_CANCELLED = "order.cancelled"
MESSAGE_TYPES: tuple[str, ...] = (TYPE_PLACED, TYPE_REFUNDED, TYPE_CANCELLED)
EventKind = Literal["refunded", "cancelled"]
REFUNDED: EventKind = "refunded"
CANCELLED: EventKind = "cancelled"
_EVENT_KINDS: dict[str, EventKind] = {TYPE_REFUNDED: REFUNDED, TYPE_CANCELLED: CANCELLED}

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
MAX_REASON_LENGTH = 1000

# --- The shop's currency ----------------------------------------------------------------------
# The ISO 4217 code every amount is in: a message without ``currency`` is in it, one with
# another is refused. USD (the default STATS_CURRENCY) until the orders app sets it from the
# settings at start (``configure``); ``validate_message(..., currency=)`` overrides it per call.
CURRENCY: str = money.DEFAULT_CURRENCY


def configure(shop_currency: str) -> None:
    """Make ``shop_currency`` (an ISO 4217 code with a minor unit) the currency messages are
    validated in; raises ``orderpipe.money.UnknownCurrencyError`` for any other code."""
    global CURRENCY
    CURRENCY = money.currency(shop_currency).code


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
EVENT_FINGERPRINT_VERSION = 1
# Past this the sum can never round to an order_value ≤ MAX_ORDER_VALUE: stop multiplying.
_SUM_CEILING = MAX_ORDER_VALUE + 1
_SUM_CEILING_INT = int(_SUM_CEILING)
# Whitespace trimmed around ids: what str.strip() removes except the control characters it
# also counts as whitespace (U+001C-001F, U+0085), which must be rejected, not trimmed.
_TRIM = (
    " \t\n\v\f\r\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Either: what nearly every id lacks, found in one pass.
_SURROGATE_OR_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Item:
    product_id: str | None
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Order:
    """A valid order. ``value_cents`` is an integer number of ``currency``'s minor unit (cents
    for USD, yen for JPY, fils for KWD); ``ordered_at`` is UTC (None when absent)."""

    order_id: str
    user_id: str
    value_cents: int
    items: tuple[Item, ...]
    ordered_at: datetime | None
    # When the order happened: ``ordered_at``, else the message's SentTimestamp (UTC).
    occurred_at: datetime
    # The ISO 4217 code of its money: the shop's (the only one accepted).
    currency: str = money.DEFAULT_CURRENCY
    day: date = field(init=False)
    # The two fingerprints, worked out on first use: a batch's commit asks for each several
    # times (the ledger's row and comparison, the store's marks), ~40 µs each time.
    _fingerprint: str = field(init=False, default="", repr=False, compare=False)
    _legacy_fingerprint: str = field(init=False, default="", repr=False, compare=False)

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

        The currency is part of it only when it is not USD, the currency of every order before
        the currency was a setting: a USD order keeps the fingerprint its marks were written
        with, and 1200 in yen is not the order 1200 in cents was. Sent with or without
        ``currency``, an order is in the shop's currency, so both give one fingerprint.
        """
        if not self._fingerprint:
            object.__setattr__(self, "_fingerprint", self._work_out_fingerprint())
        return self._fingerprint

    def _work_out_fingerprint(self) -> str:
        items = sorted(
            (i.product_id or "", i.product_id is None, i.quantity, canonical_number(i.unit_price))
            for i in self.items
        )
        when = self.ordered_at.astimezone(UTC).isoformat() if self.ordered_at else None
        parts: list[object] = [self.order_id, self.user_id, self.value_cents, when, items]
        if self.currency != money.DEFAULT_CURRENCY:
            parts.append(self.currency)
        # JSON quotes every string, so no id can imitate a separator.
        text = json.dumps(parts)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{FINGERPRINT_VERSION}:{digest}"

    @property
    def legacy_fingerprint(self) -> str:
        """The fingerprint of releases before version 2, unchanged (items in message order,
        prices normalized to 28 digits), so that an idempotency mark written by one of them
        is still recognised: a message redelivered across the upgrade is a duplicate. Those
        releases knew USD only, so it says nothing of the currency."""
        if not self._legacy_fingerprint:
            object.__setattr__(self, "_legacy_fingerprint", self._work_out_legacy_fingerprint())
        return self._legacy_fingerprint

    def _work_out_legacy_fingerprint(self) -> str:
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
class RefundItem:
    """A refunded line: which product and how many units (its price is the order's)."""

    product_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Event:
    """A valid refund or cancellation of an order. ``amount_cents`` is the amount the message
    gave, in ``currency``'s minor units (None when it gave none: a refund by items, or a
    cancellation); what it is worth against its order is decided by the ledger."""

    kind: EventKind
    event_id: str
    order_id: str
    amount_cents: int | None
    items: tuple[RefundItem, ...]
    # The message's own ``occurred_at`` (UTC), None when absent.
    stated_at: datetime | None
    # When the event happened: ``stated_at``, else the message's SentTimestamp (UTC).
    occurred_at: datetime
    reason: str | None
    # The ISO 4217 code of its money: the shop's (the only one accepted).
    currency: str = money.DEFAULT_CURRENCY
    # Worked out on first use: the ledger compares it several times per batch.
    _fingerprint: str = field(init=False, default="", repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """Identity of the payload, the idempotency key's partner: the same event sent twice
        has the same fingerprint, the same ``event_id`` with another payload does not.

        Canonical: the items in any order, any spelling of the same amount (``10.5``,
        ``10.50``, ``1.05e1``), the same instant in any offset, and an absent, ``null`` or
        blank ``reason`` give the same fingerprint; the kind, ids, amount, items, stated time
        or reason text changed give another. An event without ``occurred_at`` is dated by its
        SentTimestamp, which is not part of it: a re-sent undated event is the same event.
        The currency counts as in an order's: only when it is not USD. Versioned (``"e1:" +
        hex``): the ``e`` keeps it apart from an order's.
        """
        if not self._fingerprint:
            object.__setattr__(self, "_fingerprint", self._work_out_fingerprint())
        return self._fingerprint

    def _work_out_fingerprint(self) -> str:
        items = sorted((i.product_id, i.quantity) for i in self.items)
        when = self.stated_at.astimezone(UTC).isoformat() if self.stated_at else None
        parts: list[object] = [
            self.kind,
            self.event_id,
            self.order_id,
            self.amount_cents,
            items,
            when,
            self.reason,
        ]
        if self.currency != money.DEFAULT_CURRENCY:
            parts.append(self.currency)
        # JSON quotes every string, so no id or reason can imitate a separator.
        text = json.dumps(parts)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"e{EVENT_FINGERPRINT_VERSION}:{digest}"


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
    """Every reason a message is not a valid order or event, plus the ids staff search for.

    ``order_id``/``user_id``/``event_id`` are whatever strings the message carried (even
    invalid ones), escaped so they are safe in any text column (see ``safe_text``); None when
    absent. An event's ``order_id`` is the order it concerns (so staff find it with the
    order's other messages) and its ``event_id`` is kept beside it; ``event_id`` is None for an
    order. ``sent_at`` is the message's (first) SQS SentTimestamp, so that a corrected order
    or event resubmitted from the admin without its own timestamp keeps its date.
    """

    reasons: tuple[Reason, ...]
    order_id: str | None = None
    user_id: str | None = None
    sent_at: datetime | None = None
    event_id: str | None = None

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


def event_rejection(event: Event, reasons: Sequence[Reason]) -> Rejection:
    """A valid event the ledger refuses, for ``reasons`` made by the builders below.

    Filed under its order's id (staff find it with that order's other messages) and its own
    ``event_id``. An undated event was dated by its SentTimestamp, kept as ``sent_at`` so a
    resubmission from the admin keeps its date.
    """
    return Rejection(
        reasons=tuple(reasons),
        order_id=safe_text(event.order_id),
        event_id=safe_text(event.event_id),
        sent_at=event.occurred_at if event.stated_at is None else None,
    )


def event_conflict_rejection(event: Event) -> Rejection:
    """The rejection for an event whose ``event_id`` the ledger holds (recorded or waiting for
    its order) with a different fingerprint: the first version stands, as for orders."""
    return event_rejection(
        event,
        [
            Reason(
                DUPLICATE_EVENT_ID,
                "event_id",
                f"event {safe_text(event.event_id, 80)!r} was already recorded with a different"
                " payload; the first version stands",
            )
        ],
    )


def amount_mismatch_reason(event: Event, items_cents: int) -> Reason:
    """A refund that gives both ``amount`` and ``items``, whose items at the order's prices
    come to ``items_cents`` (minor units), not to the amount."""
    assert event.amount_cents is not None
    return Reason(
        AMOUNT_MISMATCH,
        "amount",
        f"amount {_amount_text(event.amount_cents, event.currency)} does not equal the refunded "
        f"items' value {_amount_text(items_cents, event.currency)} at the order's prices",
    )


def refund_exceeds_order_reason(
    event: Event, refund_cents: int, refunded_cents: int, value_cents: int
) -> Reason:
    """A refund of ``refund_cents`` that, on top of the ``refunded_cents`` refunded before,
    would exceed the order's ``value_cents`` (all in minor units)."""
    where = "amount" if event.amount_cents is not None else "items"
    left = max(value_cents - refunded_cents, 0)
    code = event.currency
    return Reason(
        REFUND_EXCEEDS_ORDER,
        where,
        f"a refund of {_amount_text(refund_cents, code)} would bring order "
        f"{safe_text(event.order_id, 80)!r}'s refunded total to "
        f"{_amount_text(refunded_cents + refund_cents, code)}, above its value "
        f"{_amount_text(value_cents, code)} ({_amount_text(left, code)} is left to refund)",
    )


def unknown_item_reasons(event: Event, order_products: Collection[str]) -> list[Reason]:
    """One reason per refunded product that is not among the order's ``order_products``,
    named by its place in the message's ``items``."""
    return [
        Reason(
            UNKNOWN_ITEM,
            f"items[{index}].product_id",
            f"product_id {safe_text(item.product_id, 80)!r} is not in order "
            f"{safe_text(event.order_id, 80)!r}",
        )
        for index, item in enumerate(event.items)
        if item.product_id not in order_products
    ]


def refund_exceeds_items_reasons(event: Event, remaining: Mapping[str, int]) -> list[Reason]:
    """One reason per refunded product with more units than remain unrefunded of it;
    ``remaining`` maps the order's products to those units (a product it lacks is
    ``unknown_item``'s, not reported here)."""
    return [
        Reason(
            REFUND_EXCEEDS_ITEMS,
            f"items[{index}].quantity",
            f"{item.quantity} units of {safe_text(item.product_id, 80)!r} refunded, but only "
            f"{remaining[item.product_id]} of order {safe_text(event.order_id, 80)!r}'s are "
            "not refunded yet",
        )
        for index, item in enumerate(event.items)
        if item.product_id in remaining and item.quantity > remaining[item.product_id]
    ]


def order_cancelled_reason(event: Event) -> Reason:
    """Any event on an order already cancelled: the cancellation refunded all that was left."""
    return Reason(
        ORDER_CANCELLED,
        "order_id",
        f"order {safe_text(event.order_id, 80)!r} is already cancelled: nothing is left to "
        + ("refund" if event.kind == REFUNDED else "cancel"),
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


def _decode(body: Any) -> str | Reason:
    """The body as text, or why it cannot be read as such."""
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        if len(raw) > MAX_BODY_BYTES:
            return Reason(
                INVALID_JSON, "body", f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Reason(
                INVALID_JSON, "body", f"body is not UTF-8 (bad byte at offset {exc.start})"
            )
    if isinstance(body, str):
        # A character is at most 4 bytes of UTF-8: a body that short needs no encoding to know.
        size = (
            len(body)
            if len(body) > MAX_BODY_BYTES or len(body) <= MAX_BODY_BYTES // 4
            else len(body.encode("utf-8", "surrogatepass"))
        )
        if size > MAX_BODY_BYTES:
            return Reason(INVALID_JSON, "body", f"body is over {MAX_BODY_BYTES} bytes of UTF-8")
        return body
    return Reason(INVALID_JSON, "body", f"body is a {type(body).__name__}, not text")


# The strict parser, made once: ``json.loads`` with these arguments builds a decoder per call
# (3 µs of a message's 20). Shared between threads as json's own default decoder is.
_DECODER = json.JSONDecoder(
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_object,
)
# The same but for integers, which it reads as ``int`` does, in C: what ``_parse_int`` gives
# every integer but one past ``int``'s digit limit, where it raises (ValueError).
_FAST_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_constant=_reject_constant, object_pairs_hook=_object
)


def _loads(text: str) -> Any:
    """``json.loads(text, ...)`` with ``_DECODER``'s arguments (the same BOM check first).

    ``_FAST_DECODER`` first; whatever it refuses (a ValueError: a broken body, or an integer
    past the digit limit) is parsed again by ``_DECODER``, whose answer or error stands."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        return _FAST_DECODER.decode(text)
    except ValueError:
        return _DECODER.decode(text)


def _parse(text: str) -> tuple[Any, Reason | None]:
    try:
        return _loads(text), None
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
    # One regex pass (the consumer's hot path); Cc is exactly U+0000-001F, U+007F-009F.
    if _SURROGATE_OR_CONTROL.search(value) is None:
        return None
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


def _id_text(value: Any, name: str) -> tuple[str | None, str | None]:
    """(the trimmed id, None) or (None, why ``value`` cannot be the id ``name``)."""
    if not isinstance(value, str):
        return None, f"{name} must be a string, got {_short(value)}"
    trimmed = value.strip(_TRIM)
    problem = id_problem(trimmed)
    if problem is not None:
        return None, f"{name} {problem}"
    return trimmed, None


def _check_id(doc: dict[str, Any], name: str, reasons: list[Reason]) -> str | None:
    if name not in doc:
        reasons.append(Reason(MISSING_FIELD, name, f"{name} is missing"))
        return None
    trimmed, problem = _id_text(doc[name], name)
    if problem is not None:
        reasons.append(Reason(INVALID_FIELD, name, problem))
    return trimmed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _check_amount(
    value: Any, name: str, reasons: list[Reason], *, positive: bool
) -> Decimal | None:
    """``value`` as an exact amount in 0-1,000,000,000 (above 0 when ``positive``)."""
    if isinstance(value, UnrepresentableNumber):
        problem = f"{_short(value)} is out of the range of decimal numbers"
        reasons.append(Reason(INVALID_FIELD, name, f"{name} {problem}"))
        return None
    if not _is_number(value):
        reasons.append(
            Reason(INVALID_FIELD, name, f"{name} must be a JSON number, got {_short(value)}")
        )
        return None
    amount = Decimal(value)
    if not amount.is_finite():
        problem = "must be finite"
    elif positive and amount <= 0:
        problem = "must be greater than 0"
    elif amount < 0:
        problem = "must not be negative"
    elif amount > MAX_ORDER_VALUE:
        problem = f"must not exceed {MAX_ORDER_VALUE:,}"
    else:
        return amount
    reasons.append(Reason(INVALID_FIELD, name, f"{name} {problem}"))
    return None


def _check_value(doc: dict[str, Any], reasons: list[Reason]) -> Decimal | None:
    if "order_value" not in doc:
        reasons.append(Reason(MISSING_FIELD, "order_value", "order_value is missing"))
        return None
    return _check_amount(doc["order_value"], "order_value", reasons, positive=False)


def _check_quantity(item: dict[str, Any], where: str, problems: list[Reason]) -> None:
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


def _check_item(where: str, item: dict[str, Any]) -> tuple[Item | None, list[Reason]]:
    """An order's line, or its problems. A line as senders send it (a whole quantity of 1 or
    more, a JSON number as price, a product_id that is text or absent) is checked on a short
    path: the rules below, each number made a Decimal once (it was up to four times); anything
    else, and any broken rule, takes the full path, which words every problem."""
    quantity = item.get("quantity")
    price: Any = item.get("price_per_unit")  # a JSON value, of any type until checked
    product_id = item.get("product_id")
    kind = type(price)
    if (
        type(quantity) is int
        and quantity >= 1
        and (kind is JSONNumber or kind is int)
        and (product_id is None or type(product_id) is str)
    ):
        unit_price = Decimal(price)
        if product_id is not None:
            product_id = product_id.strip(_TRIM) or None
        if (
            unit_price.is_finite()
            and not unit_price < 0
            and _canonical_ok(unit_price)
            and (product_id is None or id_problem(product_id) is None)
        ):
            return Item(product_id=product_id, quantity=quantity, unit_price=unit_price), []
    return _check_item_fully(where, item)


def _check_item_fully(where: str, item: dict[str, Any]) -> tuple[Item | None, list[Reason]]:
    problems: list[Reason] = []
    _check_quantity(item, where, problems)

    price: Any = item.get("price_per_unit")  # a JSON value, of any type until checked
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
    return Item(product_id=product_id, quantity=item["quantity"], unit_price=Decimal(price)), []


def _canonical_ok(price: Decimal | int) -> bool:
    """Whether the fingerprint can spell ``price`` exactly (every number a body can hold)."""
    try:
        canonical_number(Decimal(price))
    except DecimalException:
        return False
    return True


_Entry = TypeVar("_Entry")


def _add_item_problems(problems: list[Reason], reasons: list[Reason]) -> None:
    """The first few item problems, then how many more: a thousand broken items would
    otherwise give thousands of reasons."""
    reasons.extend(problems[:MAX_ITEM_REASONS])
    if len(problems) > MAX_ITEM_REASONS:
        reasons.append(
            Reason(
                INVALID_ITEMS,
                "items",
                f"…and {len(problems) - MAX_ITEM_REASONS} more item problems",
            )
        )


# Each item's path, ``items[i]``, formatted once rather than once per item of every message.
_ITEM_PATHS = tuple(f"items[{index}]" for index in range(MAX_ITEMS))


def _check_item_list(
    raw: Any,
    reasons: list[Reason],
    check: Callable[[str, dict[str, Any]], tuple[_Entry | None, list[Reason]]],
) -> tuple[_Entry, ...] | None:
    """``items`` as a non-empty array (at most MAX_ITEMS) of objects each passing ``check``
    (given its path, ``items[i]``)."""
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
    entries: list[_Entry] = []
    problems: list[Reason] = []
    for index, raw_entry in enumerate(raw):
        where = _ITEM_PATHS[index]
        if not isinstance(raw_entry, dict):
            problems.append(
                Reason(INVALID_ITEMS, where, f"{where} must be an object, got {_short(raw_entry)}")
            )
            continue
        entry, entry_problems = check(where, raw_entry)
        if entry is not None:
            entries.append(entry)
        problems.extend(entry_problems)
    if problems:
        _add_item_problems(problems, reasons)
        return None
    return tuple(entries)


def _check_items(doc: dict[str, Any], reasons: list[Reason]) -> tuple[Item, ...] | None:
    if "items" not in doc:
        reasons.append(Reason(MISSING_FIELD, "items", "items is missing"))
        return None
    return _check_item_list(doc["items"], reasons, _check_item)


def _amount_text(minor: int, code: str) -> str:
    """Minor units as the amount they are: 10997 USD is ``109.97``, 0 USD ``0.00``, 1200 JPY
    ``1200``."""
    return str(money.currency(code).from_minor_units(minor))


def _optional_text(doc: dict[str, Any], name: str, reasons: list[Reason]) -> str | None:
    """The optional string field ``name``, trimmed; None when absent or null, or when it is not
    a string (then an ``invalid_field`` reason says so)."""
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        reasons.append(Reason(INVALID_FIELD, name, f"{name} must be a string, got {_short(value)}"))
        return None
    return value.strip(_TRIM)


def _check_currency(doc: dict[str, Any], shop: money.Currency, reasons: list[Reason]) -> bool:
    """Whether the message is in the shop's currency: its ``currency`` absent (or ``null``),
    or the shop's code (spaces around it and letter case do not count: ``usd`` is USD)."""
    if doc.get("currency") is None:
        return True
    code = _optional_text(doc, "currency", reasons)
    if code is None:
        return False
    value = doc["currency"]
    code = code.upper() if code.isascii() else code
    if code == shop.code:
        return True
    if money.is_iso_code(code):
        reasons.append(
            Reason(
                CURRENCY_MISMATCH,
                "currency",
                f"currency {_short(value)} is not the shop's currency {shop.code}: amounts in "
                "two currencies are never added up",
            )
        )
    else:
        reasons.append(
            Reason(
                INVALID_FIELD,
                "currency",
                f"currency {_short(value)} is not an ISO 4217 currency code (e.g. {shop.code})",
            )
        )
    return False


def _minor_amount(
    amount: Decimal, raw: Any, name: str, shop: money.Currency, reasons: list[Reason]
) -> int | None:
    """``amount`` (sent as ``raw`` in the field ``name``) in the shop's minor units; None, with a
    ``too_many_decimals`` reason, when it is finer than them: refused, never rounded."""
    try:
        return shop.to_minor_units(amount)
    except money.TooManyDecimalsError:
        reasons.append(
            Reason(
                TOO_MANY_DECIMALS,
                name,
                f"{name} {_short(raw)} has more decimals than {shop.code} has ({shop.minor_units})",
            )
        )
        return None


def _items_total(items: tuple[Item, ...]) -> Decimal | None:
    """Sum of quantity * price, exactly; a value above the ceiling stands for "too large to match".

    None when the prices carry more digits than can be summed exactly (absurd input).
    """
    total = Decimal(0)
    try:
        # The context's methods looked up once; a quantity is compared and multiplied as the
        # int it is (exactly, as its Decimal would be).
        multiply, add = money.EXACT.multiply, money.EXACT.add
        for item in items:
            price, quantity = item.unit_price, item.quantity
            if price == 0:
                continue
            if price > _SUM_CEILING or quantity > _SUM_CEILING_INT:
                return _SUM_CEILING + 1
            total = add(total, multiply(quantity, price))
            if total > _SUM_CEILING:
                return total
    except DecimalException:
        return None
    return total


def _check_timestamp(
    doc: dict[str, Any], reasons: list[Reason], name: str = "order_timestamp"
) -> datetime | None:
    """The timestamp ``name`` in UTC; None when absent or broken (a reason says which)."""
    value = doc.get(name)
    if value is None:
        return None
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
            return parsed.astimezone(UTC)
        except (ValueError, OverflowError, TypeError):
            problem = f"is not an ISO 8601 timestamp: {_short(value)}"
    reasons.append(Reason(INVALID_TIMESTAMP, name, f"{name} {problem}"))
    return None


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


def _occurred_at(
    stated: datetime | None,
    name: str,
    attributes: Any,
    received_at: datetime | None,
    reasons: list[Reason],
) -> datetime | None:
    """When a message happened: its own timestamp ``name`` (``stated``); without one, its
    SentTimestamp, else ``received_at``; with neither, an ``invalid_timestamp`` reason.
    Only an otherwise valid message is dated: on a broken one a dating reason is noise."""
    if stated is not None or reasons:
        return stated
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
                name,
                f"{name} is absent and the message has no SentTimestamp to date it",
            )
        )
    return occurred_at


def _stored_id(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if not isinstance(value, str):
        return None
    return safe_text(value.strip(_TRIM)) or None


class _SearchIds(TypedDict, total=False):
    """The ``Rejection`` fields ``_searchable`` fills."""

    order_id: str | None
    user_id: str | None
    event_id: str | None


def _searchable(doc: dict[str, Any]) -> _SearchIds:
    """The ids a rejection of ``doc`` is filed under: its order and user ids (an event's order
    id is the order it concerns), and, for a message whose ``type`` is not an order's, its
    ``event_id``."""
    ids: _SearchIds = {
        "order_id": _stored_id(doc, "order_id"),
        "user_id": _stored_id(doc, "user_id"),
    }
    if doc.get("type") not in (None, TYPE_PLACED):
        ids["event_id"] = _stored_id(doc, "event_id")
    return ids


# --- Events -----------------------------------------------------------------------------------
def _check_type(doc: dict[str, Any], types: Collection[str]) -> str | Reason:
    """The message's type, or why it is not one ``types`` holds."""
    value = doc.get("type")
    if value is None:  # absent or null: an order, as every message was before events
        value = TYPE_PLACED
    if isinstance(value, str) and value in types:
        return value
    accepted = ", ".join(repr(t) for t in MESSAGE_TYPES if t in types)
    if not isinstance(value, str):
        problem = f"type must be a string, got {_short(value)}"
    elif value in MESSAGE_TYPES:
        problem = f"type {_short(value)} is not accepted here (accepted: {accepted})"
    else:
        problem = f"type {_short(value)} is not one of {accepted}"
    return Reason(UNKNOWN_TYPE, "type", problem)


def _check_reason(doc: dict[str, Any], reasons: list[Reason]) -> str | None:
    """The optional free-text ``reason``, trimmed; absent, null or blank is no reason."""
    trimmed = _optional_text(doc, "reason", reasons)
    if trimmed is None:
        return None
    problem = _text_problem(trimmed)
    if problem is None and len(trimmed) > MAX_REASON_LENGTH:
        problem = f"must be at most {MAX_REASON_LENGTH} characters, got {len(trimmed)}"
    if problem is not None:
        reasons.append(Reason(INVALID_FIELD, "reason", f"reason {problem}"))
        return None
    return trimmed or None


def _check_refund_amount(
    value: Any, shop: money.Currency | None, reasons: list[Reason]
) -> int | None:
    """The refund's ``amount`` in minor units; its decimals are judged only in the shop's
    currency (``shop`` None: the message is in another, whose minor unit says nothing here)."""
    amount = _check_amount(value, "amount", reasons, positive=True)
    if amount is None or shop is None:
        return None
    return _minor_amount(amount, value, "amount", shop, reasons)


def _check_refund_item(where: str, item: dict[str, Any]) -> tuple[RefundItem | None, list[Reason]]:
    problems: list[Reason] = []
    product_id = None
    if item.get("product_id") is None:
        problems.append(Reason(INVALID_ITEMS, f"{where}.product_id", "product_id is missing"))
    else:
        product_id, problem = _id_text(item["product_id"], "product_id")
        if problem is not None:
            problems.append(Reason(INVALID_ITEMS, f"{where}.product_id", problem))
    _check_quantity(item, where, problems)
    if problems or product_id is None:
        return None, problems
    return RefundItem(product_id=product_id, quantity=item["quantity"]), []


def _check_refund_items(value: Any, reasons: list[Reason]) -> tuple[RefundItem, ...] | None:
    """Refunded lines: each product once (its units in one line), so that what remains of
    each is checked against one quantity."""
    items = _check_item_list(value, reasons, _check_refund_item)
    if items is None:
        return None
    first: dict[str, int] = {}
    problems = []
    for index, item in enumerate(items):
        if item.product_id in first:
            problems.append(
                Reason(
                    INVALID_ITEMS,
                    f"items[{index}].product_id",
                    f"product_id {_short(item.product_id)} is already in "
                    f"items[{first[item.product_id]}]: give each product once, with its units",
                )
            )
        else:
            first[item.product_id] = index
    if problems:
        _add_item_problems(problems, reasons)
        return None
    return items


def _validate_event(
    doc: dict[str, Any],
    kind: EventKind,
    attributes: Mapping[str, str] | None,
    received_at: datetime | None,
    shop: money.Currency,
) -> Event | Rejection:
    reasons: list[Reason] = []
    event_id = _check_id(doc, "event_id", reasons)
    order_id = _check_id(doc, "order_id", reasons)
    in_shop_currency = _check_currency(doc, shop, reasons)
    amount_cents: int | None = None
    items: tuple[RefundItem, ...] | None = ()
    if kind == REFUNDED:
        # An optional field sent as null is absent, as ``occurred_at`` and ``reason`` are.
        if doc.get("amount") is not None:
            amount_cents = _check_refund_amount(
                doc["amount"], shop if in_shop_currency else None, reasons
            )
        if doc.get("items") is not None:
            items = _check_refund_items(doc["items"], reasons)
        if doc.get("amount") is None and doc.get("items") is None:
            reasons.append(
                Reason(MISSING_FIELD, "amount", "a refund needs an amount, items or both")
            )
    else:
        # What a cancellation refunds is whatever is left: an amount or items would be a
        # partial refund the sender expects and would not get.
        for name in ("amount", "items"):
            if doc.get(name) is not None:
                reasons.append(
                    Reason(
                        INVALID_FIELD,
                        name,
                        f"{name} is not part of {TYPE_CANCELLED}: a cancellation refunds "
                        f"whatever is not refunded yet (send {TYPE_REFUNDED} for a part)",
                    )
                )
    stated_at = _check_timestamp(doc, reasons, "occurred_at")
    reason = _check_reason(doc, reasons)
    occurred_at = _occurred_at(stated_at, "occurred_at", attributes, received_at, reasons)
    if reasons:
        return Rejection(reasons=tuple(reasons), **_searchable(doc))
    assert event_id is not None and order_id is not None and items is not None
    assert occurred_at is not None
    return Event(
        kind=kind,
        event_id=event_id,
        order_id=order_id,
        amount_cents=amount_cents,
        items=items,
        stated_at=stated_at,
        occurred_at=occurred_at,
        reason=reason,
        currency=shop.code,
    )


# --- The message ------------------------------------------------------------------------------
def validate_message(
    body: bytes | str,
    attributes: Mapping[str, str] | None = None,
    *,
    received_at: datetime | None = None,
    types: Collection[str] = MESSAGE_TYPES,
    currency: str | None = None,
) -> Order | Event | Rejection:
    """Check one SQS message body against the message contract; never raises on a body.

    ``attributes`` are the message's SQS system attributes; only ``SentTimestamp`` (epoch ms)
    is read. An order's ``occurred_at`` (and so its day bucket) is its ``order_timestamp``,
    else ``SentTimestamp``, else ``received_at`` (callers outside SQS, e.g. the admin form,
    pass "now"); an event's is its own ``occurred_at``, else the same two. An otherwise valid
    message that has none of the three cannot be dated and is rejected with
    ``invalid_timestamp``; the validator does not read the clock itself, so the same input
    always gives the same answer.

    ``types`` are the message types the caller can handle: any other, even one of
    ``MESSAGE_TYPES``, is ``unknown_type`` (a consumer that cannot record events yet keeps
    them as rejects, to resubmit, rather than mistake them for broken orders).

    ``currency`` is the shop's ISO 4217 code (default: the configured ``CURRENCY``): a message
    without ``currency`` is in it, one in another is ``currency_mismatch``, and amounts are
    parsed into its minor units. A code amounts cannot be counted in is the caller's mistake,
    not the message's: it raises ``orderpipe.money.UnknownCurrencyError``.

    Every applicable reason is collected; the value cross-check runs only when the value and
    every item are individually valid (a mismatch against broken items says nothing), and an
    amount's decimals are judged only in the shop's currency (in another they say nothing).
    """
    shop = money.currency(CURRENCY if currency is None else currency)
    try:
        result = _validate(body, attributes, received_at, types, shop)
    except Exception as exc:  # pragma: no cover - a bug here must not poison the queue
        result = Rejection(
            reasons=(Reason(INVALID_JSON, "body", f"unexpected {type(exc).__name__}"),),
        )
    if isinstance(result, Rejection):
        result = replace(result, sent_at=_sent_at(attributes))
    return result


def kept_fields(body: bytes | str, names: Collection[str]) -> dict[str, Any]:
    """The top-level fields ``names`` of an order's body, as JSON any database can store.

    What the ledger keeps of a message besides the order itself (``LEDGER_EXTRA_FIELDS``):
    numbers with a fraction or an exponent as their exact text (as item prices are kept, so
    ``19.990`` stays ``19.990``), text made storable (``safe_text``). Fields the body lacks are
    left out; a body that is not a JSON object gives ``{}``.
    """
    if not names:
        return {}
    text = _decode(body)
    if isinstance(text, Reason):
        return {}
    doc, problem = _parse(text)
    if problem is not None or not isinstance(doc, dict):
        return {}
    return {name: _storable(doc[name]) for name in names if name in doc}


def _storable(value: Any) -> Any:
    if isinstance(value, JSONNumber | UnrepresentableNumber):
        return value.token
    if isinstance(value, Decimal):  # an integer too long for int()
        return str(value)
    if isinstance(value, str):
        return safe_text(value, MAX_BODY_BYTES)
    if isinstance(value, dict):
        return {safe_text(k, MAX_BODY_BYTES): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value  # int, bool, None


def _validate(
    body: Any,
    attributes: Mapping[str, str] | None,
    received_at: datetime | None,
    types: Collection[str],
    shop: money.Currency,
) -> Order | Event | Rejection:
    text = _decode(body)
    if isinstance(text, Reason):
        return Rejection(reasons=(text,))
    doc, problem = _parse(text)
    if problem is not None:
        if isinstance(doc, dict):
            return Rejection(reasons=(problem,), **_searchable(doc))
        return Rejection(reasons=(problem,))
    if not isinstance(doc, dict):
        return Rejection(
            reasons=(
                Reason(
                    NOT_AN_OBJECT, "body", f"top level must be a JSON object, got {_short(doc)}"
                ),
            )
        )
    message_type = _check_type(doc, types)
    if isinstance(message_type, Reason):
        return Rejection(reasons=(message_type,), **_searchable(doc))
    if message_type == TYPE_PLACED:
        return _validate_order(doc, attributes, received_at, shop)
    return _validate_event(doc, _EVENT_KINDS[message_type], attributes, received_at, shop)


def _validate_order(
    doc: dict[str, Any],
    attributes: Mapping[str, str] | None,
    received_at: datetime | None,
    shop: money.Currency,
) -> Order | Rejection:
    reasons: list[Reason] = []
    order_id = _check_id(doc, "order_id", reasons)
    user_id = _check_id(doc, "user_id", reasons)
    in_shop_currency = _check_currency(doc, shop, reasons)
    value = _check_value(doc, reasons)
    items = _check_items(doc, reasons)
    ordered_at = _check_timestamp(doc, reasons)

    value_cents = None
    if value is not None and in_shop_currency:
        value_cents = _minor_amount(value, doc["order_value"], "order_value", shop, reasons)
    if value_cents is not None and items is not None:
        total = _items_total(items)
        if total is None:
            reasons.append(
                Reason(INVALID_ITEMS, "items", "prices have too many digits to total exactly")
            )
        elif total > _SUM_CEILING or shop.round_to_minor_units(total) != value_cents:
            shown = (
                _amount_text(shop.round_to_minor_units(total), shop.code)
                if total <= _SUM_CEILING
                else "over 1,000,000,000"
            )
            reasons.append(
                Reason(
                    VALUE_MISMATCH,
                    "order_value",
                    f"order_value {_amount_text(value_cents, shop.code)} does not equal the items' "
                    f"total {shown}",
                )
            )

    occurred_at = _occurred_at(ordered_at, "order_timestamp", attributes, received_at, reasons)
    if reasons:
        return Rejection(reasons=tuple(reasons), **_searchable(doc))
    assert order_id is not None and user_id is not None and items is not None
    assert value_cents is not None and occurred_at is not None
    return Order(
        order_id=order_id,
        user_id=user_id,
        value_cents=value_cents,
        items=items,
        ordered_at=ordered_at,
        occurred_at=occurred_at,
        currency=shop.code,
    )
