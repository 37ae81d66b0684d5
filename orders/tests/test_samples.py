"""The sample generator: reproducible, shaped like the order contract, agreeing with the
validator."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta

import pytest

from orders.samples import (
    INVALID_CYCLE,
    POISON_EXPECTED_CODES,
    SampleGenerator,
    expected_totals,
    poison_bodies,
)
from orders.tests.conftest import SENT_ATTRIBUTES
from orders.validation import ORDER_VALIDATOR_CODES, Order, Rejection, validate_message

TODAY = date(2025, 8, 9)


def test_same_seed_same_messages() -> None:
    a = SampleGenerator(7, today=TODAY, duplicate_ratio=0.1, conflict_ratio=0.1).messages(300)
    b = SampleGenerator(7, today=TODAY, duplicate_ratio=0.1, conflict_ratio=0.1).messages(300)
    c = SampleGenerator(8, today=TODAY, duplicate_ratio=0.1, conflict_ratio=0.1).messages(300)
    assert a == b
    assert a != c


def test_valid_orders_look_like_the_contract() -> None:
    messages = SampleGenerator(1, users=50, days=10, invalid_ratio=0, today=TODAY).messages(200)
    assert {m.kind for m in messages} == {"valid"}
    for message in messages:
        doc = json.loads(message.body)
        assert set(doc) >= {"order_id", "user_id", "order_timestamp", "order_value", "items"}
        assert doc["user_id"].startswith("U") and len(doc["user_id"]) == 5
        assert 1 <= int(doc["user_id"][1:]) <= 50
        assert 1 <= len(doc["items"]) <= 5
        assert all(i["product_id"].startswith("P") for i in doc["items"])
        assert message.day is not None
        assert TODAY - timedelta(days=9) <= message.day <= TODAY
    assert len({m.order_id for m in messages}) == 200


def test_invalid_messages_cycle_through_every_validator_code() -> None:
    messages = SampleGenerator(3, invalid_ratio=1.0, today=TODAY).messages(len(INVALID_CYCLE) * 4)
    assert [m.expected_code for m in messages[: len(INVALID_CYCLE)]] == list(INVALID_CYCLE)
    assert set(INVALID_CYCLE) == set(ORDER_VALIDATOR_CODES)
    assert Counter(m.expected_code for m in messages) == dict.fromkeys(INVALID_CYCLE, 4)


@pytest.mark.parametrize("seed", [1, 2])
def test_validator_agrees_with_every_declared_kind(seed: int) -> None:
    generator = SampleGenerator(
        seed,
        users=40,
        invalid_ratio=0.3,
        duplicate_ratio=0.1,
        conflict_ratio=0.1,
        today=TODAY,
    )
    messages = generator.messages(2500)
    assert {m.kind for m in messages} == {"valid", "invalid", "duplicate", "conflict"}
    originals = {m.order_id: m for m in messages if m.kind == "valid"}
    for message in messages:
        result = validate_message(message.body, SENT_ATTRIBUTES)
        if message.kind == "invalid":
            assert isinstance(result, Rejection), message
            assert result.codes == (message.expected_code,), (message, result)
            assert result.order_id == message.order_id
            continue
        assert isinstance(result, Order), (message, result)
        assert result.value_cents == message.value_cents
        assert (result.order_id, result.user_id, result.day) == (
            message.order_id,
            message.user_id,
            message.day,
        )
        original = originals[message.order_id]
        if message.kind == "duplicate":
            assert message.body == original.body
        if message.kind == "conflict":
            assert message.expected_code == "duplicate_order_id"
            assert message.value_cents != original.value_cents
            first = validate_message(original.body, SENT_ATTRIBUTES)
            assert isinstance(first, Order)
            assert result.fingerprint != first.fingerprint


def test_expected_totals_counts_each_valid_order_once() -> None:
    messages = SampleGenerator(
        5, users=10, days=5, invalid_ratio=0.2, duplicate_ratio=0.2, conflict_ratio=0.1, today=TODAY
    ).messages(1000)
    totals = expected_totals(messages)
    valid = [m for m in messages if m.kind == "valid"]
    assert totals.total_orders == len(valid) == len({m.order_id for m in valid})
    assert totals.total_revenue_cents == sum(m.value_cents or 0 for m in valid)
    assert sum(u.order_count for u in totals.users.values()) == totals.total_orders
    assert sum(u.total_spend_cents for u in totals.users.values()) == totals.total_revenue_cents
    assert sum(d.order_count for d in totals.days.values()) == totals.total_orders
    assert sum(d.revenue_cents for d in totals.days.values()) == totals.total_revenue_cents
    assert totals.rejected == sum(1 for m in messages if m.kind in ("invalid", "conflict"))
    assert set(totals.days) <= {TODAY - timedelta(days=n) for n in range(5)}


def test_ratios_are_checked() -> None:
    with pytest.raises(ValueError):
        SampleGenerator(1, invalid_ratio=0.8, duplicate_ratio=0.3)


@pytest.mark.parametrize("name", sorted(POISON_EXPECTED_CODES))
def test_poison_bodies_are_rejected_with_their_code(name: str) -> None:
    body = poison_bodies()[name]
    assert len(body.encode("utf-8")) <= 256 * 1024  # sendable through SQS
    result = validate_message(body, SENT_ATTRIBUTES)
    assert isinstance(result, Rejection)
    assert result.codes == (POISON_EXPECTED_CODES[name],)


def test_poison_bodies_cover_the_brief() -> None:
    bodies = poison_bodies()
    assert set(bodies) == set(POISON_EXPECTED_CODES)
    assert "\\ud800" in bodies["lone_surrogate_ids"]
    assert bodies["deep_nesting"].startswith("[" * 100_000)
    assert len(bodies["large_250k"].encode()) >= 250 * 1024 - 300
