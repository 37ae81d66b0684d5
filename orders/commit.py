"""Where a batch is committed: validate, record in the database, apply to Redis.

1. Validate every message (``orders.validation``, pure): an order, an event (a refund or a
   cancellation) or a reject.
2. One database transaction: the valid orders and events into the ledger (``orders.ledger``;
   a conflicting ``order_id`` or ``event_id`` becomes a ``duplicate_order_id`` or
   ``duplicate_event_id`` reject, an event its order's state refuses a reject with that
   rule's code, an event whose order is not recorded yet waits for it) and the rejects into
   ``RejectedOrder``.
3. One Redis script call per shard touched (``stats.store``): each order's aggregates and
   idempotency mark, each event's refund (and cancellation) and its own mark in the call of
   its order's user's shard, after the orders (with the event's order, recorded earlier, in
   case Redis lacks it), each reject counted once, the batch's counters once per receive
   (the batch's token, ``batch_token``).

Only then may the consumer delete the messages. A failure at any step raises and leaves the
batch whole for the consumer to retry: step 2 again finds the rows it wrote (same
fingerprints, and hands the events again), step 3 again finds the marks of what it applied, so
a retry, a redelivery or a crash anywhere in between counts every order and every event once
(the crash table of docs/design.md).
"""

from __future__ import annotations

import contextlib
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
    DUPLICATE_EVENT_ID,
    DUPLICATE_ORDER_ID,
    LEDGER_CODES,
    MESSAGE_TYPES,
    Event,
    Order,
    Rejection,
    conflict_rejection,
    event_conflict_rejection,
    validate_message,
)
from stats.store import AggregateStore, ApplyStatus, PendingEvent, PendingOrder

logger = logging.getLogger("orders.consumer")

CONNECTION_CHECK_INTERVAL = 1.0  # seconds between checks of the database connection

# SQLite lets one writer in at a time and makes the others retry after sleeps of 1, 2, 5 …
# up to 100 ms (its busy handler): an order behind such a sleep reached the API 380 ms late
# with two pollers. The pollers of a process take their turns on this lock instead, each
# starting the moment the last one commits (other processes still meet the busy handler).
SQLITE_WRITER = threading.Lock()

# The message types a batch records: orders, refunds and cancellations (every type there is).
# The admin's resubmit form accepts the same.
RECORDED_TYPES: tuple[str, ...] = MESSAGE_TYPES

# The codes an event gets from its order's state (judged once the order is recorded).
ORDER_STATE_CODES = frozenset(LEDGER_CODES) - {DUPLICATE_ORDER_ID, DUPLICATE_EVENT_ID}


@dataclass(frozen=True)
class BatchResult:
    """What a batch did: its messages, the orders applied and found applied already, the
    rejects; the events (refunds, cancellations) applied and found applied already (waiting
    ones attached now included), and the batch's event messages parked for their order."""

    received: int
    applied: int
    duplicates: int
    rejected: int
    events_applied: int = 0
    events_duplicates: int = 0
    events_waiting: int = 0


@dataclass(frozen=True)
class ValidatedBatch:
    """Received messages split by what they are, each beside its message."""

    orders: list[tuple[dict[str, Any], Order]]
    events: list[tuple[dict[str, Any], Event]]
    rejected: list[tuple[dict[str, Any], Rejection]]


