"""Where a batch is committed: validate, record in the database, apply to Redis.

1. Validate every message (``orders.validation``, pure).
2. One database transaction: the valid orders into the ledger (``orders.ledger``; a
   conflicting ``order_id`` becomes a ``duplicate_order_id`` reject) and the rejects into
   ``RejectedOrder``.
3. One Redis script call per shard touched (``stats.store``): each order's aggregates and
   idempotency mark, each reject counted once, the batch's counters once per receive (the
   batch's token, ``batch_token``).

Only then may the consumer delete the messages. A failure at any step raises and leaves the
batch whole for the consumer to retry: step 2 again finds the rows it wrote (same
fingerprints), step 3 again finds the marks of what it applied, so a retry, a redelivery or a
crash anywhere in between counts every order once (the README's crash table).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import close_old_connections, connection, transaction

from orders import ledger
from orders.models import RejectedOrder, RejectionRecord
from orders.sqs import dating_attributes
from orders.validation import (
    TYPE_PLACED,
    Order,
    Rejection,
    conflict_rejection,
    validate_message,
)
from stats.store import AggregateStore, ApplyStatus, PendingOrder

logger = logging.getLogger("orders.consumer")

CONNECTION_CHECK_INTERVAL = 1.0  # seconds between checks of the database connection

# The message types a batch records. Refunds and cancellations are valid messages the ledger
# does not record yet: they become ``unknown_type`` rejects, kept whole for staff to resubmit,
# rather than orders rejected for every field they lack. The admin's resubmit form asks the
# same question.
RECORDED_TYPES: tuple[str, ...] = (TYPE_PLACED,)


@dataclass(frozen=True)
class BatchResult:
    received: int
    applied: int
    duplicates: int
    rejected: int


def validate_batch(
    messages: Sequence[dict[str, Any]], received_at: datetime
) -> tuple[list[tuple[dict[str, Any], Order]], list[tuple[dict[str, Any], Rejection]]]:
    """Split received messages into valid orders and rejections, each beside its message
    (a message of a type not in ``RECORDED_TYPES`` is an ``unknown_type`` rejection)."""
    orders: list[tuple[dict[str, Any], Order]] = []
    rejected: list[tuple[dict[str, Any], Rejection]] = []
    for message in messages:
        outcome = validate_message(
            message.get("Body", ""),
            dating_attributes(message),
            received_at=received_at,
            types=RECORDED_TYPES,
        )
        if isinstance(outcome, Order):
            orders.append((message, outcome))
        else:
            assert isinstance(outcome, Rejection)  # RECORDED_TYPES holds no event type
            rejected.append((message, outcome))
    return orders, rejected


def batch_token(messages: Sequence[dict[str, Any]]) -> str:
    """This receive of these messages: the same for every retry of the batch in hand, another
    for a redelivery (SQS gives each receive new receipt handles). The store keeps each
    shard's reply under it, so a batch that one shard refused and that is retried counts
    the others' orders and messages once."""
    handles = "\n".join(f"{m.get('MessageId', '')} {m.get('ReceiptHandle', '')}" for m in messages)
    return hashlib.sha256(handles.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class BatchCommitter:
    """Commits batches of one queue into the ledger, ``RejectedOrder`` and one store."""

    def __init__(
        self,
        store: AggregateStore,
        queue_name: str,
        record_rejections: Callable[[Sequence[RejectionRecord]], object] | None = None,
    ) -> None:
        self.store = store
        self.queue_name = queue_name
        self.record_rejections = record_rejections or RejectedOrder.objects.record_many
        self.clock: Callable[[], float] = time.monotonic
        # When this thread's connection was last checked (Django's connections are per thread).
        self._local = threading.local()

    def commit(self, messages: Sequence[dict[str, Any]], received_at: datetime) -> BatchResult:
        """Steps 1-3 above; raises on a dependency failure with nothing deleted."""
        orders, rejected = validate_batch(messages, received_at)
        recorded = self._record(orders, rejected, received_at)
        outcome = self.store.apply_batch(
            [PendingOrder(r.order, r.first_recorded_at) for r in recorded],
            {message["MessageId"]: rejection.codes for message, rejection in rejected},
            received=len(messages),
            batch=batch_token(messages),
        )
        applied = duplicates = 0
        for entry, status in zip(recorded, outcome.statuses, strict=True):
            if status is ApplyStatus.APPLIED:
                applied += 1
                continue
            duplicates += 1
            if status is ApplyStatus.CONFLICT:
                # Possible only for an order applied before the ledger existed with another
                # payload: Redis keeps that one; reconcile_stats shows the difference.
                logger.warning(
                    "order %r: its Redis mark holds another payload (applied before the "
                    "ledger); the ledger keeps this one, run reconcile_stats",
                    entry.order.order_id,
                )
            elif status is ApplyStatus.BEFORE_WINDOW:
                logger.warning(
                    "order %r was first recorded at %s, before the idempotency marks' window; "
                    "not applied again (reconcile_stats tells whether Redis counts it)",
                    entry.order.order_id,
                    entry.first_recorded_at.isoformat(),
                )
        return BatchResult(len(messages), applied, duplicates, len(rejected))

    def _record(
        self,
        orders: list[tuple[dict[str, Any], Order]],
        rejected: list[tuple[dict[str, Any], Rejection]],
        received_at: datetime,
    ) -> list[ledger.Recorded]:
        """Step 2: ledger rows and rejects in one transaction; adds conflicts to ``rejected``."""
        # Long-lived threads see no request cycle: drop a connection that is past
        # CONN_MAX_AGE or fails its health check instead of failing the batch on it (never
        # inside a caller's transaction, which closing would break). The health check is a
        # round trip of its own, so at most once a second: a connection that breaks in
        # between fails a batch, which stays in hand and is retried on a new one.
        now = self.clock()
        checked_at = getattr(self._local, "checked_at", None)
        stale = checked_at is None or now - checked_at >= CONNECTION_CHECK_INTERVAL
        if stale and not connection.in_atomic_block:
            close_old_connections()
            self._local.checked_at = now
        with transaction.atomic():
            outcome = ledger.record_orders(orders, received_at)
            rejected += [
                (message, conflict_rejection(order)) for message, order in outcome.conflicts
            ]
            if rejected:
                self.record_rejections(
                    [
                        RejectionRecord(
                            message_id=message["MessageId"],
                            body=message.get("Body", ""),
                            rejection=rejection,
                            queue_name=self.queue_name,
                            receive_count=int(
                                message.get("Attributes", {}).get("ApproximateReceiveCount", 1)
                            ),
                            received_at=received_at,
                        )
                        for message, rejection in rejected
                    ]
                )
        return outcome.recorded
