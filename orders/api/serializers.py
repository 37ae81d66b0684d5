"""Response shapes of the orders API: ledger rows and rejected messages out, money exact.

Money leaves as ``Decimal`` (``order_value`` from integer cents through the shared
``MoneyField``, ``price_per_unit`` from the exact decimal text the ledger stores), which the
project's JSON renderer writes as exact JSON numbers; no float ever sees it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from orderpipe.api.fields import MoneyField
from orders.models import AcceptedOrder, RejectedOrder

ACCEPTED = "accepted"
REJECTED = "rejected"


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


class AcceptedOrderSerializer(serializers.Serializer[AcceptedOrder]):
    """An accepted order as the ledger first recorded it (``orders.models.AcceptedOrder``)."""

    status = serializers.ChoiceField(choices=[ACCEPTED], read_only=True, default=ACCEPTED)
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
