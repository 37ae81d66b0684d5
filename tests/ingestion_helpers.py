"""Test helpers: orders and order bodies, consumer subprocesses, waiting, the oracle check."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.money import currency
from orders.ledger import RecordedEvent
from orders.sqs import OrderQueue
from orders.validation import Item, Order
from stats.store import AggregateStore

if TYPE_CHECKING:
    from orders.samples import SampleMessage

BASE_DIR = Path(__file__).resolve().parent.parent


def make_order(order_id: str, user_id: str, cents: int, when: datetime | None = None) -> Order:
    """A validated order of one item, for writing through the store directly."""
    when = when or datetime(2025, 8, 9, 10, 15, tzinfo=UTC)
    return Order(
        order_id,
        user_id,
        cents,
        (Item("P001", 1, currency("USD").from_minor_units(cents)),),
        when,
        when,
    )


def make_event(
    event_id: str,
    order: Order,
    cents: int,
    when: datetime | None = None,
    kind: str = "refunded",
    fingerprint: str | None = None,
    first_recorded_at: datetime | None = None,
    counted: bool = True,
) -> RecordedEvent:
    """A refund (or with ``kind="cancelled"`` a cancellation) of ``order`` as the ledger hands
    it to the store, for writing through the store directly."""
    when = when or datetime(2025, 8, 12, 9, 0, tzinfo=UTC)
    return RecordedEvent(
        event_id=event_id,
        order_id=order.order_id,
        user_id=order.user_id,
        kind="cancelled" if kind == "cancelled" else "refunded",
        amount_cents=cents,
        items=(),
        occurred_at=when,
        fingerprint=fingerprint or f"e1:{kind}:{event_id}:{cents}",
        first_recorded_at=first_recorded_at or datetime.now(UTC),
        message_id=f"m-{event_id}" if counted else "",
        counted=counted,
    )


def order_body(order_id: str, user_id: str = "U1", price: str = "19.99", quantity: int = 1,
               timestamp: str = "2025-08-09T10:15:00Z") -> str:  # fmt: skip
    """A valid order as the order contract's JSON text, its value computed from the item."""
    from decimal import Decimal

    value = Decimal(price) * quantity
    return (
        f'{{"order_id": {json.dumps(order_id)}, "user_id": {json.dumps(user_id)}, '
        f'"order_timestamp": "{timestamp}", "order_value": {value}, '
        f'"items": [{{"product_id": "P001", "quantity": {quantity}, "price_per_unit": {price}}}]}}'
    )


def prefix_keys(client: Any, prefix: str) -> set[bytes]:
    """Every key under ``prefix``: ``<prefix>:…`` and the shards' ``{<prefix>:<N>:<s>}:…``.
    SCAN visits every primary of a cluster."""
    return {
        key
        for pattern in (f"{prefix}:*", f"{{{prefix}:*")
        for key in client.scan_iter(match=pattern, count=1000)
    }


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# Every consumer child a test starts; ``kill_leftover_consumers`` ends those a failing test left.
STARTED: list[subprocess.Popen[bytes]] = []


def kill_leftover_consumers() -> None:
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def start_consumer(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    process = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "consume_orders",
         "--wait-time", "1", "--log-interval", "1", *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=BASE_DIR,
    )  # fmt: skip
    STARTED.append(process)
    return process


def stop_consumer(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def queue_total(queue: OrderQueue) -> int:
    depth = queue.depth()
    return depth.visible + depth.in_flight + depth.delayed


class Feeder(threading.Thread):
    """Sends bodies in tens while keeping the queue's backlog short (moto slows as it grows)."""

    def __init__(self, queue: OrderQueue, bodies: Sequence[str], max_backlog: int = 100) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.bodies = list(bodies)
        self.max_backlog = max_backlog
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.bodies), 10):
                while self.queue.depth().visible > self.max_backlog:
                    time.sleep(0.05)
                self.sent += self.queue.send_bodies(self.bodies[start : start + 10])
        except BaseException as exc:  # reported by the test
            self.error = exc


def mismatches(
    store: AggregateStore, messages: Iterable[SampleMessage], days: tuple[date, date]
) -> list[str]:
    """Every difference between the store and an oracle computed from the sent messages."""
    from orders.samples import expected_totals

    expected = expected_totals(list(messages))
    problems: list[str] = []
    got = store.global_stats()
    want = (expected.total_orders, expected.total_revenue_cents, len(expected.users))
    if (got.total_orders, got.total_revenue_cents, got.unique_users) != want:
        problems.append(f"global: got {got}, expected {want}")
    for user_id, totals in expected.users.items():
        user = store.user_stats(user_id)
        want_user = (totals.order_count, totals.total_spend_cents)
        if user is None or (user.order_count, user.total_spend_cents) != want_user:
            problems.append(f"user {user_id}: got {user}, expected {want_user}")
    for day in store.by_date(*days):
        want_day = expected.days.get(day.day)
        want_pair = (want_day.order_count, want_day.revenue_cents) if want_day else (0, 0)
        if (day.total_orders, day.total_revenue_cents) != want_pair:
            problems.append(f"day {day.day}: got {day}, expected {want_pair}")
    by_spend = sorted(expected.users.items(), key=lambda kv: (-kv[1].total_spend_cents, kv[0]))
    want_top = [(u, t.total_spend_cents) for u, t in by_spend[:10]]
    if [(r.user_id, r.value) for r in store.top_spenders(10)] != want_top:
        problems.append(f"top spenders differ: expected {want_top}")
    return problems
