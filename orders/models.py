"""Rejected orders (the messages that failed validation, kept for staff review in the
admin), the ledger of accepted orders and their events (refunds, cancellations), and the
events that wait for their order.

One row per SQS message id, so a redelivered reject never makes a second row. The body is
stored as bytes, losslessly, because the one message that breaks the pipeline is exactly the
one whose bytes (not a cleaned-up copy) staff need to see; after ``REJECTED_RETENTION_DAYS``
``prune_rejected`` removes its personal fields (``RejectedOrder.remove_personal_data``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models import Count, Min, Q

from orderpipe.timeutils import epoch_ms
from orders.append_only import AppendOnlyModel, append_only_triggers
from orders.append_only import LedgerIsAppendOnlyError as LedgerIsAppendOnlyError  # re-exported
from orders.payloads import pretty_body_text, without_personal_fields
from orders.validation import Rejection, safe_text

logger = logging.getLogger(__name__)
rejection_logger = logging.getLogger("orders.rejections")

# What removing a message's personal data changes (RejectedOrder.remove_personal_data).
_REDACTED_FIELDS = ("body", "corrected_payload", "redacted_at", "redaction")


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """What the consumer knows about one rejected message, handed to ``record_many``."""

    message_id: str
    body: str | bytes
    rejection: Rejection
    queue_name: str
    receive_count: int
    received_at: datetime


def encode_body(body: str | bytes) -> bytes:
    """Message body as bytes; ``surrogatepass`` keeps even a lone surrogate round-trippable."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    return body.encode("utf-8", "surrogatepass")


def reason_codes_field(codes: Sequence[str]) -> str:
    """``",a,b,"``: the codes as one text column, for display and export (queries by code use
    the ``RejectedOrderCode`` rows, which an index serves)."""
    return f",{','.join(sorted(set(codes)))}," if codes else ""


def _safe_reasons(rejection: Rejection) -> list[dict[str, str]]:
    # jsonb refuses \u0000 and psycopg refuses lone surrogates: escape both.
    return [
        {"code": r.code, "field": safe_text(r.field, 200), "message": safe_text(r.message, 2000)}
        for r in rejection.reasons
    ]


