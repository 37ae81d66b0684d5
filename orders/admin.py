"""Staff review of rejected orders (find them, read the exact payload, fix and resubmit), the
ledger of accepted orders and of their refunds and cancellations (look only), and the events
waiting for their order (look only; orphans flagged).

Rejected rows are written by the consumer only (no add), their received fields are read-only;
staff edit a note and a corrected payload, which must pass the same validator as the queue and
keep the order's ids. Sending it needs its own permission (``orders.resubmit_rejectedorder``),
and so does the CSV export of bodies (``orders.export_rejectedorder``): viewing is not enough.
Ledger rows are the record of truth: nobody adds, changes or deletes one here, superusers
included. Waiting events are the ledger's to attach when their order comes: read-only too.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ERROR_FLAG, ChangeList
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.forms import ModelForm
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from orderpipe.money import shop_currency
from orders.event_rules import order_status
from orders.forms import NewOrderDecisionForm, RejectedOrderForm, payload_errors
from orders.ledger import events_of_orders
from orders.models import (
    AcceptedOrder,
    OrderEvent,
    RejectedOrder,
    RejectedOrderQuerySet,
    WaitingEvent,
)
from orders.payloads import pretty_body_text
from orders.sqs import SQS_BATCH_LIMIT, OrderQueue
from orders.validation import ALL_CODES, DUPLICATE_ORDER_ID

logger = logging.getLogger(__name__)

_CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class StaffRequest(HttpRequest):
    """What an admin action receives: the admin site lets only a logged-in staff user in."""

    user: User


class ReasonCodeFilter(admin.SimpleListFilter):
    title = "reason"
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code) for code in ALL_CODES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in ALL_CODES:
            # A filter of RejectedOrderAdmin only, whose rows come from RejectedOrder.objects.
            return cast(RejectedOrderQuerySet, queryset).with_code(value)
        return queryset


class QueueFilter(admin.SimpleListFilter):
    """By ``queue_name``. Django's own field filter lists the names with ``SELECT DISTINCT``
    over every row (a scan of the table); here each name is one index probe (the next name
    after the last one), a handful of probes for the few queues there are."""

    title = "queue name"
    parameter_name = "queue_name"
    MAX_QUEUES = 50

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names: list[str] = []
        names_after = RejectedOrder.objects.order_by("queue_name").values_list(
            "queue_name", flat=True
        )
        while len(names) < self.MAX_QUEUES:
            query = names_after.filter(queue_name__gt=names[-1]) if names else names_after
            name = query.first()
            if name is None:
                break
            names.append(name)
        return [(name, name or "(none)") for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(queue_name=value)


def _csv_cell(value: Any) -> str:
    """Text for a spreadsheet cell; a leading ``=``/``+``/``-``/``@`` would run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_CSV_FORMULA_PREFIXES) else text


def reason_summary(queryset: RejectedOrderQuerySet) -> dict[str, Any]:
    """Counts by reason code and by status in two indexed GROUP BYs (the changelist header,
    the dashboard and pipeline_status show them)."""
    by_code = queryset.count_by_code()
    by_status = dict(
        queryset.order_by().values_list("status").annotate(n=Count("*")).values_list("status", "n")
    )
    return {
        "total": sum(by_status.values()),
        "by_code": [(code, by_code[code]) for code in ALL_CODES if by_code.get(code)],
        "by_status": [
            (value, label, by_status.get(value, 0)) for value, label in RejectedOrder.Status.choices
        ],
    }


@dataclass(frozen=True)
class ReasonRow:
    code: str
    count: int
    url: str


def rejects_panel(request: HttpRequest) -> dict[str, Any]:
    """The staff dashboard's section on rejected orders: counts by status and by reason code,
    each linked to the filtered changelist."""
    changelist = reverse("admin:orders_rejectedorder_changelist")
    summary = reason_summary(RejectedOrder.objects.all())
    return {
        "template": "admin/orders/rejects_panel.html",
        "reasons": [
            ReasonRow(code, count, f"{changelist}?{urlencode({'reason': code})}")
            for code, count in summary["by_code"]
        ],
        "statuses": [
            (label, count, f"{changelist}?{urlencode({'status__exact': value})}")
            for value, label, count in summary["by_status"]
        ],
        "rejected_total": summary["total"],
    }


