"""``populate_sqs`` against a moto SQS server: what it sends is the seed's mix, refunds and
cancellations included, and its options are checked."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from orders.samples import SampleGenerator
from orders.sqs import OrderQueue


def received_bodies(queue: OrderQueue) -> Counter[str]:
    bodies: Counter[str] = Counter()
    while messages := queue.receive(wait_time=0):
        bodies.update(m["Body"] for m in messages)
        queue.delete([m["ReceiptHandle"] for m in messages])
    return bodies


def test_sends_the_seeds_orders_refunds_and_cancellations(sqs_queue: OrderQueue) -> None:
    out = StringIO()
    ratios = ["--refund-ratio", "0.2", "--cancel-ratio", "0.1", "--early-event-ratio", "0.2",
              "--event-duplicate-ratio", "0.2", "--over-refund-ratio", "0.05"]  # fmt: skip
    call_command("populate_sqs", "--count", "120", "--seed", "5", "--no-progress", *ratios,
                 stdout=out)  # fmt: skip

    expected = SampleGenerator(
        5, refund_ratio=0.2, cancel_ratio=0.1, early_event_ratio=0.2, event_duplicate_ratio=0.2,
        over_refund_ratio=0.05, today=datetime.now(UTC).date(),
    ).messages(120)  # fmt: skip
    assert received_bodies(sqs_queue) == Counter(m.body for m in expected)
    kinds = Counter(m.kind for m in expected)
    assert kinds["refund"] and kinds["cancel"] and kinds["event_duplicate"]
    assert kinds["over_refund"]
    early = sum(m.before_order for m in expected)
    summary = out.getvalue()
    assert f"sent {len(expected)} messages to {sqs_queue.name} (seed 5)" in summary
    assert (
        f"refunds={kinds['refund']} cancellations={kinds['cancel']} (before their order={early}) "
        f"redelivered={kinds['event_duplicate']} event_conflicts=0 "
        f"over_refunds={kinds['over_refund']}"
    ) in summary


def test_by_default_refunds_and_cancels_some_orders_and_never_over_refunds(
    sqs_queue: OrderQueue,
) -> None:
    out = StringIO()
    call_command("populate_sqs", "--count", "150", "--seed", "8", "--no-progress", stdout=out)

    expected = SampleGenerator(
        8, refund_ratio=0.05, cancel_ratio=0.02, early_event_ratio=0.05,
        event_duplicate_ratio=0.02, today=datetime.now(UTC).date(),
    ).messages(150)  # fmt: skip
    assert received_bodies(sqs_queue) == Counter(m.body for m in expected)
    kinds = Counter(m.kind for m in expected)
    assert kinds["refund"] and kinds["cancel"]
    assert kinds["over_refund"] == kinds["event_conflict"] == 0
    assert "over_refunds=0" in out.getvalue()


@pytest.mark.parametrize(
    "options",
    [
        ["--refund-ratio", "0.6", "--cancel-ratio", "0.5"],
        ["--invalid-ratio", "0.6", "--duplicate-ratio", "0.5"],
    ],
)
def test_ratios_that_add_up_above_one_are_refused(options: list[str]) -> None:
    with pytest.raises(CommandError, match="add up to at most 1"):
        call_command("populate_sqs", "--count", "1", *options)


def test_a_ratio_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(CommandError, match="--refund-ratio"):
        call_command("populate_sqs", "--count", "1", "--refund-ratio", "1.5")
