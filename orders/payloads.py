"""A rejected message's payload, read losslessly: pretty for staff, and stripped of personal
data when its retention ends or its user asks to be forgotten.

Pure (no I/O). Both read the JSON with every number token as sent and every key in order,
duplicates included: plain ``json`` would turn 19.990 into 19.99, 1e2 into 100.0, and keep
only the last of two equal keys, so staff would see (or the stripped copy would keep) a
payload that is not the one that was received.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from orders.validation import safe_text

# Bodies beyond this are shown truncated in the admin; the stored bytes stay whole.
DISPLAY_LIMIT = 64 * 1024
_PRETTY_MAX_DEPTH = 64

# What stays of a payload once its personal data is removed: the order itself, or the refund
# or cancellation (what the reasons speak of and what a resubmission needs), never who it goes
# to or how it was paid. A refund's free-text ``reason`` is not kept: it may name a person.
ORDER_FIELDS = (
    "type", "order_id", "user_id", "order_timestamp", "order_value", "currency", "items",
    "event_id", "occurred_at", "amount",
)  # fmt: skip
ITEM_FIELDS = ("product_id", "quantity", "price_per_unit")


class _RawNumber(str):
    """A JSON number token kept verbatim."""

    __slots__ = ()


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's (key, value) pairs as sent, duplicates included."""

    __slots__ = ()


class _TooDeepError(Exception):
    pass


def _loads(text: str) -> Any:
    return json.loads(
        text,
        parse_float=_RawNumber,
        parse_int=_RawNumber,
        parse_constant=_RawNumber,
        object_pairs_hook=_Pairs,
    )


def pretty_body_text(text: str) -> str:
    """A body indented when it is JSON, else as text; numbers keep their exact digits and
    every key is shown, in the order sent."""
    try:
        pretty = _pretty(_loads(text), 0)
    except (ValueError, RecursionError, _TooDeepError):
        pretty = text
    pretty = safe_text(pretty, max_length=DISPLAY_LIMIT + 1)
    if len(pretty) > DISPLAY_LIMIT:
        pretty = pretty[:DISPLAY_LIMIT] + "\n… (truncated for display)"
    return pretty


def _pretty(value: Any, level: int) -> str:
    if level > _PRETTY_MAX_DEPTH:
        raise _TooDeepError
    pad = "  " * (level + 1)
    end = "  " * level
    if isinstance(value, _RawNumber):
        return str(value)
    if isinstance(value, _Pairs):
        if not value:
            return "{}"
        inner = ",\n".join(
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, level + 1)}" for k, v in value
        )
        return "{\n" + inner + "\n" + end + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = ",\n".join(f"{pad}{_pretty(v, level + 1)}" for v in value)
        return "[\n" + inner + "\n" + end + "]"
    return json.dumps(value, ensure_ascii=False)


def without_personal_fields(text: str, keep: Collection[str] = ()) -> str | None:
    """``text`` (a JSON object) with only the order's own fields (``ORDER_FIELDS``, and in
    each item ``ITEM_FIELDS``) plus the top-level fields ``keep``; None when ``text`` is not
    a JSON object, since nothing in it can then be told apart from personal data.

    The kept values stay as sent (number tokens, duplicate keys, order); the result is
    compact ASCII JSON, storable in any text or bytes column. Applying it twice gives the
    same text as once.
    """
    allowed = {*ORDER_FIELDS, *keep}
    try:
        doc = _loads(text)
        if not isinstance(doc, _Pairs):
            return None
        kept = _Pairs(
            (key, _items_only(value) if key == "items" else value)
            for key, value in doc
            if key in allowed
        )
        return _compact(kept)
    except (ValueError, RecursionError):
        return None


def _items_only(items: Any) -> Any:
    if not isinstance(items, list) or isinstance(items, _Pairs):
        return items  # not an array: what made the order invalid, kept as sent
    return [
        _Pairs((k, v) for k, v in item if k in ITEM_FIELDS) if isinstance(item, _Pairs) else item
        for item in items
    ]


def _compact(value: Any) -> str:
    if isinstance(value, _RawNumber):
        return str(value)
    if isinstance(value, _Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{_compact(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return json.dumps(value)