@admin.register(RejectedOrder)
class RejectedOrderAdmin(admin.ModelAdmin[RejectedOrder]):
    form = RejectedOrderForm
    list_display = ("received_at", "order_id", "user_id", "reason_list", "status", "receive_count")
    # Every part of the changelist stays an indexed query with a million rows
    # (bench/rejects_bench.py): no date_hierarchy (its year and month links are a DISTINCT
    # over every row shown; the received_at filter offers today, 7 days, month, year), the
    # queue filter probes an index, and no second count of the unfiltered table.
    list_filter = ("status", ReasonCodeFilter, "received_at", QueueFilter)
    # Index lookups only (see get_search_results), never Django's icontains scan.
    search_fields = ("message_id", "order_id", "user_id")
    search_help_text = (
        "A message_id or a user_id (exact), or an order_id (exact, or how it begins)."
    )
    show_full_result_count = False
    list_select_related = ("reviewed_by",)
    list_per_page = 50
    actions = ("mark_reviewed", "resubmit_corrected", "export_csv")
    readonly_fields = (
        "message_id",
        "queue_name",
        "sent_at",
        "received_at",
        "receive_count",
        "order_id",
        "user_id",
        "accepted_order",
        "reasons_display",
        "payload_display",
        "status",
        "reviewed_by",
        "reviewed_at",
        "resubmitted_at",
        "new_order_decision",
        "redaction_display",
    )
    fieldsets = (
        (
            "Message",
            {
                "fields": (
                    "message_id",
                    "queue_name",
                    "sent_at",
                    "received_at",
                    "receive_count",
                    "redaction_display",
                )
            },
        ),
        (
            "Order",
            {
                "fields": (
                    "order_id",
                    "user_id",
                    "accepted_order",
                    "reasons_display",
                    "payload_display",
                )
            },
        ),
        (
            "Review",
            {
                "fields": (
                    "status",
                    "reviewed_by",
                    "reviewed_at",
                    "resubmitted_at",
                    "new_order_decision",
                    "staff_note",
                    "corrected_payload",
                )
            },
        ),
    )
    decision_fieldset = (
        "Duplicate order_id: decide",
        {
            "fields": ("count_as_new_order", "decision_reason"),
            "description": "Usually a changed re-send of the order already counted: mark it "
            "reviewed. Only a different order that reused the id goes back, under a new "
            "order_id, by this recorded decision.",
        },
    )

    # --- display ----------------------------------------------------------------------------
    @admin.display(description="reasons")
    def reason_list(self, obj: RejectedOrder) -> str:
        return ", ".join(obj.codes)

    @admin.display(description="reasons")
    def reasons_display(self, obj: RejectedOrder) -> str:
        reasons = obj.reasons if isinstance(obj.reasons, list) else []
        rows = [
            (r.get("code", ""), r.get("field", ""), r.get("message", ""))
            for r in reasons
            if isinstance(r, dict)
        ]
        if not rows:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li><code>{}</code> {}: {}</li>", rows),
        )

    @admin.display(description="raw payload")
    def payload_display(self, obj: RejectedOrder) -> str:
        if obj.redaction == RejectedOrder.Redaction.WHOLE:
            return "(removed: it was not a JSON object, so none of it could be kept)"
        return pre_block(obj.pretty_body())

    @admin.display(description="personal data")
    def redaction_display(self, obj: RejectedOrder) -> str:
        if obj.redacted_at is None:
            return "kept as received (until its retention ends)"
        return f"{obj.get_redaction_display()} ({obj.redacted_at:%Y-%m-%d %H:%M} UTC)"

    @admin.display(description="counted as a new order")
    def new_order_decision(self, obj: RejectedOrder) -> str:
        if obj.new_order_decided_at is None:
            return "-"
        who = obj.new_order_decided_by.get_username() if obj.new_order_decided_by else "?"
        return format_html(
            "decided by {} on {}: {}",
            who,
            f"{obj.new_order_decided_at:%Y-%m-%d %H:%M} UTC",
            obj.new_order_reason,
        )

    @admin.display(description="accepted order")
    def accepted_order(self, obj: RejectedOrder) -> str:
        """The ledger row with this order_id (a conflicting re-send's first version, or the
        order as accepted after a fix), so a reviewer sees at once what was counted."""
        pks = AcceptedOrder.objects.filter(order_id=obj.order_id).values_list("pk", flat=True)
        pk = pks.first() if obj.order_id else None
        if pk is None:
            return "none with this order_id"
        url = reverse("admin:orders_acceptedorder_change", args=[pk])
        return format_html('<a href="{}" id="accepted-order-link">{}</a>', url, obj.order_id)

    # --- permissions: rows come from the consumer only ---------------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_resubmit_permission(self, request: HttpRequest) -> bool:
        """Sending a corrected order adds an accepted order: its own permission, not change."""
        return request.user.has_perm("orders.resubmit_rejectedorder")

    def has_export_permission(self, request: HttpRequest) -> bool:
        """An export carries every body (personal data): its own permission, not view."""
        return request.user.has_perm("orders.export_rejectedorder")

    def _can_decide(self, request: HttpRequest, obj: RejectedOrder | None) -> bool:
        return (
            obj is not None
            and DUPLICATE_ORDER_ID in obj.codes
            and obj.status != RejectedOrder.Status.RESUBMITTED
            and self.has_change_permission(request, obj)
            and self.has_resubmit_permission(request)
        )

    def get_fieldsets(self, request: HttpRequest, obj: RejectedOrder | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if self._can_decide(request, obj):
            return (*fieldsets, self.decision_fieldset)
        return fieldsets

    def get_form(
        self,
        request: HttpRequest,
        obj: RejectedOrder | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[ModelForm[RejectedOrder]]:
        if self._can_decide(request, obj):
            kwargs["form"] = NewOrderDecisionForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: RejectedOrder, form: ModelForm[RejectedOrder], change: bool
    ) -> None:
        """Records a decision to count a duplicate as a new order: who, when, why; logged."""
        if form.cleaned_data.get("count_as_new_order"):
            # The admin site lets only a logged-in staff user in; the override keeps Django's
            # signature (HttpRequest), whose user may be anonymous.
            obj.new_order_decided_by = cast(User, request.user)
            obj.new_order_decided_at = timezone.now()
            obj.new_order_reason = form.cleaned_data["decision_reason"].strip()
            logger.warning(
                "%s decided at %s that rejected message %s (order_id %s, already counted with "
                "another payload) is a different order, to be resubmitted as order_id %s",
                request.user.get_username(),
                obj.new_order_decided_at.isoformat(),
                obj.message_id,
                obj.order_id,
                _payload_order_id(obj.corrected_payload),
            )
        super().save_model(request, obj, form, change)

    def get_readonly_fields(
        self, request: HttpRequest, obj: RejectedOrder | None = None
    ) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.status == RejectedOrder.Status.RESUBMITTED:
            return (*fields, "corrected_payload")  # what was sent stays as it was sent
        return fields

    # --- changelist summary -----------------------------------------------------------------
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = response.context_data if isinstance(response, TemplateResponse) else None
        if context is not None and "cl" in context:
            # Summarize what the reviewer is looking at (the current filters and search).
            context["summary"] = reason_summary(context["cl"].queryset)
            context["can_export"] = self.has_export_permission(request)
        return response

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RejectedOrder], search_term: str
    ) -> tuple[QuerySet[RejectedOrder], bool]:
        """An exact message_id or user_id, or an order_id or how it begins: each an index
        (the unique message_id, ``order_id``'s and on PostgreSQL its ``varchar_pattern_ops``
        twin, ``user_id``'s), never the ``icontains`` scan of a million rows."""
        term = search_term.strip()
        if not term:
            return queryset, False
        found = Q(message_id=term) | Q(order_id__startswith=term) | Q(user_id=term)
        return queryset.filter(found), False

    # --- actions ----------------------------------------------------------------------------
    @admin.action(description="Mark selected as reviewed", permissions=["change"])
    def mark_reviewed(self, request: StaffRequest, queryset: QuerySet[RejectedOrder]) -> None:
        # A resubmitted row stays resubmitted: that is further along than reviewed.
        updated = queryset.exclude(status=RejectedOrder.Status.RESUBMITTED).update(
            status=RejectedOrder.Status.REVIEWED,
            reviewed_by=request.user,
            reviewed_at=timezone.now(),
        )
        self.message_user(request, f"{updated} rejected order(s) marked as reviewed.")

    @admin.action(
        description="Resubmit corrected payload to the orders queue", permissions=["resubmit"]
    )
    def resubmit_corrected(self, request: StaffRequest, queryset: QuerySet[RejectedOrder]) -> None:
        """Send each row's corrected payload back to the row's own queue, dated like the
        original message (its first SentTimestamp travels in ``orderpipe.SentTimestamp``).

        Rows without a valid payload, or already resubmitted, are reported and not sent. The
        rows are locked while they are sent, so two reviewers cannot both resubmit one row.
        """
        with transaction.atomic():
            rows = RejectedOrder.objects.select_for_update().filter(
                pk__in=list(queryset.values_list("pk", flat=True))
            )
            ready = [row for row in rows.order_by("pk") if self._can_resubmit(request, row)]
            sent = self._send(request, ready)
            now = timezone.now()
            for row in sent:
                row.status = RejectedOrder.Status.RESUBMITTED
                row.resubmitted_at = now
                row.reviewed_by = request.user
                row.reviewed_at = row.reviewed_at or now
            RejectedOrder.objects.bulk_update(
                sent, ["status", "resubmitted_at", "reviewed_by", "reviewed_at"]
            )
        for row in sent:
            if row.new_order_decided_at is not None:
                logger.warning(
                    "%s resubmitted rejected message %s as the new order %s (order_id %s was "
                    "already counted; decided by %s at %s)",
                    request.user.get_username(),
                    row.message_id,
                    _payload_order_id(row.corrected_payload),
                    row.order_id,
                    row.new_order_decided_by.get_username() if row.new_order_decided_by else "?",
                    row.new_order_decided_at.isoformat(),
                )
        if sent:
            logger.info(
                "%s resubmitted %d corrected orders: %s",
                request.user,
                len(sent),
                ", ".join(row.message_id for row in sent),
            )
            self.message_user(request, f"{len(sent)} corrected order(s) sent to the orders queue.")

    def _can_resubmit(self, request: HttpRequest, row: RejectedOrder) -> bool:
        if row.status == RejectedOrder.Status.RESUBMITTED:
            problem = "already resubmitted; it is not sent twice."
        elif not row.corrected_payload.strip():
            problem = "no corrected payload; edit the row and add one first."
        elif errors := payload_errors(
            row.corrected_payload, row, new_order_decided=row.new_order_decided_at is not None
        ):
            problem = f"corrected payload is invalid: {'; '.join(errors)}"
        else:
            return True
        self.message_user(request, f"{row}: {problem}", messages.ERROR)
        return False

    def _send(self, request: HttpRequest, rows: list[RejectedOrder]) -> list[RejectedOrder]:
        """Send ``rows`` to their own queues (``queue_name``; QUEUE_NAME when unknown);
        returns the rows SQS accepted."""
        by_queue: dict[str, list[RejectedOrder]] = {}
        for row in rows:
            by_queue.setdefault(row.queue_name or settings.QUEUE_NAME, []).append(row)
        sent: list[RejectedOrder] = []
        for name, queue_rows in by_queue.items():
            try:
                queue = OrderQueue.from_settings(name)
                url = queue.url
                for start in range(0, len(queue_rows), SQS_BATCH_LIMIT):
                    chunk = queue_rows[start : start + SQS_BATCH_LIMIT]
                    accepted = queue.send_messages_to(url, [r.resubmission() for r in chunk])
                    sent += [row for row in chunk if str(row.pk) in accepted]
                    for row in chunk:
                        if str(row.pk) not in accepted:
                            self.message_user(
                                request, f"{row}: SQS refused the message.", messages.ERROR
                            )
            except Exception as exc:
                logger.exception("resubmitting corrected orders to %s failed", name)
                self.message_user(
                    request, f"Could not send to the queue {name}: {exc}", messages.ERROR
                )
        return sent

    @admin.action(description="Export selected as CSV", permissions=["export"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[RejectedOrder]
    ) -> StreamingHttpResponse:
        return csv_response(queryset)

    # --- export of the whole changelist (its filters and search) ----------------------------
    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """Every row the changelist shows (its filters and search, all pages) as CSV."""
        if not (
            self.has_view_or_change_permission(request) and self.has_export_permission(request)
        ):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
            return HttpResponseRedirect(f"{url}?{ERROR_FLAG}=1")
        return csv_response(changelist.get_queryset(request))


def _payload_order_id(payload: str) -> str:
    """The order_id a corrected payload carries, for the log ("?" when it has none)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return "?"
    value = doc.get("order_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else "?"


# Rows read per database round trip, and text handed to the server per chunk.
_EXPORT_ROWS = 2000
_EXPORT_CHUNK = 64 * 1024


class _Echo:
    """A file for ``csv.writer`` that hands each line back instead of keeping it."""

    def write(self, value: str) -> str:
        return value


def csv_response(queryset: QuerySet[RejectedOrder]) -> StreamingHttpResponse:
    """The rows as a CSV download, streamed: rows are read ``_EXPORT_ROWS`` at a time (a
    server-side cursor on PostgreSQL) and sent in chunks of about 64 KiB, so a million rows
    take the memory of one chunk, not of the whole file (``bench/rejects_bench.py``)."""
    rows = queryset.select_related("reviewed_by").iterator(chunk_size=_EXPORT_ROWS)
    response = StreamingHttpResponse(_csv_chunks(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="rejected-orders-{stamp}.csv"'
    return response


def _csv_chunks(rows: Iterable[RejectedOrder]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    chunk = [writer.writerow(_CSV_HEADER)]
    size = 0
    for line in map(writer.writerow, _csv_rows(rows)):
        chunk.append(line)
        size += len(line)
        if size >= _EXPORT_CHUNK:
            yield "".join(chunk)
            chunk, size = [], 0
    yield "".join(chunk)


def pre_block(text: str) -> str:
    """Preformatted, escaped text (a message body) for a read-only admin field."""
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>', text
    )


class _LedgerChangeList(ChangeList):
    def get_queryset(
        self, request: HttpRequest, exclude_parameters: Any = None
    ) -> QuerySet[AcceptedOrder]:
        # The list shows neither, and each is JSON: 100 of them per page add up.
        return super().get_queryset(request, exclude_parameters).defer("extra", "items")


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Rows written by the consumer only: nobody adds, changes or deletes one here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def money(minor: int | None) -> str:
    return "-" if minor is None else f"{shop_currency().from_minor_units(minor)}"


def items_table(items: Any) -> str:
    """Lines stored as JSON (an order's, or the ones an event refunded), prices exact."""
    rows = [
        (item.get("product_id") or "-", item.get("quantity"), item.get("price_per_unit"))
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
    ]
    return format_html(
        "<table><thead><tr><th>product_id</th><th>quantity</th><th>price_per_unit</th>"
        "</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )


@admin.register(AcceptedOrder)
class AcceptedOrderAdmin(ReadOnlyAdmin):
    """The ledger, read-only: list, search, filter by day, read one order.

    Built for millions of rows: newest recorded first (``ledger_received_idx``: a page is an
    index range, where sorting by order time would sort the whole table), no per-row query, no
    full count next to a filtered one (``show_full_result_count``), a day filter on the
    ``day`` index whose links need no query (unlike ``date_hierarchy``, which scans the table
    for its years and months on every page), and a search of exact or prefix ``order_id``
    (the unique index, and on PostgreSQL its ``varchar_pattern_ops`` twin) or exact
    ``user_id`` (``ledger_user_time_idx``), never the ``icontains`` scan of Django's default
    search.
    """

    list_display = ("order_id", "user_id", "order_value", "ordered_at", "day", "received_at")
    list_filter = (("day", admin.DateFieldListFilter),)
    search_fields = ("order_id", "user_id")
    search_help_text = "An order_id (exact, or how it begins) or a user_id (exact)."
    show_full_result_count = False
    list_per_page = 100
    ordering = ("-received_at",)  # the changelist adds -pk for ties (one batch, one moment)
    fieldsets = (
        (
            "Order",
            {
                "fields": (
                    "order_id",
                    "user_id",
                    "order_value",
                    "ordered_at",
                    "day",
                    "items_display",
                    "events_display",
                    "rejections",
                )
            },
        ),
        (
            "Message",
            {"fields": ("message_id", "received_at", "currency", "fingerprint", "extra_display")},
        ),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _LedgerChangeList

    # --- search -----------------------------------------------------------------------------
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AcceptedOrder], search_term: str
    ) -> tuple[QuerySet[AcceptedOrder], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(order_id__startswith=term) | Q(user_id=term)), False

    # --- display ----------------------------------------------------------------------------
    @admin.display(description="order value", ordering="value_cents")
    def order_value(self, obj: AcceptedOrder) -> str:
        return money(obj.value_cents)

    @admin.display(description="items")
    def items_display(self, obj: AcceptedOrder) -> str:
        return items_table(obj.items)

    @admin.display(description="refunds and cancellations")
    def events_display(self, obj: AcceptedOrder) -> str:
        """The order's events in the order they occurred (one query), what they took off it and
        what is left; each links to its ledger row."""
        events = events_of_orders([obj.order_id])[obj.order_id]
        if not events:
            return "none"
        status, refunded = order_status(obj.value_cents, ((e.kind, e.amount_cents) for e in events))
        changelist = reverse("admin:orders_orderevent_changelist")
        rows = [
            (
                f"{changelist}?{urlencode({'q': event.event_id})}",
                event.event_id,
                event.kind,
                money(event.amount_cents),
                ", ".join(f"{i['quantity']} x {i['product_id']} at {i['price_per_unit']}"
                          for i in event.items) or "-",
                f"{event.occurred_at:%Y-%m-%d %H:%M:%S} UTC",
                event.reason or "-",
            )
            for event in events
        ]  # fmt: skip
        return format_html(
            '<table id="order-events"><thead><tr><th>event_id</th><th>kind</th><th>amount</th>'
            "<th>items</th><th>occurred at</th><th>reason</th></tr></thead><tbody>{}</tbody>"
            "</table><p>{}: {} refunded, {} left</p>",
            format_html_join(
                "",
                '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
                "<td>{}</td></tr>",
                rows,
            ),
            status,
            money(refunded),
            money(obj.value_cents - refunded),
        )

    @admin.display(description="rejected messages with this order_id")
    def rejections(self, obj: AcceptedOrder) -> str:
        count = RejectedOrder.objects.filter(order_id=obj.order_id).count()
        if not count:
            return "none"
        url = reverse("admin:orders_rejectedorder_changelist")
        query = urlencode({"order_id": obj.order_id})
        return format_html('<a href="{}?{}" id="rejections-link">{}</a>', url, query, count)

    @admin.display(description="extra fields")
    def extra_display(self, obj: AcceptedOrder) -> str:
        """The body's fields listed in LEDGER_EXTRA_FIELDS (the ledger keeps no body)."""
        if not obj.extra:
            return "none (LEDGER_EXTRA_FIELDS lists the body fields kept here)"
        return pre_block(json.dumps(obj.extra, indent=2, ensure_ascii=False))


class _EventOrderFilter(admin.SimpleListFilter):
    """The events of one order (``?order_id=``), which the order's page links to."""

    title = "order"
    parameter_name = "order_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(order_id=value)


@admin.register(OrderEvent)
class OrderEventAdmin(ReadOnlyAdmin):
    """The ledger of refunds and cancellations, read-only like the orders' ledger: newest
    recorded first (``event_received_idx``), searched by exact ``event_id`` (its unique
    index), an ``order_id`` (exact, or how it begins: the events' order index) or a ``user_id``
    (its orders, through the ledger's user index), never by a scan."""

    list_display = (
        "event_id", "order_link", "user_id", "kind", "amount", "occurred_at", "received_at",
    )  # fmt: skip
    list_filter = ("kind",)
    search_fields = ("event_id", "order_id", "user_id")
    search_help_text = "An event_id (exact), an order_id (exact, or how it begins) or a user_id."
    show_full_result_count = False
    list_per_page = 100
    ordering = ("-received_at",)
    fields = (
        "event_id", "order_link", "user_id", "kind", "amount", "items_display", "occurred_at",
        "reason", "currency", "message_id", "received_at", "fingerprint",
    )  # fmt: skip
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OrderEvent], search_term: str
    ) -> tuple[QuerySet[OrderEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        orders = AcceptedOrder.objects.filter(user_id=term).values("order_id")
        found = Q(event_id=term) | Q(order_id__startswith=term) | Q(order_id__in=orders)
        return queryset.filter(found), False

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, obj: OrderEvent) -> str:
        return money(obj.amount_cents)

    @admin.display(description="order", ordering="order_id")
    def order_link(self, obj: OrderEvent) -> str:
        url = reverse("admin:orders_acceptedorder_changelist")
        return format_html('<a href="{}?{}">{}</a>', url, urlencode({"q": obj.order_id}),
                           obj.order_id)  # fmt: skip

    @admin.display(description="items")
    def items_display(self, obj: OrderEvent) -> str:
        return items_table(obj.items) if obj.items else "none (a refund by amount, a cancellation)"


class OrphanFilter(admin.SimpleListFilter):
    """Waiting longer than ``ORPHAN_EVENT_DAYS``: for an order that never came (an index
    range of ``waiting_received_idx``)."""

    title = "orphan"
    parameter_name = "orphan"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        days = settings.ORPHAN_EVENT_DAYS
        return [("yes", f"over {days} days: order never came"), ("no", f"up to {days} days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        cutoff = timezone.now() - timedelta(days=settings.ORPHAN_EVENT_DAYS)
        if self.value() == "yes":
            return queryset.filter(received_at__lt=cutoff)
        if self.value() == "no":
            return queryset.filter(received_at__gte=cutoff)
        return queryset


@admin.register(WaitingEvent)
class WaitingEventAdmin(ReadOnlyAdmin):
    """Refunds and cancellations that came before their order: oldest first, those waiting
    longer than ``ORPHAN_EVENT_DAYS`` flagged (and filtered) as orphans. The ledger records
    each, and removes it from here, in the transaction that records its order."""

    list_display = (
        "event_id", "order_id", "kind", "amount", "occurred_at", "received_at", "orphan",
    )  # fmt: skip
    list_filter = (OrphanFilter, "kind")
    search_fields = ("event_id", "order_id")
    search_help_text = "An event_id or an order_id (exact)."
    show_full_result_count = False
    list_per_page = 100
    ordering = ("received_at", "event_id")
    fields = (
        "event_id", "order_id", "kind", "amount", "items", "occurred_at", "stated_at", "reason",
        "currency", "message_id", "queue_name", "received_at", "orphan", "body_display",
        "redacted_at",
    )  # fmt: skip
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WaitingEvent], search_term: str
    ) -> tuple[QuerySet[WaitingEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(event_id=term) | Q(order_id=term)), False

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, obj: WaitingEvent) -> str:
        return money(obj.amount_cents) if obj.amount_cents is not None else "(by items)"

    @admin.display(description="orphan", boolean=True)
    def orphan(self, obj: WaitingEvent) -> bool:
        """Waiting longer than ORPHAN_EVENT_DAYS: for an order that never came."""
        return obj.received_at < timezone.now() - timedelta(days=settings.ORPHAN_EVENT_DAYS)

    @admin.display(description="message body")
    def body_display(self, obj: WaitingEvent) -> str:
        return pre_block(pretty_body_text(obj.body_text))


_CSV_HEADER = (
    "message_id",
    "received_at",
    "queue_name",
    "order_id",
    "user_id",
    "reason_codes",
    "reasons",
    "status",
    "receive_count",
    "reviewed_by",
    "reviewed_at",
    "resubmitted_at",
    "staff_note",
    "redacted_at",
    "body",
)


def _csv_rows(rows: Iterable[RejectedOrder]) -> Iterable[list[str]]:
    for row in rows:
        reasons = "; ".join(
            f"{r.get('code')} ({r.get('field')}): {r.get('message')}"
            for r in (row.reasons or [])
            if isinstance(r, dict)
        )
        yield [
            _csv_cell(v)
            for v in (
                row.message_id,
                row.received_at.isoformat() if row.received_at else "",
                row.queue_name,
                row.order_id,
                row.user_id,
                " ".join(row.codes),
                reasons,
                row.status,
                row.receive_count,
                row.reviewed_by.get_username() if row.reviewed_by else "",
                row.reviewed_at.isoformat() if row.reviewed_at else "",
                row.resubmitted_at.isoformat() if row.resubmitted_at else "",
                row.staff_note,
                row.redacted_at.isoformat() if row.redacted_at else "",
                row.body_text,
            )
        ]
