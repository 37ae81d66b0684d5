"""consume_orders: a Redis that does not say whether it may evict keys, its options' defaults,
the garbage collector's start."""

from __future__ import annotations

import gc
import logging

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_a_redis_that_hides_its_policy_gets_one_warning(
    fake_redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fakeredis has no INFO, like a managed service that hides it: consume_orders goes on
    with a single WARNING (and then, here, stops at the missing SQS queue)."""
    from orders.management.commands import consume_orders

    monkeypatch.setattr(
        consume_orders.Command, "_ensure_queue", lambda self, consumer, options: consumer.stop.set()
    )
    with caplog.at_level(logging.WARNING, logger="orders.consumer"):
        call_command("consume_orders", "--once")
    warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1
    assert "does not report its maxmemory-policy" in warnings[0]


def test_the_pollers_default_is_the_consumers_default_pollers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """consume_orders without --threads runs ``orders.consumer.DEFAULT_POLLERS`` pollers, the
    one value the benchmarks read too."""
    from orders import consumer
    from orders.management.commands import consume_orders

    monkeypatch.setattr(consumer, "DEFAULT_POLLERS", 3)
    parser = consume_orders.Command().create_parser("manage.py", "consume_orders")
    assert parser.parse_args([]).threads == 3
    assert parser.parse_args(["--threads", "2"]).threads == 2


def test_consume_orders_runs_two_pollers_unless_told_otherwise() -> None:
    """Two pollers by default: one batch's ledger commit and Redis write overlap the next
    batch's validation (docs/benchmarks.md); ``--threads 1`` still gives one."""
    from orders.management.commands import consume_orders

    parser = consume_orders.Command().create_parser("manage.py", "consume_orders")
    assert parser.parse_args([]).threads == 2
    assert parser.parse_args(["--threads", "1"]).threads == 1


def test_the_loop_starts_with_the_start_up_objects_frozen(
    fake_redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's and boto3's objects are frozen before the pollers start, so the collector's
    full passes over them (~50 ms each) never pause an order on its way to the API."""
    from orders.consumer import Consumer
    from orders.management.commands import consume_orders
    from orders.sqs import OrderQueue

    frozen: list[int] = []
    monkeypatch.setattr(consume_orders.Command, "_ensure_queue", lambda self, consumer, o: None)
    monkeypatch.setattr(OrderQueue, "url", "http://sqs.invalid/orders")
    monkeypatch.setattr(
        Consumer, "run", lambda self, threads=1: frozen.append(gc.get_freeze_count())
    )
    gc.unfreeze()
    try:
        call_command("consume_orders")
    finally:
        gc.unfreeze()
    assert len(frozen) == 1
    assert frozen[0] > 10_000
