"""Response shapes of the orders API: ledger rows, their events and rejected messages out,
money exact.

Money leaves as ``Decimal`` (``order_value``, ``refunded``, an event's ``amount`` from integer
cents through the shared ``MoneyField``, ``price_per_unit`` from the exact decimal text the
ledger stores), which the project's JSON renderer writes as exact JSON numbers; no float ever
sees it.

An accepted order is shown with its events (refunds, cancellations), which the view reads for a
whole page in one query (``orders.ledger.events_of_orders``) and hands to the serializer as
``context["events"]``: order_id → its events, in the order they occurred.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from rest_framework import serializers

from orderpipe.api.fields import MoneyField
from orders.event_rules import ORDER_STATUSES, order_status
from orders.ledger import LedgerEvent
from orders.models import AcceptedOrder, OrderEvent, RejectedOrder

ACCEPTED = "accepted"
REJECTED = "rejected"
# What an accepted order's answer shows of its row: every column but the SQS envelope's
# (message_id, fingerprint).
SERVED_FIELDS = (
    "order_id", "user_id", "value_cents", "ordered_at", "items", "received_at", "extra"
)  # fmt: skip


class ExactDecimalField(serializers.DecimalField):
    """Decimal text in (``"19.990"``, ``"1E+2"``), the same number out, digits untouched."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=None, decimal_places=None, coerce_to_string=False, **kwargs)

    # A Decimal out, as DecimalField's own with coerce_to_string=False (the stubs say str).
    def to_representation(self, value: str) -> Decimal:  # type: ignore[override]
        return Decimal(value)


class ItemSerializer(serializers.Serializer[dict[str, Any]]):
    product_id = serializers.CharField(allow_null=True, help_text="null when the order had none.")
    quantity = serializers.IntegerField(min_value=1)
    price_per_unit = ExactDecimalField(help_text="Exactly as sent (digits kept).")


class BlankAsNullCharField(serializers.CharField):
    """Text that may be absent: stored as ``''``, shown as null."""

    def to_representation(self, value: str) -> str | None:  # type: ignore[override]
        return value or None


class RefundedItemSerializer(serializers.Serializer[dict[str, Any]]):
    product_id = serializers.CharField()
    quantity = serializers.IntegerField(min_value=1)
    price_per_unit = ExactDecimalField(help_text="The order's price of these units, exactly.")


class EventSerializer(serializers.Serializer[LedgerEvent]):
    """A refund or cancellation the ledger recorded (``orders.models.OrderEvent``)."""

    event_id = serializers.CharField()
    kind = serializers.ChoiceField(choices=OrderEvent.Kind.choices)
    amount = MoneyField(
        source="amount_cents",
        help_text="What it took off the order: the amount refunded (by items: at the order's "
        "prices); for a cancellation, what was left unrefunded.",
    )
    items = RefundedItemSerializer(
        many=True, help_text="The refunded lines (empty for a refund by amount, a cancellation)."
    )
    occurred_at = serializers.DateTimeField(
        help_text="UTC, ISO 8601: occurred_at, else the message's SentTimestamp."
    )
    reason = BlankAsNullCharField(allow_null=True, help_text="As sent; null when none.")


class OrderWithEvents:
    """An accepted order as the API shows it: its row's served fields, its events, and what
    they did to it (``orders.event_rules.order_status``). The fields are copied rather than
    looked up on the row through ``__getattr__``, which cost 0.4 ms per page of 100."""

    __slots__ = ("events", "net_cents", "refunded_cents", "status", *SERVED_FIELDS)

    def __init__(self, order: AcceptedOrder, events: list[LedgerEvent]) -> None:
        for name in SERVED_FIELDS:
            setattr(self, name, getattr(order, name))
        self.events = events
        kinds_and_amounts = ((event.kind, event.amount_cents) for event in events)
        self.status, self.refunded_cents = order_status(order.value_cents, kinds_and_amounts)
        self.net_cents = order.value_cents - self.refunded_cents


class AcceptedOrderSerializer(serializers.Serializer[AcceptedOrder]):
    """An accepted order as the ledger first recorded it (``orders.models.AcceptedOrder``),
    with its events (``context["events"]``, from ``orders.ledger.events_of_orders``)."""

    status = serializers.ChoiceField(
        choices=ORDER_STATUSES,
        read_only=True,
        help_text="accepted (no events), partially_refunded, refunded (refunds took all of its "
        "value) or cancelled.",
    )
    order_id = serializers.CharField()
    user_id = serializers.CharField()
    order_value = MoneyField(source="value_cents")
    order_timestamp = serializers.DateTimeField(
        source="ordered_at",
        help_text="UTC, ISO 8601: order_timestamp, else the message's SentTimestamp.",
    )
    items = ItemSerializer(many=True)
    received_at = serializers.DateTimeField(help_text="When the ledger first recorded it (UTC).")
    extra = serializers.DictField(
        help_text="The message's fields listed in LEDGER_EXTRA_FIELDS (empty by default: the "
        "ledger keeps no personal data such as shipping_address); numbers with a fraction or "
        "exponent as their exact text."
    )
    events = EventSerializer(
        many=True,
        read_only=True,
        help_text="Its refunds and cancellations, in the order they occurred.",
    )
    refunded = MoneyField(
        source="refunded_cents", read_only=True, help_text="The sum of its events' amounts."
    )
    net_value = MoneyField(source="net_cents", read_only=True, help_text="order_value - refunded.")

    def to_representation(self, instance: AcceptedOrder) -> dict[str, Any]:
        events: dict[str, list[LedgerEvent]] = self.context["events"]
        row = OrderWithEvents(instance, events.get(instance.order_id, []))
        # The fields read the row as they would the order (OrderWithEvents has its fields).
        return super().to_representation(cast(AcceptedOrder, row))


class ReasonSerializer(serializers.Serializer[dict[str, Any]]):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. value_mismatch.")
    field = serializers.CharField()
    message = serializers.CharField()


class RejectionSerializer(serializers.Serializer[RejectedOrder]):
    """One rejected SQS message (``orders.models.RejectedOrder``)."""

    received_at = serializers.DateTimeField(help_text="When the consumer first received it.")
    reasons = ReasonSerializer(many=True)


class RejectedOrderSerializer(serializers.Serializer[dict[str, Any]]):
    """An order id no accepted order carries, only rejected messages.

    Input: ``{"order_id", "rejection_count", "rejections": [RejectedOrder, …]}``.
    """

    status = serializers.ChoiceField(choices=[REJECTED], read_only=True, default=REJECTED)
    order_id = serializers.CharField()
    rejection_count = serializers.IntegerField(
        min_value=1, help_text="Rejected messages carrying this order_id."
    )
    rejections = RejectionSerializer(
        many=True, help_text="Oldest first, at most 100 (rejection_count tells how many exist)."
    )