class RejectedOrderQuerySet(models.QuerySet["RejectedOrder"]):
    def record_many(self, records: Sequence[RejectionRecord]) -> list[str]:
        """Store a batch of rejected messages idempotently; returns the message ids it added.

        The consumer does not count rejections from the returned ids (a row may come from an
        attempt whose Redis count never happened, or from another consumer): it counts each
        message id once in Redis, in the same step that applies the batch's orders.

        A message id already stored is not duplicated: its ``receive_count`` is raised to the
        highest seen. At most five queries per batch whatever its size (SELECT the ids already
        stored, INSERT the new rows, SELECT their keys, INSERT their ``RejectedOrderCode``
        rows, UPDATE the receive counts) in one transaction, so the consumer deletes the
        messages only once all of them are safely stored. ``ignore_conflicts`` covers a
        second consumer inserting the same id between our SELECT and INSERT.
        """
        if not records:
            return []
        latest: dict[str, RejectionRecord] = {}
        counts: dict[str, int] = {}
        for record in records:
            latest.setdefault(record.message_id, record)
            counts[record.message_id] = max(
                counts.get(record.message_id, 0), int(record.receive_count)
            )
        with transaction.atomic(using=self.db):
            existing = {
                row.message_id: row
                for row in self.select_for_update()
                .filter(message_id__in=list(latest))
                .only("pk", "message_id", "receive_count")
            }
            to_update = []
            for message_id, row in existing.items():
                if counts[message_id] > row.receive_count:
                    row.receive_count = counts[message_id]
                    to_update.append(row)
            new_rows = [
                self.model(
                    message_id=message_id,
                    body=encode_body(record.body),
                    order_id=record.rejection.order_id,
                    user_id=record.rejection.user_id,
                    reasons=_safe_reasons(record.rejection),
                    reason_codes=reason_codes_field(record.rejection.codes),
                    queue_name=record.queue_name,
                    received_at=record.received_at,
                    sent_at=record.rejection.sent_at,
                    receive_count=max(counts[message_id], 1),
                )
                for message_id, record in latest.items()
                if message_id not in existing
            ]
            if new_rows:
                self.bulk_create(new_rows, ignore_conflicts=True)
                # ignore_conflicts leaves the keys unset: read them back to hang the codes on.
                keys = self.filter(message_id__in=[r.message_id for r in new_rows]).values_list(
                    "message_id", "pk"
                )
                codes = {r.message_id: r.codes for r in new_rows}
                RejectedOrderCode.objects.using(self.db).bulk_create(
                    [
                        RejectedOrderCode(rejected_order_id=pk, code=code)
                        for message_id, pk in keys
                        for code in codes[message_id]
                    ],
                    ignore_conflicts=True,
                )
            if to_update:
                self.bulk_update(to_update, ["receive_count"])
        for message_id, record in latest.items():
            rejection_logger.warning(
                "rejected order message_id=%s order_id=%s reasons=%s receive_count=%d%s",
                message_id,
                record.rejection.order_id,
                ",".join(record.rejection.codes),
                counts[message_id],
                " (already recorded)" if message_id in existing else "",
            )
        return [row.message_id for row in new_rows]

    def store_redactions(self, rows: Sequence[RejectedOrder]) -> None:
        """Write what ``remove_personal_data`` changed on ``rows``: one statement run for
        every row (``executemany``; psycopg pipelines it). ``bulk_update`` built a CASE per
        field and row, 3 ms of CPU per row (prune_rejected on a million rows: an hour)."""
        if not rows:
            return
        connection = connections[self.db]
        # Plain columns, each with a column name, which the types of get_field (a field or a
        # relation) and of Field.column (None for a field without one) cannot tell.
        fields = [
            cast(models.Field[Any, Any], self.model._meta.get_field(name))
            for name in _REDACTED_FIELDS
        ]
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(cast(str, field.column))} = %s" for field in fields)
        # Only identifiers from the model's meta are formatted into the SQL.
        sql = f"UPDATE {quote(self.model._meta.db_table)} SET {assignments} WHERE id = %s"  # noqa: S608
        params = [
            [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields]
            + [row.pk]
            for row in rows
        ]
        with transaction.atomic(using=self.db, savepoint=False), connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def with_code(self, code: str) -> RejectedOrderQuerySet:
        """Rows rejected (among other reasons) for ``code``: an indexed lookup of the codes."""
        return self.filter(code_rows__code=code)

    def count_by_code(self) -> dict[str, int]:
        """How many of these rows carry each reason code, in one indexed GROUP BY over the
        ``RejectedOrderCode`` rows (joined to this queryset only when it is filtered).

        A ``LIKE '%,code,%'`` per code reads every row's text: with a million rows that is
        seconds; the codes' index answers in a fraction of that (``bench/rejects_bench.py``).
        """
        codes = RejectedOrderCode.objects.using(self.db)
        if self.query.where:
            codes = codes.filter(rejected_order__in=self.values("pk"))
        return dict(
            codes.order_by().values_list("code").annotate(n=Count("*")).values_list("code", "n")
        )


