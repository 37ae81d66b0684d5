"""The order contract: a table of named cases for every rule and code, plus property tests."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders.tests.conftest import (
    SENT_AT,
    SENT_ATTRIBUTES,
    body_of,
    exact_json,
    spellings,
    valid_doc,
    valid_ids,
)
from orders.validation import (
    ALL_CODES,
    DUPLICATE_ORDER_ID,
    INVALID_FIELD,
    INVALID_ITEMS,
    INVALID_JSON,
    INVALID_TIMESTAMP,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    TOO_MANY_DECIMALS,
    VALUE_MISMATCH,
    Event,
    Order,
    Rejection,
    canonical_number,
    conflict_rejection,
    safe_text,
    validate_message,
)

WIDE = Context(prec=200)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def changed(**changes: Any) -> str:
    doc = valid_doc()
    doc.update(changes)
    return body_of(doc)


def without(*names: str) -> str:
    doc = valid_doc()
    for name in names:
        del doc[name]
    return body_of(doc)


def with_item(index: int, **changes: Any) -> str:
    doc = valid_doc()
    doc["items"][index].update(changes)
    return body_of(doc)


def item_without(index: int, name: str) -> str:
    doc = valid_doc()
    del doc["items"][index][name]
    return body_of(doc)


def replace(old: str, new: str) -> str:
    text = body_of(valid_doc())
    assert old in text
    return text.replace(old, new, 1)


def validate(body: Any) -> Order | Event | Rejection:
    return validate_message(body, SENT_ATTRIBUTES)


# --- accepted -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "cents"),
    [
        pytest.param(body_of(valid_doc()), 10997, id="contract-example"),
        pytest.param(body_of(valid_doc()).encode(), 10997, id="bytes-body"),
        pytest.param(replace("109.97", "109.970000"), 10997, id="trailing-zeros"),
        pytest.param(replace("109.97", "1.0997e2"), 10997, id="exponent-notation"),
        pytest.param(replace("109.97", "109.9700"), 10997, id="trailing-zeros-are-no-decimals"),
        pytest.param(
            changed(order_value=0, items=[{"quantity": 3, "price_per_unit": 0}]), 0, id="free"
        ),
        pytest.param(
            replace('"order_value": 109.97', '"order_value": 0.01')
            .replace("19.99", "0.001666")
            .replace("69.99", "0.006668"),
            1,  # 2 x 0.001666 + 0.006668 = 0.01 exactly
            id="sub-cent-prices-sum-exactly",
        ),
        pytest.param(
            changed(order_value=1_000_000_000, items=[{"quantity": 1, "price_per_unit": 1e9}]),
            100_000_000_000,
            id="max-value",
        ),
        pytest.param(
            changed(
                order_value=0.3,
                items=[{"quantity": 1, "price_per_unit": 0.1}] * 3,
            ),
            30,
            id="no-float-error-0.1x3",
        ),
        pytest.param(changed(user_id="  U100  "), 10997, id="ids-trimmed"),
        pytest.param(without("shipping_address", "payment_method"), 10997, id="extras-optional"),
        pytest.param(
            changed(
                items=[
                    {"quantity": 2, "price_per_unit": 19.99},
                    {"quantity": 1, "price_per_unit": 69.99},
                ]
            ),
            10997,
            id="product-id-optional",
        ),
        pytest.param(replace('"CreditCard"', "1" + "0" * 5000), 10997, id="huge-int-ignored-field"),
        pytest.param(changed(order_id="Ördér-日本-🛒"), 10997, id="unicode-id"),
    ],
)
def test_accepted(body: Any, cents: int) -> None:
    result = validate(body)
    assert isinstance(result, Order), result
    assert result.value_cents == cents


def test_accepted_order_is_normalized() -> None:
    result = validate(changed(user_id=" U100 "))
    assert isinstance(result, Order)
    assert result.order_id == "ORD1000"
    assert result.user_id == "U100"
    assert [(i.product_id, i.quantity, i.unit_price) for i in result.items] == [
        ("P001", 2, Decimal("19.99")),
        ("P042", 1, Decimal("69.99")),
    ]
    assert result.ordered_at == datetime(2025, 8, 9, 10, 15, tzinfo=UTC)
    assert result.occurred_at == result.ordered_at
    assert result.day == date(2025, 8, 9)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        pytest.param("2025-08-09T10:15:00Z", datetime(2025, 8, 9, 10, 15, tzinfo=UTC), id="z"),
        pytest.param("2025-08-09T10:15:00", datetime(2025, 8, 9, 10, 15, tzinfo=UTC), id="naive"),
        pytest.param(
            "2025-08-09T01:30:00+05:30", datetime(2025, 8, 8, 20, 0, tzinfo=UTC), id="offset"
        ),
        pytest.param(
            "2025-08-09T22:00:00-07:00", datetime(2025, 8, 10, 5, 0, tzinfo=UTC), id="west"
        ),
        pytest.param("2025-08-09", datetime(2025, 8, 9, tzinfo=UTC), id="date-only"),
    ],
)
def test_timestamp_is_utc(stamp: str, expected: datetime) -> None:
    result = validate(changed(order_timestamp=stamp))
    assert isinstance(result, Order)
    assert result.ordered_at == expected
    assert result.day == expected.date()


def test_without_timestamp_sent_timestamp_dates_the_order() -> None:
    result = validate(without("order_timestamp"))
    assert isinstance(result, Order)
    assert result.ordered_at is None
    assert result.occurred_at == SENT_AT
    assert result.day == SENT_AT.date()


def test_null_timestamp_is_absent() -> None:
    result = validate(changed(order_timestamp=None))
    assert isinstance(result, Order)
    assert result.occurred_at == SENT_AT


def test_received_at_is_the_last_resort() -> None:
    now = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    result = validate_message(
        without("order_timestamp"), {"SentTimestamp": "garbage"}, received_at=now
    )
    assert isinstance(result, Order)
    assert result.occurred_at == now


def test_undated_order_is_rejected() -> None:
    result = validate_message(without("order_timestamp"))
    assert isinstance(result, Rejection)
    assert result.codes == (INVALID_TIMESTAMP,)
    assert result.order_id == "ORD1000"


def test_fingerprint_ignores_the_envelope() -> None:
    a = validate(body_of(valid_doc()))
    b = validate_message(json.dumps(valid_doc(), indent=2), {"SentTimestamp": "1"})
    c = validate(replace("109.97", "109.98").replace("69.99", "70.00"))
    assert isinstance(a, Order) and isinstance(b, Order) and isinstance(c, Order)
    assert a.fingerprint == b.fingerprint != c.fingerprint


LEGACY_CASES = [
    # (body, the fingerprint the release before version 2 gave it, computed with that code)
    pytest.param(body_of(valid_doc()), "e6e064d9cfb22a4054b0e80f2b5f5679", id="contract"),
    pytest.param(without("order_timestamp"), "0793bd4a0d83c597e4e7451f8eba8b9a", id="undated"),
    pytest.param(
        changed(order_value=0, items=[{"quantity": 3, "price_per_unit": 0}]),
        "2612b9b96b51490df15bed7e398c7a18",
        id="free-no-product-id",
    ),
    pytest.param(
        r'{"order_id": "\u00d6rd\u00e9r-\u65e5\u672c-\ud83d\uded2", "user_id": "U7", '
        '"order_value": 1.5, "items": [{"product_id": "P1", "quantity": 1, "price_per_unit": '
        '1.5}], "order_timestamp": "2025-08-09T01:30:00+05:30"}',
        "a40cbe1aaebec544e97a7a6ca8a103f8",
        id="unicode-offset",
    ),
    pytest.param(
        '{"order_id": "A-1", "user_id": "U1", "order_value": 200, "items": [{"product_id": '
        '"P9", "quantity": 2, "price_per_unit": 100}], "order_timestamp": "2025-08-09T10:15:00Z"}',
        "cca2505c1aaee7c24d007166422deb47",
        id="integer-price",
    ),
    pytest.param(
        '{"order_id": "A-2", "user_id": "U2", "order_value": 3.0, "items": [{"quantity": 2, '
        '"price_per_unit": 1.50}, {"product_id": "P1", "quantity": 1, "price_per_unit": -0}], '
        '"order_timestamp": "2025-08-09T10:15:00Z"}',
        "1aa68ec658d09f3c68c93aafb710cdbe",
        id="two-items-minus-zero",
    ),
]


@pytest.mark.parametrize(("body", "expected"), LEGACY_CASES)
def test_legacy_fingerprint_is_the_one_marks_were_written_with(body: str, expected: str) -> None:
    order = validate(body)
    assert isinstance(order, Order)
    assert order.legacy_fingerprint == expected
    assert order.fingerprint != expected


def test_fingerprint_is_versioned() -> None:
    order = validate(body_of(valid_doc()))
    assert isinstance(order, Order)
    version, digest = order.fingerprint.split(":")
    assert version == "2"
    assert len(digest) == 32 and int(digest, 16) >= 0


def test_fingerprint_is_canonical() -> None:
    base = validate(body_of(valid_doc()))
    doc = valid_doc()
    doc["items"].reverse()
    doc["order_timestamp"] = "2025-08-09T12:15:00+02:00"
    respelled = (
        body_of(doc)
        .replace("19.99", "1999e-2")
        .replace("69.99", "69.990")
        .replace("109.97", "10997E-2")
    )
    again = validate(respelled)
    assert isinstance(base, Order) and isinstance(again, Order)
    assert again.fingerprint == base.fingerprint


def priced(price: str, value: str) -> str:
    """A one-item order with ``price`` and ``order_value`` written exactly as given."""
    doc = {
        "order_id": "O",
        "user_id": "U",
        "order_value": "#",
        "items": [{"product_id": "X", "quantity": 1, "price_per_unit": "@"}],
    }
    return body_of(doc).replace('"@"', price).replace('"#"', value)


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        pytest.param(
            ["1.5", "1.50", "15e-1", "0.15E+1", "1.5000000000"], "1.5", id="one-and-a-half"
        ),
        pytest.param(["0", "-0", "0.00", "-0.0", "0e9", "0E-40"], "0", id="zero"),
        pytest.param(["100", "1e2", "100.000", "1E+2"], "1E+2", id="hundred"),
    ],
)
def test_one_value_has_one_fingerprint_whatever_its_spelling(
    spellings: list[str], canonical: str
) -> None:
    prints = set()
    for spelling in spellings:
        assert canonical_number(Decimal(spelling)) == canonical
        order = validate(priced(spelling, spelling))
        assert isinstance(order, Order), order
        prints.add(order.fingerprint)
    assert len(prints) == 1


@pytest.mark.parametrize(
    ("a", "b", "value"),
    [
        pytest.param("1", "1.000000000000000000000000000000001", "1", id="31st-digit"),
        pytest.param("0", "1e-99999999", "0", id="extreme-exponent"),
        pytest.param("1e-99999999", "1e-99999998", "0", id="two-extreme-exponents"),
    ],
)
def test_fingerprint_does_not_collapse_long_digits_or_extreme_exponents(
    a: str, b: str, value: str
) -> None:
    # ``value`` is both prices rounded to cents (an order_value is in whole cents).
    first, second = validate(priced(a, value)), validate(priced(b, value))
    assert isinstance(first, Order) and isinstance(second, Order), (first, second)
    assert first.value_cents == second.value_cents
    assert first.fingerprint != second.fingerprint
    # What version 2 fixes: the old fingerprint rounded prices to 28 digits.
    assert first.legacy_fingerprint == second.legacy_fingerprint


@pytest.mark.parametrize(
    ("body", "key"),
    [
        pytest.param(
            replace('"order_value": 109.97', '"order_value": 10, "order_value": 5'),
            "order_value",
            id="top-level",
        ),
        pytest.param(
            replace('"quantity": 2', '"quantity": 2, "quantity": 3'), "quantity", id="in-an-item"
        ),
        pytest.param(
            replace('"payment_method": "CreditCard"', '"payment_method": {"a": 1, "a": 2}'),
            "a",
            id="in-an-ignored-object",
        ),
        pytest.param(
            replace('"user_id": "U100"', '"user_id": "U100", "user_id": "U100"'),
            "user_id",
            id="same-value-twice",
        ),
    ],
)
def test_a_duplicate_key_anywhere_is_invalid_json_naming_the_key(body: str, key: str) -> None:
    result = validate(body)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {
            "code": INVALID_JSON,
            "field": "body",
            "message": f"key {key!r} appears twice in one object",
        }
    ]
    assert (result.order_id, result.user_id) == ("ORD1000", "U100")  # still searchable


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(
            replace("109.97", "1e999999999999999999999"),
            {
                "code": INVALID_FIELD,
                "field": "order_value",
                "message": "order_value 1e999999999999999999999 is out of the range of decimal"
                " numbers",
            },
            id="order-value",
        ),
        pytest.param(
            replace("19.99", "-1E-999999999999999999999"),
            {
                "code": INVALID_ITEMS,
                "field": "items[0].price_per_unit",
                "message": "price_per_unit -1E-999999999999999999999 is out of the range of "
                "decimal numbers",
            },
            id="price",
        ),
        pytest.param(
            replace('"quantity": 2', '"quantity": 2e999999999999999999999'),
            {
                "code": INVALID_ITEMS,
                "field": "items[0].quantity",
                "message": "quantity must be a whole number, got 2e999999999999999999999",
            },
            id="quantity",
        ),
        pytest.param(
            replace('"quantity": 2', '"quantity": 2e0'),
            {
                "code": INVALID_ITEMS,
                "field": "items[0].quantity",
                "message": "quantity must be a whole number, got 2e0",
            },
            id="quantity-1e0-shows-what-was-sent",
        ),
        pytest.param(
            replace('"quantity": 2', '"quantity": 2.0'),
            {
                "code": INVALID_ITEMS,
                "field": "items[0].quantity",
                "message": "quantity must be a whole number, got 2.0",
            },
            id="quantity-2.0",
        ),
        pytest.param(
            replace('"order_id": "ORD1000"', '"order_id": 1e999999999999999999999'),
            {
                "code": INVALID_FIELD,
                "field": "order_id",
                "message": "order_id must be a string, got 1e999999999999999999999",
            },
            id="order-id",
        ),
    ],
)
def test_a_number_decimal_cannot_hold_is_a_field_problem(body: str, reason: dict[str, str]) -> None:
    result = validate(body)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [reason]


def test_a_number_decimal_cannot_hold_in_an_ignored_field_does_no_harm() -> None:
    result = validate(replace('"CreditCard"', "1e999999999999999999999"))
    assert isinstance(result, Order)
    assert result.value_cents == 10997


def test_a_price_the_fingerprint_cannot_spell_exactly_is_rejected() -> None:
    # Below the smallest exponent any exact Decimal context reaches: refused, never rounded.
    text = changed(order_value=0, items=[{"quantity": 1, "price_per_unit": 7}]).replace(
        '"price_per_unit": 7', '"price_per_unit": 1e-1999999999999999990'
    )
    result = validate(text)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {
            "code": INVALID_ITEMS,
            "field": "items[0].price_per_unit",
            "message": "price_per_unit 1e-1999999999999999990 cannot be represented exactly",
        }
    ]


# --- rejected: one case per rule --------------------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000

REJECTED = [
    # body
    pytest.param(b"\xff\xfe{}", {INVALID_JSON}, id="not-utf8"),
    pytest.param(b'{"order_id": "\xed\xa0\x80"}', {INVALID_JSON}, id="utf8-encoded-surrogate"),
    pytest.param("", {INVALID_JSON}, id="empty"),
    pytest.param("{", {INVALID_JSON}, id="truncated"),
    pytest.param("{'order_id': 'x'}", {INVALID_JSON}, id="single-quotes"),
    pytest.param(body_of(valid_doc()) + " x", {INVALID_JSON}, id="trailing-garbage"),
    pytest.param(replace("109.97", "NaN"), {INVALID_JSON}, id="nan"),
    pytest.param(replace("109.97", "Infinity"), {INVALID_JSON}, id="infinity"),
    pytest.param(replace("109.97", "-Infinity"), {INVALID_JSON}, id="minus-infinity"),
    pytest.param(DEEP, {INVALID_JSON}, id="deep-nesting"),
    pytest.param('{"a":' * 50_000 + "1" + "}" * 50_000, {INVALID_JSON}, id="deep-objects"),
    pytest.param(changed(shipping_address="x" * (256 * 1024)), {INVALID_JSON}, id="over-256-kib"),
    pytest.param(
        changed(shipping_address="x" * (256 * 1024)).encode(),
        {INVALID_JSON},
        id="over-256-kib-bytes",
    ),
    pytest.param(
        changed(shipping_address="é" * (130 * 1024)), {INVALID_JSON}, id="over-256-kib-utf8-bytes"
    ),
    pytest.param(None, {INVALID_JSON}, id="none-body"),
    pytest.param(12, {INVALID_JSON}, id="int-body"),
    # top level
    pytest.param("[]", {NOT_AN_OBJECT}, id="array"),
    pytest.param(json.dumps([valid_doc()]), {NOT_AN_OBJECT}, id="array-of-order"),
    pytest.param('"ORD1000"', {NOT_AN_OBJECT}, id="string"),
    pytest.param("42", {NOT_AN_OBJECT}, id="number"),
    pytest.param("null", {NOT_AN_OBJECT}, id="null"),
    pytest.param("true", {NOT_AN_OBJECT}, id="bool"),
    # ids
    pytest.param(without("order_id"), {MISSING_FIELD}, id="order-id-missing"),
    pytest.param(without("user_id"), {MISSING_FIELD}, id="user-id-missing"),
    pytest.param(changed(order_id=None), {INVALID_FIELD}, id="order-id-null"),
    pytest.param(changed(order_id=1000), {INVALID_FIELD}, id="order-id-number"),
    pytest.param(changed(order_id=""), {INVALID_FIELD}, id="order-id-empty"),
    pytest.param(changed(order_id="   "), {INVALID_FIELD}, id="order-id-blank"),
    pytest.param(changed(order_id="x" * 129), {INVALID_FIELD}, id="order-id-too-long"),
    pytest.param(changed(order_id="\ud800"), {INVALID_FIELD}, id="order-id-lone-surrogate"),
    pytest.param(changed(user_id="U\x00"), {INVALID_FIELD}, id="user-id-nul"),
    pytest.param(changed(user_id="U\n1"), {INVALID_FIELD}, id="user-id-newline"),
    pytest.param(changed(user_id="U\x7f"), {INVALID_FIELD}, id="user-id-del"),
    # str.strip() would trim these as whitespace; they are control characters.
    pytest.param(changed(order_id="ORD1\x1f"), {INVALID_FIELD}, id="order-id-trailing-unit-sep"),
    pytest.param(changed(user_id="\x85U1"), {INVALID_FIELD}, id="user-id-leading-nel"),
    pytest.param(changed(user_id=["U100"]), {INVALID_FIELD}, id="user-id-array"),
    # order_value
    pytest.param(without("order_value"), {MISSING_FIELD}, id="value-missing"),
    pytest.param(changed(order_value="109.97"), {INVALID_FIELD}, id="value-string"),
    pytest.param(changed(order_value=True), {INVALID_FIELD}, id="value-bool"),
    pytest.param(changed(order_value=None), {INVALID_FIELD}, id="value-null"),
    pytest.param(changed(order_value=-0.01), {INVALID_FIELD}, id="value-negative"),
    pytest.param(changed(order_value=1_000_000_000.01), {INVALID_FIELD}, id="value-over-max"),
    pytest.param(replace("109.97", "1e400"), {INVALID_FIELD}, id="value-huge-exponent"),
    pytest.param(replace("109.97", "1" + "0" * 5000), {INVALID_FIELD}, id="value-huge-int"),
    # items
    pytest.param(without("items"), {MISSING_FIELD}, id="items-missing"),
    pytest.param(changed(items=[]), {INVALID_ITEMS}, id="items-empty"),
    pytest.param(changed(items={"0": {}}), {INVALID_ITEMS}, id="items-object"),
    pytest.param(changed(items=None), {INVALID_ITEMS}, id="items-null"),
    pytest.param(changed(items=[1, 2]), {INVALID_ITEMS}, id="items-not-objects"),
    pytest.param(
        changed(items=[{"quantity": 1, "price_per_unit": 0}] * 1001, order_value=0),
        {INVALID_ITEMS},
        id="items-over-1000",
    ),
    pytest.param(with_item(0, quantity=0), {INVALID_ITEMS}, id="quantity-zero"),
    pytest.param(with_item(0, quantity=-1), {INVALID_ITEMS}, id="quantity-negative"),
    pytest.param(with_item(0, quantity=2.5), {INVALID_ITEMS}, id="quantity-fraction"),
    pytest.param(with_item(0, quantity=True), {INVALID_ITEMS}, id="quantity-bool"),
    pytest.param(with_item(0, quantity="2"), {INVALID_ITEMS}, id="quantity-string"),
    pytest.param(item_without(0, "quantity"), {INVALID_ITEMS}, id="quantity-missing"),
    pytest.param(
        replace('"quantity": 2', '"quantity": 1' + "0" * 5000), {INVALID_ITEMS}, id="quantity-huge"
    ),
    pytest.param(with_item(1, price_per_unit="69.99"), {INVALID_ITEMS}, id="price-string"),
    pytest.param(with_item(1, price_per_unit=False), {INVALID_ITEMS}, id="price-bool"),
    pytest.param(with_item(1, price_per_unit=-1), {INVALID_ITEMS}, id="price-negative"),
    pytest.param(item_without(1, "price_per_unit"), {INVALID_ITEMS}, id="price-missing"),
    pytest.param(with_item(1, product_id=42), {INVALID_ITEMS}, id="product-id-number"),
    pytest.param(with_item(1, product_id="P\x00"), {INVALID_ITEMS}, id="product-id-nul"),
    # value cross-check
    pytest.param(changed(order_value=109.96), {VALUE_MISMATCH}, id="value-one-cent-low"),
    pytest.param(changed(order_value=109.98), {VALUE_MISMATCH}, id="value-one-cent-high"),
    # an order_value finer than cents is refused, never rounded (it cannot have been paid)
    pytest.param(replace("109.97", "109.974"), {TOO_MANY_DECIMALS}, id="value-below-a-cent"),
    pytest.param(replace("109.97", "109.975"), {TOO_MANY_DECIMALS}, id="value-half-a-cent"),
    pytest.param(
        changed(order_value=0.0, items=[{"quantity": 1, "price_per_unit": 0.005}]),
        {VALUE_MISMATCH},
        id="sum-half-cent-rounds-up",
    ),
    pytest.param(
        changed(order_value=1e9, items=[{"quantity": 10**9, "price_per_unit": 1e9}]),
        {VALUE_MISMATCH},
        id="sum-far-over-max",
    ),
    pytest.param(
        replace("19.99", "1e-99999999"),
        {INVALID_ITEMS},  # too many digits to total exactly: refused, not rounded
        id="price-too-precise",
    ),
    # timestamp
    pytest.param(changed(order_timestamp="yesterday"), {INVALID_TIMESTAMP}, id="ts-word"),
    pytest.param(
        changed(order_timestamp="2025-13-45T00:00:00Z"), {INVALID_TIMESTAMP}, id="ts-bad-date"
    ),
    pytest.param(changed(order_timestamp=1723198500), {INVALID_TIMESTAMP}, id="ts-number"),
    pytest.param(changed(order_timestamp=""), {INVALID_TIMESTAMP}, id="ts-empty"),
    pytest.param(changed(order_timestamp="2025" * 100), {INVALID_TIMESTAMP}, id="ts-long"),
    pytest.param(
        changed(order_timestamp="0001-01-01T00:00:00+01:00"), {INVALID_TIMESTAMP}, id="ts-underflow"
    ),
    # several at once: every reason is reported
    pytest.param(
        body_of({"order_id": 5, "order_value": "x", "items": [], "order_timestamp": "x"}),
        {INVALID_FIELD, MISSING_FIELD, INVALID_ITEMS, INVALID_TIMESTAMP},
        id="many-reasons",
    ),
    pytest.param("{}", {MISSING_FIELD}, id="empty-object"),
]


@pytest.mark.parametrize(("body", "codes"), REJECTED)
def test_rejected(body: Any, codes: set[str]) -> None:
    result = validate(body)
    assert isinstance(result, Rejection), result
    assert set(result.codes) == codes
    assert result.codes == tuple(sorted(codes))
    for reason in result.reasons:
        assert reason.message
        reason.message.encode("utf-8")  # storable: no lone surrogates
        assert "\x00" not in reason.message


def test_every_reason_is_listed_with_its_field() -> None:
    body = body_of({"order_id": 5, "order_value": "x", "items": [], "order_timestamp": "x"})
    result = validate(body)
    assert isinstance(result, Rejection)
    assert [(r.code, r.field) for r in result.reasons] == [
        (INVALID_FIELD, "order_id"),
        (MISSING_FIELD, "user_id"),
        (INVALID_FIELD, "order_value"),
        (INVALID_ITEMS, "items"),
        (INVALID_TIMESTAMP, "order_timestamp"),
    ]


def test_each_broken_item_is_named() -> None:
    doc = valid_doc()
    doc["items"][0]["quantity"] = 0
    doc["items"][1]["price_per_unit"] = "x"
    result = validate(body_of(doc))
    assert isinstance(result, Rejection)
    assert [r.field for r in result.reasons] == ["items[0].quantity", "items[1].price_per_unit"]


def test_item_reasons_are_capped() -> None:
    result = validate(changed(items=[{"quantity": 0, "price_per_unit": 1}] * 500))
    assert isinstance(result, Rejection)
    assert len(result.reasons) == 11
    assert "490 more" in result.reasons[-1].message


def test_value_mismatch_message_shows_both_amounts() -> None:
    result = validate(changed(order_value=109.96))
    assert isinstance(result, Rejection)
    assert result.reasons[0].message == "order_value 109.96 does not equal the items' total 109.97"


@pytest.mark.parametrize(
    ("order_id", "stored"),
    [
        pytest.param("ORD 1", "ORD 1", id="plain"),
        pytest.param("  ORD1  ", "ORD1", id="trimmed"),
        pytest.param("\ud800", "\\ud800", id="lone-surrogate-escaped"),
        pytest.param("A\x00B", "A\\x00B", id="nul-escaped"),
        pytest.param("x" * 300, "x" * 255, id="truncated"),
        pytest.param("", None, id="empty-is-none"),
        pytest.param(12, None, id="number-is-none"),
    ],
)
def test_rejection_keeps_searchable_ids(order_id: Any, stored: str | None) -> None:
    result = validate(changed(order_id=order_id, order_value="broken"))
    assert isinstance(result, Rejection)
    assert result.order_id == stored
    assert result.user_id == "U100"


def test_conflict_rejection() -> None:
    order = validate(body_of(valid_doc()))
    assert isinstance(order, Order)
    rejection = conflict_rejection(order)
    assert rejection.codes == (DUPLICATE_ORDER_ID,)
    assert (rejection.order_id, rejection.user_id) == ("ORD1000", "U100")
    assert rejection.reasons[0].field == "order_id"


def test_codes_are_the_contract_strings() -> None:
    assert ALL_CODES == (
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "invalid_items",
        "value_mismatch",
        "invalid_timestamp",
        "duplicate_order_id",
        "unknown_type",
        "too_many_decimals",
        "amount_mismatch",
        "refund_exceeds_order",
        "unknown_item",
        "refund_exceeds_items",
        "order_cancelled",
        "duplicate_event_id",
        "currency_mismatch",
    )


def test_safe_text() -> None:
    assert safe_text("a\ud800b\x00c") == "a\\ud800b\\x00c"
    assert safe_text("é" * 10, 3) == "ééé"


def test_sent_timestamp_edge_values_never_raise() -> None:
    for value in ("", "9" * 40, "1.5", None):
        attributes = {"SentTimestamp": value}  # a None among them: what no SQS sends
        result = validate_message(without("order_timestamp"), attributes)  # type: ignore[arg-type]
        assert isinstance(result, Rejection)  # undatable, not a crash
    not_attributes = "not a mapping"  # what no caller passes: must not crash either
    assert isinstance(validate_message(body_of(valid_doc()), not_attributes), Order)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec=None, categories=None))
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
ORDER_KEYS = ["order_id", "user_id", "order_value", "items", "order_timestamp"]
order_shaped = st.dictionaries(
    st.sampled_from(ORDER_KEYS),
    json_values
    | st.lists(
        st.dictionaries(st.sampled_from(["quantity", "price_per_unit", "product_id"]), json_values)
    ),
)


@PROPERTY
@given(st.one_of(json_values, order_shaped))
def test_any_json_never_raises(value: Any) -> None:
    text = json.dumps(value)
    for body in (text, text.encode("utf-8", "surrogatepass")):
        result = validate_message(body, SENT_ATTRIBUTES)
        assert isinstance(result, Order | Rejection)


@PROPERTY
@given(st.binary(max_size=300) | st.text(alphabet=st.characters(codec=None, categories=None)))
def test_any_bytes_or_text_never_raises(body: bytes | str) -> None:
    result = validate_message(body, {"SentTimestamp": "x"})
    assert isinstance(result, Order | Rejection)


@st.composite
def valid_orders(draw: st.DrawFn) -> tuple[dict[str, Any], int, datetime | None]:
    """A valid order document, its exact value in cents (integer arithmetic), its UTC time."""
    items = []
    total_units = 0  # in 1e-4
    for _ in range(draw(st.integers(1, 5))):
        quantity = draw(st.integers(1, 20))
        scale = draw(st.integers(0, 4))
        units = draw(st.integers(0, 10**7 * 10**scale))
        price = Decimal(units).scaleb(-scale)
        total_units += quantity * units * 10 ** (4 - scale)
        item: dict[str, Any] = {"quantity": quantity, "price_per_unit": price}
        if draw(st.booleans()):
            item["product_id"] = draw(valid_ids)
        items.append(item)
    cents = (total_units + 50) // 100  # half-up, all non-negative
    # The items' total rounded to cents, as sent: with two decimals, or with trailing zeros
    # (no decimals of the value). The exact total may have more: see the test below.
    trailing_zeros = draw(st.booleans())
    value = Decimal(cents * 100).scaleb(-4) if trailing_zeros else Decimal(cents).scaleb(-2)
    doc: dict[str, Any] = {
        "order_id": draw(valid_ids),
        "user_id": draw(valid_ids),
        "order_value": value,
        "items": items,
    }
    when = None
    if draw(st.booleans()):
        when = draw(
            st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1))
        ).replace(tzinfo=UTC)
        offset = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
        doc["order_timestamp"] = when.astimezone(offset).isoformat()
    return doc, cents, when


@PROPERTY
@given(valid_orders())
def test_valid_orders_are_accepted_with_exact_cents(
    case: tuple[dict[str, Any], int, datetime | None],
) -> None:
    doc, cents, when = case
    assume_in_range = cents <= 100_000_000_000
    result = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    if not assume_in_range:
        assert isinstance(result, Rejection)
        return
    assert isinstance(result, Order), result
    assert result.value_cents == cents
    assert result.order_id == doc["order_id"]
    assert result.user_id == doc["user_id"]
    assert result.occurred_at == (when or SENT_AT)
    assert result.day == (when or SENT_AT).date()


@PROPERTY
@given(valid_orders(), st.integers(1, 99))
def test_an_order_value_finer_than_a_cent_is_too_many_decimals(
    case: tuple[dict[str, Any], int, datetime | None], below_a_cent: int
) -> None:
    doc, cents, _ = case
    if cents >= 100_000_000_000:
        return  # would break the range rule instead
    doc["order_value"] = Decimal(cents * 100 + below_a_cent).scaleb(-4)
    result = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    assert isinstance(result, Rejection), result
    assert result.codes == (TOO_MANY_DECIMALS,)
    assert result.reasons[0].field == "order_value"


BREAKERS: list[tuple[str, str, Any]] = [
    # (field, code, new value); a value of ... deletes the field
    ("order_id", MISSING_FIELD, ...),
    ("order_id", INVALID_FIELD, ""),
    ("order_id", INVALID_FIELD, 7),
    ("order_id", INVALID_FIELD, "\ud83d"),
    ("order_id", INVALID_FIELD, "ORD\x00"),
    ("order_id", INVALID_FIELD, "x" * 129),
    ("user_id", MISSING_FIELD, ...),
    ("user_id", INVALID_FIELD, None),
    ("user_id", INVALID_FIELD, "\t"),
    ("order_value", MISSING_FIELD, ...),
    ("order_value", INVALID_FIELD, "1.00"),
    ("order_value", INVALID_FIELD, True),
    ("order_value", INVALID_FIELD, Decimal("-0.01")),
    ("order_value", INVALID_FIELD, Decimal("1000000000.01")),
    ("order_value", VALUE_MISMATCH, "+0.01"),
    ("order_value", VALUE_MISMATCH, "-0.01"),
    ("items", MISSING_FIELD, ...),
    ("items", INVALID_ITEMS, []),
    ("items", INVALID_ITEMS, "items"),
    ("items", INVALID_ITEMS, [None]),
    ("items", INVALID_ITEMS, [{"quantity": Decimal("2.5"), "price_per_unit": 1}]),
    ("items", INVALID_ITEMS, [{"quantity": 0, "price_per_unit": 1}]),
    ("items", INVALID_ITEMS, [{"quantity": 1, "price_per_unit": "1"}]),
    ("order_timestamp", INVALID_TIMESTAMP, "not a date"),
    ("order_timestamp", INVALID_TIMESTAMP, 1723198500),
]


@PROPERTY
@given(valid_orders(), st.sampled_from(BREAKERS))
def test_one_broken_field_gives_that_fields_code(
    case: tuple[dict[str, Any], int, datetime | None], breaker: tuple[str, str, Any]
) -> None:
    doc, cents, _ = case
    name, code, bad = breaker
    if cents > 100_000_000_000:
        return
    if bad is ...:
        doc.pop(name, None)
    elif code == VALUE_MISMATCH:
        step = 1 if bad.startswith("+") else -1
        if cents == 0 and step < 0:
            step = 1
        doc["order_value"] = Decimal(cents + step).scaleb(-2)
        if cents + step > 100_000_000_000:
            return  # would break the range rule instead
    else:
        doc[name] = bad
    result = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    assert isinstance(result, Rejection), (doc, result)
    assert result.codes == (code,)
    assert {r.field for r in result.reasons} <= {name, "order_value"} | {
        r.field for r in result.reasons if r.field.startswith("items")
    }


@PROPERTY
@given(valid_orders(), st.data())
def test_item_order_and_number_spelling_do_not_change_the_fingerprint(
    case: tuple[dict[str, Any], int, datetime | None], data: st.DataObject
) -> None:
    doc, cents, when = case
    if cents > 100_000_000_000:
        return
    original = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    assert isinstance(original, Order)
    items = data.draw(st.permutations(doc["items"]))
    respelled = {
        **doc,
        "order_value": data.draw(spellings(doc["order_value"])),
        "items": [
            {**item, "price_per_unit": data.draw(spellings(item["price_per_unit"]))}
            for item in items
        ],
    }
    if when is not None:
        offset = timezone(timedelta(minutes=data.draw(st.integers(-14 * 60, 14 * 60))))
        respelled["order_timestamp"] = when.astimezone(offset).isoformat()
    again = validate_message(exact_json(respelled), SENT_ATTRIBUTES)
    assert isinstance(again, Order), again
    assert again.fingerprint == original.fingerprint


@PROPERTY
@given(valid_orders(), st.integers(1, 5), st.integers(29, 80))
def test_a_price_differing_anywhere_changes_the_fingerprint(
    case: tuple[dict[str, Any], int, datetime | None], which: int, digit: int
) -> None:
    doc, cents, _ = case
    if cents > 100_000_000_000:
        return
    original = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    item = doc["items"][which % len(doc["items"])]
    # Far below a cent (same value_cents), added exactly (the default context keeps 28 digits).
    item["price_per_unit"] = WIDE.add(item["price_per_unit"], Decimal(1).scaleb(-digit))
    changed_order = validate_message(exact_json(doc), SENT_ATTRIBUTES)
    assert isinstance(original, Order) and isinstance(changed_order, Order), changed_order
    assert changed_order.value_cents == original.value_cents
    assert changed_order.fingerprint != original.fingerprint


@PROPERTY
@given(valid_orders(), st.data())
def test_a_key_written_twice_in_any_object_is_invalid_json_naming_it(
    case: tuple[dict[str, Any], int, datetime | None], data: st.DataObject
) -> None:
    doc, _, _ = case
    target = data.draw(st.sampled_from([doc, *doc["items"]]))
    key = data.draw(st.sampled_from(sorted(target)))
    result = validate_message(exact_json(doc, duplicate=(id(target), key)), SENT_ATTRIBUTES)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {
            "code": INVALID_JSON,
            "field": "body",
            "message": f"key {key!r} appears twice in one object",
        }
    ]
