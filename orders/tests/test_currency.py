"""The shop's currency in the message contract: orders and events in it (JPY, KWD, USD), in
another (``currency_mismatch``), amounts finer than its minor unit (``too_many_decimals``), and
fingerprints that stay what they were for the USD orders recorded before currencies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from orderpipe.money import UnknownCurrencyError
from orders import validation
from orders.commit import validate_batch
from orders.forms import payload_errors
from orders.tests.conftest import SENT_ATTRIBUTES, Raw, exact_json, valid_doc
from orders.validation import (
    CURRENCY_MISMATCH,
    INVALID_FIELD,
    TOO_MANY_DECIMALS,
    TYPE_CANCELLED,
    TYPE_REFUNDED,
    VALUE_MISMATCH,
    Event,
    Order,
    Rejection,
    refund_exceeds_order_reason,
    validate_message,
)


def validate(body: str, currency: str | None = None) -> Order | Event | Rejection:
    return validate_message(body, SENT_ATTRIBUTES, currency=currency)


def order(value: str, prices: list[tuple[int, str]], **extra: Any) -> str:
    """An order whose ``order_value`` and ``price_per_unit``s are written exactly as given."""
    items = [
        {"product_id": f"P{n}", "quantity": quantity, "price_per_unit": Raw(price)}
        for n, (quantity, price) in enumerate(prices)
    ]
    doc = {
        "order_id": "ORD1",
        "user_id": "U1",
        "order_timestamp": "2025-08-09T10:15:00Z",
        "order_value": Raw(value),
        "items": items,
    }
    return exact_json(doc | extra)


def refund(amount: str, **extra: Any) -> str:
    doc = {
        "type": TYPE_REFUNDED,
        "event_id": "EV-1",
        "order_id": "ORD1",
        "amount": Raw(amount),
        "occurred_at": "2025-08-10T09:30:00Z",
    }
    return exact_json(doc | extra)


def cancellation(**extra: Any) -> str:
    doc = {"type": TYPE_CANCELLED, "event_id": "CX-1", "order_id": "ORD1"}
    return exact_json(doc | extra)


def rejected(result: Order | Event | Rejection) -> list[tuple[str, str]]:
    assert isinstance(result, Rejection), result
    return [(r.code, r.field) for r in result.reasons]


# --- orders in the shop's currency --------------------------------------------------------------
@pytest.mark.parametrize(
    ("shop", "body", "minor"),
    [
        pytest.param("JPY", order("1200", [(3, "400")]), 1200, id="jpy-whole-yen"),
        pytest.param("JPY", order("1200.0", [(3, "400")]), 1200, id="jpy-trailing-zero"),
        # A unit price may be finer than the currency: the line total is rounded half-up.
        pytest.param("JPY", order("2", [(3, "0.5")]), 2, id="jpy-half-yen-price-rounds-up"),
        pytest.param("KWD", order("1.250", [(2, "0.625")]), 1250, id="kwd-three-decimals"),
        pytest.param("KWD", order("1.25", [(2, "0.625")]), 1250, id="kwd-two-decimals"),
        pytest.param("KWD", order("0.001", [(1, "0.0005")]), 1, id="kwd-price-below-a-fils"),
        pytest.param("USD", order("109.97", [(2, "19.99"), (1, "69.99")]), 10997, id="usd"),
        pytest.param("USD", order("0.01", [(3, "0.0033")]), 1, id="usd-sub-cent-prices"),
    ],
)
def test_an_order_in_the_shops_currency_is_counted_in_its_minor_unit(
    shop: str, body: str, minor: int
) -> None:
    result = validate(body, shop)
    assert isinstance(result, Order), result
    assert (result.value_cents, result.currency) == (minor, shop)


@pytest.mark.parametrize(
    ("shop", "value", "price", "message"),
    [
        pytest.param(
            "JPY", "1200.5", "1200.5", "order_value 1200.5 has more decimals than JPY has (0)"
        ),
        pytest.param(
            "KWD", "1.2505", "1.2505", "order_value 1.2505 has more decimals than KWD has (3)"
        ),
        pytest.param(
            "USD", "109.974", "109.974", "order_value 109.974 has more decimals than USD has (2)"
        ),
    ],
)
def test_an_order_value_finer_than_the_minor_unit_is_refused_not_rounded(
    shop: str, value: str, price: str, message: str
) -> None:
    result = validate(order(value, [(1, price)]), shop)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {"code": TOO_MANY_DECIMALS, "field": "order_value", "message": message}
    ]


@pytest.mark.parametrize(
    ("shop", "value", "prices", "message"),
    [
        pytest.param(
            "JPY",
            "1201",
            [(3, "400")],
            "order_value 1201 does not equal the items' total 1200",
            id="jpy",
        ),
        pytest.param(
            "KWD",
            "1.250",
            [(2, "0.626")],
            "order_value 1.250 does not equal the items' total 1.252",
            id="kwd",
        ),
    ],
)
def test_a_value_mismatch_shows_both_amounts_with_the_currencys_decimals(
    shop: str, value: str, prices: list[tuple[int, str]], message: str
) -> None:
    result = validate(order(value, prices), shop)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {"code": VALUE_MISMATCH, "field": "order_value", "message": message}
    ]


# --- the message's own currency -----------------------------------------------------------------
@pytest.mark.parametrize(
    "spelled",
    [..., None, "USD", " USD ", "usd"],
    ids=["absent", "null", "the-code", "spaces-around", "lower-case"],
)
def test_an_order_in_the_shops_currency_is_one_order_however_it_says_so(spelled: Any) -> None:
    plain = validate(order("109.97", [(2, "19.99"), (1, "69.99")]))
    extra = {} if spelled is ... else {"currency": spelled}
    said = validate(order("109.97", [(2, "19.99"), (1, "69.99")], **extra))
    assert isinstance(plain, Order) and isinstance(said, Order)
    assert said == plain
    assert said.fingerprint == plain.fingerprint


@pytest.mark.parametrize(
    ("shop", "currency"),
    [("USD", "EUR"), ("USD", "JPY"), ("JPY", "USD"), ("KWD", "bhd "), ("USD", "XAU")],
)
def test_an_order_in_another_currency_is_currency_mismatch(shop: str, currency: str) -> None:
    result = validate(order("10", [(1, "10")], currency=currency), shop)
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [
        {
            "code": CURRENCY_MISMATCH,
            "field": "currency",
            "message": f"currency {currency!r} is not the shop's currency {shop}: amounts in "
            "two currencies are never added up",
        }
    ]


def test_a_foreign_orders_decimals_and_total_are_not_judged_in_the_shops_currency() -> None:
    # 10.505 has too many decimals for USD and does not match its items; in KWD it might be
    # right: only the currency is wrong, and only it is reported.
    body = order("10.505", [(1, "10.5")], currency="KWD")
    assert rejected(validate(body, "USD")) == [(CURRENCY_MISMATCH, "currency")]


@pytest.mark.parametrize(
    ("currency", "message"),
    [
        (5, "currency must be a string, got 5"),
        (["USD"], "currency must be a string, got an array"),
        ("", "currency '' is not an ISO 4217 currency code (e.g. USD)"),
        ("US Dollar", "currency 'US Dollar' is not an ISO 4217 currency code (e.g. USD)"),
        ("XYZ", "currency 'XYZ' is not an ISO 4217 currency code (e.g. USD)"),
        # Full-width letters look like the code but are other characters.
        (
            "\uff35\uff33\uff24",
            "currency '\uff35\uff33\uff24' is not an ISO 4217 currency code (e.g. USD)",
        ),
    ],
)
def test_a_currency_that_is_no_iso_code_is_invalid_field(currency: Any, message: str) -> None:
    result = validate(order("109.97", [(2, "19.99"), (1, "69.99")], currency=currency))
    assert isinstance(result, Rejection)
    assert result.as_dicts() == [{"code": INVALID_FIELD, "field": "currency", "message": message}]
    assert (result.order_id, result.user_id) == ("ORD1", "U1")  # still filed under its ids


# --- events -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shop", "amount", "minor"),
    [
        ("JPY", "500", 500),
        ("JPY", "5E+2", 500),
        ("KWD", "0.125", 125),
        ("KWD", "0.5", 500),
        ("USD", "19.99", 1999),
    ],
)
def test_a_refund_in_the_shops_currency_is_counted_in_its_minor_unit(
    shop: str, amount: str, minor: int
) -> None:
    event = validate(refund(amount), shop)
    assert isinstance(event, Event), event
    assert (event.amount_cents, event.currency) == (minor, shop)
    explicit = validate(refund(amount, currency=shop.lower()), shop)
    assert explicit == event and isinstance(explicit, Event)
    assert explicit.fingerprint == event.fingerprint


@pytest.mark.parametrize(
    ("shop", "amount"), [("JPY", "500.5"), ("KWD", "0.1255"), ("USD", "19.995")]
)
def test_a_refund_finer_than_the_minor_unit_is_too_many_decimals(shop: str, amount: str) -> None:
    assert rejected(validate(refund(amount), shop)) == [(TOO_MANY_DECIMALS, "amount")]


def test_an_event_in_another_currency_is_currency_mismatch() -> None:
    assert rejected(validate(refund("19.995", currency="EUR"))) == [(CURRENCY_MISMATCH, "currency")]
    assert rejected(validate(cancellation(currency="JPY"))) == [(CURRENCY_MISMATCH, "currency")]
    assert rejected(validate(cancellation(currency=7))) == [(INVALID_FIELD, "currency")]
    cancelled = validate(cancellation(currency="USD"))
    assert isinstance(cancelled, Event) and cancelled.currency == "USD"


def test_the_ledgers_reasons_write_amounts_in_the_events_currency() -> None:
    event = validate(refund("1.5"), "KWD")
    assert isinstance(event, Event)
    reason = refund_exceeds_order_reason(event, 1500, 250, 1250)
    assert reason.message == (
        "a refund of 1.500 would bring order 'ORD1''s refunded total to 1.750, above its value "
        "1.250 (1.000 is left to refund)"
    )


# --- fingerprints -------------------------------------------------------------------------------
CONTRACT_ORDER = json.dumps(valid_doc())
CONTRACT_REFUND = (
    '{"type": "order.refunded", "event_id": "EV-1", "order_id": "ORD1000", "amount": 19.99, '
    '"items": [{"product_id": "P001", "quantity": 1}], "occurred_at": "2025-08-10T09:30:00Z", '
    '"reason": "arrived damaged"}'
)


@pytest.mark.parametrize(
    ("body", "fingerprint"),
    [
        # Computed by the release before currencies: the marks and ledger rows it wrote hold them.
        pytest.param(CONTRACT_ORDER, "2:07a4472494c98138609ad55c789bc79f", id="order"),
        pytest.param(CONTRACT_REFUND, "e1:770afac9f5c9621cb89066a376f20a4c", id="refund"),
    ],
)
@pytest.mark.parametrize("currency", [..., "USD"], ids=["without-currency", "with-usd"])
def test_a_usd_message_keeps_the_fingerprint_it_had_before_currencies(
    body: str, fingerprint: str, currency: Any
) -> None:
    if currency is not ...:
        body = json.dumps(json.loads(body) | {"currency": currency})
    result = validate(body)
    assert isinstance(result, Order | Event)
    assert result.fingerprint == fingerprint


def test_the_currency_is_part_of_a_non_usd_orders_identity() -> None:
    in_yen = validate(order("1200", [(3, "400")]), "JPY")
    assert isinstance(in_yen, Order)
    in_cents = replace(in_yen, currency="USD")
    assert in_yen.fingerprint != in_cents.fingerprint
    event = validate(refund("500"), "JPY")
    assert isinstance(event, Event)
    assert event.fingerprint != replace(event, currency="USD").fingerprint


# --- which currency: the configured one -----------------------------------------------------------
@pytest.fixture
def restore_configuration() -> Iterator[None]:
    before = validation.CURRENCY
    yield
    validation.configure(before)


@pytest.mark.usefixtures("restore_configuration")
def test_the_validator_uses_the_configured_currency_unless_told_another() -> None:
    validation.configure("JPY")
    result = validate(order("1200", [(3, "400")]))
    assert isinstance(result, Order) and result.currency == "JPY"
    assert rejected(validate(order("12.50", [(1, "12.5")]))) == [(TOO_MANY_DECIMALS, "order_value")]
    result = validate(order("12.50", [(1, "12.5")]), "USD")
    assert isinstance(result, Order) and result.currency == "USD"


@pytest.mark.usefixtures("restore_configuration")
@pytest.mark.parametrize("code", ["XYZ", "XAU", "usd"])
def test_the_validator_refuses_a_currency_amounts_cannot_be_counted_in(code: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        validation.configure(code)
    assert validation.CURRENCY == "USD"
    # Told per call: the caller's mistake raises, rather than reject every message.
    with pytest.raises(UnknownCurrencyError):
        validate(order("10", [(1, "10")]), code)


@pytest.mark.django_db
def test_the_consumer_and_the_admin_validate_in_stats_currency(settings: Any) -> None:
    assert validation.CURRENCY == "USD"
    settings.STATS_CURRENCY = "JPY"
    assert validation.CURRENCY == "JPY"
    yen = order("1200", [(3, "400")])
    batch = validate_batch(
        [
            {"MessageId": "m1", "Body": yen},
            {"MessageId": "m2", "Body": order("12.50", [(1, "12.5")])},
        ],
        datetime(2025, 8, 9, tzinfo=UTC),
    )
    assert [(o.value_cents, o.currency) for _, o in batch.orders] == [(1200, "JPY")]
    assert [r.codes for _, r in batch.rejected] == [(TOO_MANY_DECIMALS,)]
    assert payload_errors(yen) == []
    assert payload_errors(order("1200", [(3, "400")], currency="USD")) == [
        "currency_mismatch (currency): currency 'USD' is not the shop's currency JPY: amounts "
        "in two currencies are never added up"
    ]
    settings.STATS_CURRENCY = "USD"
    assert validation.CURRENCY == "USD"
