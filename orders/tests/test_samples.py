"""The sample generator: reproducible, shaped like the order contract, agreeing with the
validator."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest

from orders.event_rules import Effect, Line, OrderState
from orders.samples import (
    EVENT_KINDS,
    INVALID_CYCLE,
    POISON_EXPECTED_CODES,
    SampleGenerator,
    SampleMessage,
    expected_totals,
    poison_bodies,
)
from orders.tests.conftest import SENT_ATTRIBUTES
from orders.validation import (
    DUPLICATE_EVENT_ID,
    ORDER_VALIDATOR_CODES,
    REFUND_EXCEEDS_ITEMS,
    REFUND_EXCEEDS_ORDER,
    Event,
    Order,
    Rejection,
    validate_message,
)

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


# --- refunds and cancellations ----------------------------------------------------------------
EVENT_RATIOS = {
    "refund_ratio": 0.05,
    "cancel_ratio": 0.02,
    "early_event_ratio": 0.1,
    "event_duplicate_ratio": 0.1,
    "event_conflict_ratio": 0.05,
    "over_refund_ratio": 0.01,
}


def event_mix(seed: int = 11, count: int = 20_000, **ratios: float) -> list[SampleMessage]:
    chosen: dict[str, Any] = EVENT_RATIOS | ratios
    return SampleGenerator(
        seed, users=200, invalid_ratio=0.05, duplicate_ratio=0.02, today=TODAY, **chosen
    ).messages(count)


def order_state(message: SampleMessage) -> OrderState:
    order = validate_message(message.body, SENT_ATTRIBUTES)
    assert isinstance(order, Order)
    lines = tuple(Line(i.product_id, i.quantity, i.unit_price) for i in order.items)
    return OrderState(order.order_id, order.value_cents, order.currency, lines)


def test_same_seed_same_events_and_the_same_orders_as_without_events() -> None:
    a = event_mix(seed=4, count=3000)
    assert a == event_mix(seed=4, count=3000)
    assert a != event_mix(seed=5, count=3000)
    without = SampleGenerator(
        4, users=200, invalid_ratio=0.05, duplicate_ratio=0.02, today=TODAY
    ).messages(3000)
    assert sorted(m.body for m in a if not m.is_event) == sorted(m.body for m in without)
    assert {m.kind for m in a} == {"valid", "invalid", "duplicate", *EVENT_KINDS}


def test_event_rates_are_as_asked() -> None:
    messages = event_mix()
    valid = [m for m in messages if m.kind == "valid"]
    refunded = {m.order_id for m in messages if m.kind == "refund"}
    cancelled = {m.order_id for m in messages if m.kind == "cancel"}
    over = {m.order_id for m in messages if m.kind == "over_refund"}
    accepted = [m for m in messages if m.kind in ("refund", "cancel")]
    assert len(refunded) / len(valid) == pytest.approx(0.05, abs=0.006)
    assert len(cancelled) / len(valid) == pytest.approx(0.02, abs=0.004)
    assert not refunded & cancelled  # never both: no arrival order changes what is refunded
    assert len(over) / len(valid) == pytest.approx(0.01, abs=0.003)
    assert not over & cancelled
    events = [m for m in messages if m.kind in ("refund", "cancel", "over_refund")]
    early = sum(m.before_order for m in events) / len(events)
    assert early == pytest.approx(0.1, abs=0.03)
    redelivered = sum(m.kind == "event_duplicate" for m in messages) / len(accepted)
    assert redelivered == pytest.approx(0.1, abs=0.03)
    conflicting = sum(m.kind == "event_conflict" for m in messages) / len(accepted)
    assert conflicting == pytest.approx(0.9 * 0.05, abs=0.02)
    kinds = Counter(m.kind for m in messages)
    assert kinds["valid"] + kinds["invalid"] + kinds["duplicate"] == 20_000  # events on top


def test_no_events_unless_asked_and_no_over_refunds_unless_asked() -> None:
    plain = SampleGenerator(2, today=TODAY).messages(2000)
    assert not [m for m in plain if m.is_event]
    messages = event_mix(over_refund_ratio=0.0, count=5000)
    assert "over_refund" not in {m.kind for m in messages}
    value = {m.order_id: m.value_cents or 0 for m in messages if m.kind == "valid"}
    refunded: Counter[str] = Counter()
    for m in messages:
        if m.kind in ("refund", "cancel"):
            refunded[m.order_id or ""] += m.refund_cents or 0
    assert refunded and all(cents <= value[order] for order, cents in refunded.items())


@pytest.mark.parametrize("seed", [1, 2])
def test_every_event_is_valid_per_the_validator_and_says_what_it_is(seed: int) -> None:
    messages = event_mix(seed=seed, count=6000)
    originals = {m.event_id: m for m in messages if m.kind in ("refund", "cancel")}
    for message in (m for m in messages if m.is_event):
        event = validate_message(message.body, SENT_ATTRIBUTES)
        assert isinstance(event, Event), (message, event)
        assert (event.event_id, event.order_id) == (message.event_id, message.order_id)
        assert event.stated_at is not None and event.occurred_at.date() == message.day
        first = originals.get(message.event_id, message)
        assert event.kind == ("cancelled" if first.kind == "cancel" else "refunded")
        if message.kind == "refund" and event.amount_cents is not None:
            assert event.amount_cents == message.refund_cents
        if message.kind == "event_duplicate":
            assert message.body == originals[message.event_id].body
        if message.kind == "event_conflict":
            original = validate_message(originals[message.event_id].body, SENT_ATTRIBUTES)
            assert isinstance(original, Event)
            assert event.fingerprint != original.fingerprint
            assert message.expected_code == DUPLICATE_EVENT_ID
        if message.kind == "over_refund":
            assert message.expected_code in (REFUND_EXCEEDS_ORDER, REFUND_EXCEEDS_ITEMS)


@pytest.mark.parametrize("arrival", ["as sent", "reversed", "shuffled"])
def test_the_ledger_rules_accept_every_event_and_reject_every_over_refund_in_any_order(
    arrival: str,
) -> None:
    """What each event does does not depend on the order events arrive in (SQS keeps none):
    every refund and cancellation takes exactly its ``refund_cents``, every over-refund gets
    its code, checked with the ledger's own rules."""
    messages = event_mix(seed=3, count=8000)
    states = {m.order_id: order_state(m) for m in messages if m.kind == "valid"}
    events = [m for m in messages if m.kind in ("refund", "cancel", "over_refund")]
    if arrival == "reversed":
        events.reverse()
    elif arrival == "shuffled":
        random.Random(9).shuffle(events)
    for message in events:
        event = validate_message(message.body, SENT_ATTRIBUTES)
        assert isinstance(event, Event)
        state = states[message.order_id]
        effect = state.check(event)
        if message.kind == "over_refund":
            assert isinstance(effect, list)
            assert {r.code for r in effect} == {message.expected_code}
            continue
        assert isinstance(effect, Effect), (message, effect)
        assert effect.amount_cents == message.refund_cents
        state.apply(event.kind, effect)