def validate_batch(messages: Sequence[dict[str, Any]], received_at: datetime) -> ValidatedBatch:
    """Split received messages into valid orders, valid events and rejections (a message of
    a type not in ``RECORDED_TYPES`` is an ``unknown_type`` rejection)."""
    batch = ValidatedBatch([], [], [])
    for message in messages:
        outcome = validate_message(
            message.get("Body", ""),
            dating_attributes(message),
            received_at=received_at,
            types=RECORDED_TYPES,
        )
        if isinstance(outcome, Order):
            batch.orders.append((message, outcome))
        elif isinstance(outcome, Event):
            batch.events.append((message, outcome))
        else:
            batch.rejected.append((message, outcome))
    return batch


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
        batch = validate_batch(messages, received_at)
        recorded, rejects, rejected = self._record(batch, received_at)
        outcome = self.store.apply_batch(
            [
                *(PendingOrder(r.order, r.first_recorded_at) for r in recorded.recorded),
                *(
                    PendingOrder(r.order, r.first_recorded_at, counted=False)
                    for r in recorded.context_orders
                ),
            ],
            {
                **self._earlier_rejects(recorded, received_at),
                **{record.message_id: record.rejection.codes for record in rejects},
            },
            received=len(messages),
            batch=batch_token(messages),
            events=[PendingEvent(e, e.first_recorded_at, e.counted) for e in recorded.events],
            events_received=sum(e.counted for e in recorded.events) + recorded.waiting,
        )
        applied = duplicates = 0
        # The batch's own orders come first; the context orders' statuses count nowhere.
        own = outcome.statuses[: len(recorded.recorded)]
        for entry, status in zip(recorded.recorded, own, strict=True):
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
        events_applied = events_duplicates = 0
        for event, status in zip(recorded.events, outcome.event_statuses, strict=True):
            if status is ApplyStatus.APPLIED:
                events_applied += 1
                continue
            events_duplicates += 1
            if status is ApplyStatus.CONFLICT:
                # The ledger knows each event_id forever: another payload under its mark means
                # Redis holds what another ledger (a restored backup?) recorded.
                logger.warning(
                    "event %r: its Redis mark holds another payload; the ledger keeps this "
                    "one, run reconcile_stats",
                    event.event_id,
                )
            elif status is ApplyStatus.BEFORE_WINDOW:
                logger.warning(
                    "event %r was first recorded at %s, before the idempotency marks' window; "
                    "not applied again (reconcile_stats tells whether Redis counts it)",
                    event.event_id,
                    event.first_recorded_at.isoformat(),
                )
        return BatchResult(
            len(messages), applied, duplicates, rejected,
            events_applied, events_duplicates, recorded.waiting,
        )  # fmt: skip

    def _earlier_rejects(
        self, recorded: ledger.LedgerOutcome, received_at: datetime
    ) -> dict[str, list[str]]:
        """The rejects an earlier delivery of the batch's re-seen orders stored, for Redis to
        count once each (their marks make it harmless when it did).

        A waiting event refused when its order came is stored in the transaction that
        records the order, and its message was deleted when it was parked: if that batch's
        Redis step failed, only the order's retry or redelivery can count it. Such a row
        keeps when its message was received, which may be long before; but its codes are the
        order's state's, judged no earlier than the order's first recording, so it is handed
        on while that lies inside the marks' window. Any other row is handed on while it was
        received inside the window (older marks may have expired). Only re-seen orders are
        looked up, so a batch of new orders costs no query.
        """
        first_recorded = {
            r.order.order_id: r.first_recorded_at
            for r in recorded.recorded
            if r.first_recorded_at != received_at
        }
        if not first_recorded:
            return {}
        since = self.store.window_start(received_at)
        found: dict[str, list[str]] = {}
        rows = RejectedOrder.objects.filter(order_id__in=sorted(first_recorded)).values_list(
            "message_id", "order_id", "reason_codes", "received_at"
        )
        for message_id, order_id, reason_codes, row_received_at in rows:
            codes = [code for code in reason_codes.split(",") if code]
            judged_at = (
                first_recorded[order_id]
                if order_id is not None and codes and set(codes) <= ORDER_STATE_CODES
                else row_received_at
            )
            if since is None or judged_at >= since:
                found[message_id] = codes
        return found

    def _record(
        self, batch: ValidatedBatch, received_at: datetime
    ) -> tuple[ledger.LedgerOutcome, list[RejectionRecord], int]:
        """Step 2: ledger rows and rejects in one transaction; returns what the ledger
        recorded, every reject stored (the batch's, and those of waiting events refused now
        that their order came) and how many of them are this batch's messages."""
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
        with SQLITE_WRITER if connection.vendor == "sqlite" else contextlib.nullcontext():
            return self._record_in_transaction(batch, received_at)

    def _record_in_transaction(
        self, batch: ValidatedBatch, received_at: datetime
    ) -> tuple[ledger.LedgerOutcome, list[RejectionRecord], int]:
        with transaction.atomic():
            outcome = ledger.record_batch(
                batch.orders, batch.events, received_at, queue_name=self.queue_name
            )
            refused = [
                *batch.rejected,
                *((message, conflict_rejection(order)) for message, order in outcome.conflicts),
                *(
                    (message, event_conflict_rejection(event))
                    for message, event in outcome.event_conflicts
                ),
            ]
            rejects = [
                self._reject(message, rejection, received_at) for message, rejection in refused
            ]
            rejects += [
                self._reject(r.message, r.rejection, received_at)
                for r in outcome.event_rejections
                if r.received_at is None
            ]
            in_batch = len(rejects)
            rejects += [
                self._reject(r.message, r.rejection, r.received_at, r.queue_name)
                for r in outcome.event_rejections
                if r.received_at is not None
            ]
            if rejects:
                self.record_rejections(rejects)
        return outcome, rejects, in_batch

    def _reject(
        self,
        message: dict[str, Any],
        rejection: Rejection,
        received_at: datetime,
        queue_name: str | None = None,
    ) -> RejectionRecord:
        return RejectionRecord(
            message_id=message["MessageId"],
            body=message.get("Body", ""),
            rejection=rejection,
            queue_name=self.queue_name if queue_name is None else queue_name,
            receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            received_at=received_at,
        )
