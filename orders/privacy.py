"""Personal data: how long rejected messages keep it, and erasing one user's on request.

Personal is whatever a message holds besides the order itself (ids, value, time, currency,
items: ``orders.payloads.ORDER_FIELDS``): ``shipping_address``, ``payment_method``, and any
field a producer adds. Where it can be, and what each path does:

- the ledger keeps only the fields a shop lists in ``LEDGER_EXTRA_FIELDS`` (``extra``; none by
  default) and an event's free-text ``reason`` (the orders API shows it; it may name a
  person); ``forget_user`` empties them, the only change a ledger row allows;
- an event waiting for its order keeps its message body, for a reject once the order comes;
  after ``REJECTED_RETENTION_DAYS`` ``prune_rejected`` strips it as it strips a rejected
  message's. It names no user until its order comes (then it is in the ledger), so
  ``forget_user`` cannot find it: the retention is what bounds it;
- a rejected message keeps its body and corrected payload as received for
  ``REJECTED_RETENTION_DAYS``; then ``prune_rejected`` strips them to the order's fields and
  the ``LEDGER_EXTRA_FIELDS`` (a body that is not a JSON object is removed whole), and
  ``forget_user`` strips them to the order's fields at once and empties the staff note;
- Redis holds ids and amounts only (the figures), the admin's history (``LogEntry``) an
  object's ids and the names of the fields staff changed, never their values: neither is
  touched.

Ids, amounts, reasons, codes and times stay everywhere: the figures, the counts by reason
and the review history do not depend on who an order was for.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from orders import ledger
from orders.models import RejectedOrder, WaitingEvent
from orders.payloads import without_personal_fields

logger = logging.getLogger(__name__)

_ROW_FIELDS = ("pk", "body", "corrected_payload", "staff_note", "redacted_at", "redaction")
_WAITING_FIELDS = ("pk", "body", "redacted_at")


def prune_rejected_batch(
    cutoff: datetime, batch_size: int = 1000, now: datetime | None = None, using: str = "default"
) -> int:
    """Strip the personal data of up to ``batch_size`` rejected messages received before
    ``cutoff`` that still hold it (oldest first); returns how many (0: none left).

    One transaction per batch, so a stopped run keeps what it did and a lock is held briefly;
    rows another run holds are skipped (PostgreSQL), so two runs never wait on each other.
    The rows come from an index that holds only the rows not yet stripped.
    """
    now = now or timezone.now()
    keep = settings.LEDGER_EXTRA_FIELDS
    with transaction.atomic(using=using):
        rows = _not_yet_stripped(
            RejectedOrder.objects.using(using), cutoff, batch_size, _ROW_FIELDS
        )
        for row in rows:
            row.remove_personal_data(keep, now)
        RejectedOrder.objects.using(using).store_redactions(rows)
    return len(rows)


_M = TypeVar("_M", RejectedOrder, WaitingEvent)


def _not_yet_stripped(
    rows: QuerySet[_M], cutoff: datetime, batch_size: int, fields: tuple[str, ...]
) -> list[_M]:
    """Up to ``batch_size`` of ``rows`` received before ``cutoff`` that still hold their
    personal data, oldest first, locked (their ``fields``); rows another run holds are
    skipped (PostgreSQL)."""
    return list(
        rows.select_for_update(skip_locked=True)
        .filter(redacted_at__isnull=True, received_at__lt=cutoff)
        .order_by("received_at", "pk")
        .only(*fields)[:batch_size]
    )


def prune_waiting_batch(
    cutoff: datetime, batch_size: int = 1000, now: datetime | None = None, using: str = "default"
) -> int:
    """Strip the bodies of up to ``batch_size`` events waiting since before ``cutoff`` for their
    order (oldest first) as a rejected message's are stripped; returns how many (0: none
    left). The validated event stays whole: it is recorded when its order comes. A body that
    is not a JSON object (it was one: it validated) would be removed whole."""
    now = now or timezone.now()
    keep = settings.LEDGER_EXTRA_FIELDS
    with transaction.atomic(using=using):
        rows = _not_yet_stripped(
            WaitingEvent.objects.using(using), cutoff, batch_size, _WAITING_FIELDS
        )
        for row in rows:
            row.body = (without_personal_fields(row.body_text, keep) or "").encode("ascii")
            row.redacted_at = now
        WaitingEvent.objects.using(using).bulk_update(rows, ["body", "redacted_at"])
    return len(rows)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What ``forget_user`` changed (counts only: the data itself is gone)."""

    user_id: str
    ledger_rows: int
    event_reasons: int
    rejected_rows: int
    staff_notes: int

    @property
    def changed(self) -> bool:
        return bool(
            self.ledger_rows or self.event_reasons or self.rejected_rows or self.staff_notes
        )


def forget_user(
    user_id: str, now: datetime | None = None, batch_size: int = 1000, using: str = "default"
) -> Erasure:
    """Erase ``user_id``'s personal data everywhere it is kept (modelled on Shopify's
    ``customers/redact``); the orders, their amounts and every figure stay. Idempotent: a
    second call finds nothing and reports zeros. Logged at INFO, counts only.

    Rejected messages are found by the ``user_id`` read from them, and refunds or
    cancellations (which carry no ``user_id``) by the ids of the user's orders, as are the
    reasons of the refunds and cancellations the ledger recorded for them. One so broken
    that neither could be read is not found here, and loses its personal data with its
    retention (``prune_rejected``).
    """
    now = now or timezone.now()
    with transaction.atomic(using=using):
        ledger_rows = ledger.erase_extra(user_id, using=using)
    rejected = RejectedOrder.objects.using(using)
    rejected_rows, staff_notes = _erase_rejected(
        rejected.filter(user_id=user_id), now, batch_size, using
    )
    event_reasons = 0
    order_ids = ledger.user_order_ids(user_id, using=using)
    while chunk := list(itertools.islice(order_ids, batch_size)):
        with transaction.atomic(using=using):
            event_reasons += ledger.erase_event_reasons(chunk, using=using)
        events = rejected.filter(user_id__isnull=True, order_id__in=chunk)
        changed, notes = _erase_rejected(events, now, batch_size, using)
        rejected_rows += changed
        staff_notes += notes
    erasure = Erasure(user_id, ledger_rows, event_reasons, rejected_rows, staff_notes)
    logger.info(
        "forget_user user_id=%s: extra fields emptied on %d ledger rows, reasons emptied on %d "
        "refunds or cancellations, personal data removed from %d rejected messages, %d staff "
        "notes emptied",
        user_id, ledger_rows, event_reasons, rejected_rows, staff_notes,
    )  # fmt: skip
    return erasure


def _erase_rejected(
    rows: QuerySet[RejectedOrder], now: datetime, batch_size: int, using: str
) -> tuple[int, int]:
    """Strip ``rows`` to the order's fields and empty their staff notes, a batch per
    transaction; returns (rows whose payloads changed, staff notes emptied)."""
    rejected_rows = staff_notes = 0
    last_pk = 0
    while True:
        with transaction.atomic(using=using):
            batch = list(
                rows.select_for_update()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .only(*_ROW_FIELDS)[:batch_size]
            )
            if not batch:
                return rejected_rows, staff_notes
            last_pk = batch[-1].pk
            changed = [row for row in batch if row.remove_personal_data((), now)]
            noted = [row for row in batch if row.staff_note]
            for row in noted:
                row.staff_note = ""
            RejectedOrder.objects.using(using).store_redactions(changed)
            RejectedOrder.objects.using(using).bulk_update(noted, ["staff_note"])
        rejected_rows += len(changed)
        staff_notes += len(noted)