def test_events_sent_before_their_order_come_before_it_and_the_others_after() -> None:
    messages = event_mix(count=6000)
    position = {m.order_id: i for i, m in enumerate(messages) if m.kind == "valid"}
    events = [(i, m) for i, m in enumerate(messages) if m.kind in ("refund", "cancel")]
    early = [(i, m) for i, m in events if m.before_order]
    assert early and all(i < position[m.order_id] for i, m in early)
    assert all(i > position[m.order_id] for i, m in events if not m.before_order)


def test_expected_totals_count_each_accepted_event_once() -> None:
    messages = event_mix(count=6000)
    totals = expected_totals(messages)
    accepted = [m for m in messages if m.kind in ("refund", "cancel")]
    assert totals.events_applied == len(accepted)
    assert totals.refunded_cents == sum(m.refund_cents or 0 for m in accepted) > 0
    assert totals.cancelled_orders == sum(m.kind == "cancel" for m in messages) > 0
    assert sum(u.refunded_cents for u in totals.users.values()) == totals.refunded_cents
    assert sum(u.cancelled_orders for u in totals.users.values()) == totals.cancelled_orders
    assert sum(d.refunded_cents for d in totals.days.values()) == totals.refunded_cents
    assert totals.net_revenue_cents == totals.total_revenue_cents - totals.refunded_cents
    rejected = ("invalid", "conflict", "event_conflict", "over_refund")
    assert totals.rejected == sum(m.kind in rejected for m in messages)
    # A refund counts on the day it occurred, not on its order's day.
    some = next(m for m in accepted if m.day != _order_day(messages, m.order_id))
    assert some.day is not None
    assert totals.days[some.day].refunded_cents >= (some.refund_cents or 0)


def _order_day(messages: list[SampleMessage], order_id: str | None) -> date | None:
    return next(m.day for m in messages if m.kind == "valid" and m.order_id == order_id)


@pytest.mark.parametrize(
    "ratios", [{"refund_ratio": 0.7, "cancel_ratio": 0.4}, {"early_event_ratio": 1.5}]
)
def test_event_ratios_are_checked(ratios: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SampleGenerator(1, **ratios)