class RejectedOrder(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        REVIEWED = "reviewed", "Reviewed"
        RESUBMITTED = "resubmitted", "Resubmitted"

    class Redaction(models.TextChoices):
        FIELDS = "fields", "Personal fields removed: only the order's own fields are kept"
        WHOLE = "whole", "Removed whole: it was not a JSON object"

    message_id = models.CharField(max_length=255, unique=True, editable=False)
    body = models.BinaryField(editable=False, help_text="The message body exactly as received.")
    # NULL = the message carried no string id at all (it may not even be JSON).
    order_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)  # noqa: DJ001
    user_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)  # noqa: DJ001
    reasons = models.JSONField(default=list, help_text="[{code, field, message}, …]")
    reason_codes = models.CharField(
        max_length=255, blank=True, help_text="Comma-delimited codes, e.g. ',invalid_json,'."
    )
    queue_name = models.CharField(max_length=80, blank=True)
    received_at = models.DateTimeField(help_text="When the consumer first received it.")
    sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The message's first SQS SentTimestamp; a resubmission carries it, so a "
        "corrected order without order_timestamp keeps its day.",
    )
    receive_count = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reviewed_rejected_orders",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    staff_note = models.TextField(blank=True)
    corrected_payload = models.TextField(
        blank=True,
        help_text="A fixed order (JSON): it must pass validation and keep the message's "
        "user_id and order_id; resubmit sends it to the queue.",
    )
    resubmitted_at = models.DateTimeField(null=True, blank=True)
    # A duplicate_order_id row goes back only as a new order, by an explicit, recorded decision.
    new_order_decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    new_order_decided_at = models.DateTimeField(null=True, blank=True, editable=False)
    new_order_reason = models.TextField(
        blank=True,
        editable=False,
        help_text="Why this duplicate_order_id message is a different order and not a changed "
        "re-send of the one already counted.",
    )
    redacted_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When personal data was removed from the body and the corrected payload "
        "(prune_rejected after REJECTED_RETENTION_DAYS, or forget_user).",
    )
    redaction = models.CharField(
        max_length=16, choices=Redaction.choices, blank=True, editable=False
    )

    objects = RejectedOrderQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-pk"]
        indexes = [
            models.Index(fields=["received_at"], name="rejected_received_idx"),
            # id too: the changelist's order within a status, and counts by status of rows
            # found by code, read this index alone.
            models.Index(fields=["status", "received_at", "id"], name="rejected_status_time_idx"),
            models.Index(fields=["queue_name"], name="rejected_queue_idx"),
            # prune_rejected: the rows still holding personal data, oldest first; rows leave
            # the index once pruned, so a daily run reads only the few new ones.
            models.Index(
                fields=["received_at", "id"],
                condition=models.Q(redacted_at__isnull=True),
                name="rejected_unredacted_idx",
            ),
        ]
        permissions = [
            ("resubmit_rejectedorder", "Can resubmit a corrected rejected order to the queue"),
            ("export_rejectedorder", "Can export rejected orders, bodies included, as CSV"),
        ]

    def __str__(self) -> str:
        return f"{self.order_id or '(no order id)'} [{self.message_id}]"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A row created one at a time (a script, a test) gets its ``RejectedOrderCode`` rows
        too; ``record_many`` writes them in bulk. Codes do not change after that."""
        adding = self._state.adding
        super().save(*args, **kwargs)
        if adding and self.codes:
            RejectedOrderCode.objects.using(self._state.db).bulk_create(
                [RejectedOrderCode(rejected_order=self, code=code) for code in self.codes],
                ignore_conflicts=True,
            )

    @property
    def codes(self) -> list[str]:
        return [c for c in self.reason_codes.split(",") if c]

    @property
    def first_sent_ms(self) -> int:
        """Epoch ms that dated the message: its first SentTimestamp (rows stored before that
        was kept fall back to when the consumer received it)."""
        return epoch_ms(self.sent_at or self.received_at)

    def resubmission(self) -> dict[str, Any]:
        """The corrected payload as a message for ``OrderQueue.send_messages_to``, which puts
        ``first_sent_ms`` in the ``orderpipe.SentTimestamp`` attribute (as a redrive does)."""
        return {
            "MessageId": str(self.pk),
            "Body": self.corrected_payload,
            "Attributes": {"SentTimestamp": str(self.first_sent_ms)},
        }

    @property
    def body_bytes(self) -> bytes:
        return bytes(self.body) if self.body is not None else b""

    @property
    def body_text(self) -> str:
        """The body as text for humans: undecodable bytes are shown as ``\\xNN`` escapes."""
        return self.body_bytes.decode("utf-8", "backslashreplace")

    def pretty_body(self) -> str:
        return pretty_body_text(self.body_text)

    def remove_personal_data(self, keep: Collection[str], now: datetime) -> bool:
        """Strip the body and the corrected payload down to the order's own fields and the
        top-level fields ``keep`` (``orders.payloads.without_personal_fields``; one that is
        not a JSON object is removed whole). In memory; returns whether anything changed.

        Ids, reasons, codes and times stay: the review history and the counts by reason do
        not depend on who the order was for. Idempotent: a second call changes nothing.
        """
        stripped = without_personal_fields(self.body_text, keep)
        body = b"" if stripped is None else stripped.encode("ascii")
        payload = self.corrected_payload
        if payload:
            payload = without_personal_fields(payload, keep) or ""
        unchanged = body == self.body_bytes and payload == self.corrected_payload
        if unchanged and self.redacted_at is not None:
            return False
        self.body = body
        self.corrected_payload = payload
        self.redacted_at = now
        self.redaction = self.Redaction.WHOLE if stripped is None else self.Redaction.FIELDS
        return True


class RejectedOrderCode(models.Model):
    """One reason code of one rejected order: counting and filtering by code are indexed
    lookups here rather than text scans of ``RejectedOrder.reason_codes``."""

    # Indexed by the unique constraint below (rejected_order first): no index of its own.
    rejected_order = models.ForeignKey(
        RejectedOrder, on_delete=models.CASCADE, related_name="code_rows", db_index=False
    )
    code = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rejected_order", "code"], name="rejected_code_once"),
        ]
        # code first: a count by code, or the rows of one code, reads only this index.
        indexes = [models.Index(fields=["code", "rejected_order"], name="rejected_code_idx")]

    def __str__(self) -> str:
        return self.code


class AcceptedOrder(AppendOnlyModel):
    """The ledger: every accepted order, once, as it was first recorded.

    Redis holds aggregates derived from these rows (``rebuild_stats`` derives them again,
    ``reconcile_stats`` checks them), and ``order_id`` is unique here forever, so a conflicting
    re-send is recognised long after its Redis mark expired. Rows are written by
    ``orders.ledger`` only and never updated or deleted (``orders.append_only``; on PostgreSQL
    the database refuses it too).

    It keeps what the figures and the orders API need, not the message: a body's other fields
    (``shipping_address``, ``payment_method``, …) are dropped, except those a shop lists in
    ``LEDGER_EXTRA_FIELDS``, kept in ``extra``, the one column ``forget_user`` may empty.
    """

    order_id = models.CharField(max_length=128, unique=True, editable=False)
    user_id = models.CharField(max_length=128, editable=False)
    value_cents = models.BigIntegerField(editable=False, help_text="order_value in cents")
    ordered_at = models.DateTimeField(
        editable=False, help_text="order_timestamp, else the message's first SentTimestamp (UTC)"
    )
    day = models.DateField(editable=False, help_text="UTC day of ordered_at")
    items = models.JSONField(
        editable=False, help_text="[{product_id, quantity, price_per_unit}], prices as exact text"
    )
    fingerprint = models.CharField(max_length=80, editable=False)
    message_id = models.CharField(max_length=255, editable=False)
    received_at = models.DateTimeField(editable=False, help_text="When it was first recorded.")
    currency = models.CharField(
        max_length=3, editable=False, help_text="ISO 4217 code of value_cents and the prices."
    )
    extra = models.JSONField(
        default=dict,
        editable=False,
        help_text="The body's fields listed in LEDGER_EXTRA_FIELDS (none by default), numbers "
        "with a fraction or exponent as their exact text.",
    )

    class Meta(AppendOnlyModel.Meta):
        # extra may hold personal data (a shop's choice): forget_user may empty it.
        triggers = append_only_triggers(erasable=("extra",))
        ordering = ["-ordered_at", "-order_id"]
        indexes = [
            # /users/{id}/orders: one user's orders, newest first, ties by order_id.
            models.Index(
                fields=["user_id", "-ordered_at", "-order_id"], name="ledger_user_time_idx"
            ),
            # rebuild_stats, reconcile_stats: the orders inside ORDER_DEDUP_TTL (their marks).
            models.Index(fields=["received_at"], name="ledger_received_idx"),
            # The admin's day filter (a full scan of a million rows otherwise: 681 ms vs 34).
            models.Index(fields=["day"], name="ledger_day_idx"),
        ]

    def __str__(self) -> str:
        return self.order_id


class OrderEvent(AppendOnlyModel):
    """The ledger of events: every accepted refund and cancellation of an order, once.

    Written by ``orders.ledger`` only, in the transaction that checked it against its order
    (what was refunded before, units per product, cancelled), never updated or deleted
    (``orders.append_only``). ``amount_cents`` is what the event took off the order: the
    amount given, a refund by items priced at the order's prices, or for a cancellation what
    was left unrefunded. ``user_id`` is the order's, copied so that per-user figures need no
    join. ``occurred_at`` is kept as the UTC instant: days are counted in the shop's zone
    when figures are derived. ``reason`` is free text that may name a person: ``forget_user``
    may empty it, the one change a row allows.
    """

    class Kind(models.TextChoices):
        REFUNDED = "refunded", "Refunded"
        CANCELLED = "cancelled", "Cancelled"

    event_id = models.CharField(max_length=128, unique=True, editable=False)
    order_id = models.CharField(max_length=128, editable=False)
    user_id = models.CharField(max_length=128, editable=False, help_text="The order's user.")
    kind = models.CharField(max_length=16, choices=Kind.choices, editable=False)
    amount_cents = models.BigIntegerField(
        editable=False, help_text="What the event took off the order, in minor units."
    )
    items = models.JSONField(
        editable=False,
        help_text="Refunded lines [{product_id, quantity, price_per_unit}] at the order's "
        "prices (exact text); empty for an amount or a cancellation.",
    )
    occurred_at = models.DateTimeField(
        editable=False, help_text="occurred_at, else the message's first SentTimestamp (UTC)"
    )
    reason = models.TextField(blank=True, editable=False)
    currency = models.CharField(max_length=3, editable=False)
    fingerprint = models.CharField(max_length=80, editable=False)
    message_id = models.CharField(max_length=255, editable=False)
    received_at = models.DateTimeField(
        editable=False, help_text="When the ledger recorded it (attached to its order)."
    )

    class Meta(AppendOnlyModel.Meta):
        triggers = append_only_triggers(erasable=("reason",))
        ordering = ["occurred_at", "event_id"]
        indexes = [
            # An order's events in the order they happened: the orders API (a page's orders'
            # events in one query), the checks of a new event, the admin's order page.
            models.Index(
                fields=["order_id", "occurred_at", "event_id"], name="event_order_time_idx"
            ),
            # rebuild_stats, reconcile_stats: the events inside the marks' window.
            models.Index(fields=["received_at"], name="event_received_idx"),
        ]

    def __str__(self) -> str:
        return self.event_id


@dataclass(frozen=True, slots=True)
class WaitingSummary:
    """How many events wait for their order, how many of them are orphans (waiting longer
    than ``ORPHAN_EVENT_DAYS``), and since when the oldest waits."""

    count: int
    orphans: int
    oldest: datetime | None


class WaitingEventQuerySet(models.QuerySet["WaitingEvent"]):
    def orphans(self, now: datetime, days: int) -> WaitingEventQuerySet:
        """Events that have waited longer than ``days`` for an order that never came."""
        return self.filter(received_at__lt=now - timedelta(days=days))

    def summary(self, now: datetime, days: int) -> WaitingSummary:
        """Counts and the oldest in one query (``pipeline_status``, ``/metrics``)."""
        found = self.aggregate(
            count=Count("pk"),
            oldest=Min("received_at"),
            orphans=Count("pk", filter=Q(received_at__lt=now - timedelta(days=days))),
        )
        return WaitingSummary(found["count"], found["orphans"], found["oldest"])


class WaitingEvent(models.Model):
    """A valid event whose order is not in the ledger yet (SQS does not keep order: a refund
    sent a second after its order can overtake it).

    Not part of the ledger: the row is kept, its message deleted, and the transaction that
    records the order checks it and records it there (or rejects it) and deletes this row.
    It keeps the validated event and, for a reject later, the message as received: its body
    holds personal data until ``prune_rejected`` strips it (``redacted_at``). One waiting
    longer than ``ORPHAN_EVENT_DAYS`` is an orphan, shown in the admin and ``pipeline_status``.
    """

    event_id = models.CharField(max_length=128, unique=True, editable=False)
    order_id = models.CharField(max_length=128, editable=False)
    kind = models.CharField(max_length=16, choices=OrderEvent.Kind.choices, editable=False)
    amount_cents = models.BigIntegerField(
        null=True, editable=False, help_text="The amount given, in minor units (none: by items)."
    )
    items = models.JSONField(editable=False, help_text="[{product_id, quantity}] as given.")
    stated_at = models.DateTimeField(
        null=True, editable=False, help_text="The message's own occurred_at (UTC), if any."
    )
    occurred_at = models.DateTimeField(editable=False)
    reason = models.TextField(blank=True, editable=False)
    currency = models.CharField(max_length=3, editable=False)
    fingerprint = models.CharField(max_length=80, editable=False)
    message_id = models.CharField(max_length=255, editable=False)
    queue_name = models.CharField(max_length=80, blank=True, editable=False)
    receive_count = models.PositiveIntegerField(default=1, editable=False)
    body = models.BinaryField(editable=False, help_text="The message body as received.")
    received_at = models.DateTimeField(editable=False, help_text="When it was first received.")
    redacted_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When prune_rejected stripped the body's personal fields.",
    )

    objects = WaitingEventQuerySet.as_manager()

    class Meta:
        ordering = ["received_at", "event_id"]
        indexes = [
            # The recording of an order looks up its waiting events.
            models.Index(fields=["order_id"], name="waiting_order_idx"),
            # Orphans (oldest first) and prune_rejected's cut-off.
            models.Index(fields=["received_at"], name="waiting_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} (order {self.order_id})"

    @property
    def body_text(self) -> str:
        return bytes(self.body).decode("utf-8", "backslashreplace") if self.body else ""
