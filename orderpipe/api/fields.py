"""Serializer fields both APIs' bodies share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from orderpipe.money import shop_currency


class MoneyField(serializers.DecimalField):
    """Integer minor units in, ``Decimal`` with the shop currency's decimals out (rendered
    exactly by ExactJSONRenderer).

    A ``DecimalField`` subclass so the schema says "number" (with the currency's decimals,
    ``STATS_CURRENCY`` as the field is declared: its ``multipleOf``), while the representation
    skips DecimalField's quantize-with-context, which would round very large totals.
    """

    def __init__(self, **kwargs: Any) -> None:
        decimals = shop_currency().minor_units
        super().__init__(max_digits=None, decimal_places=decimals, coerce_to_string=False, **kwargs)

    # A Decimal out, as DecimalField's own with coerce_to_string=False (the stubs say str).
    def to_representation(self, value: int) -> Decimal:  # type: ignore[override]
        return shop_currency().from_minor_units(int(value))


class CurrencyField(serializers.CharField):
    """The ISO 4217 code every amount of a body is in (``STATS_CURRENCY``), whatever the
    instance: a body says which currency its figures are, never leaves a client to assume."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "help_text", "The ISO 4217 code every amount here is in (STATS_CURRENCY)."
        )
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, value: Any) -> str:
        return shop_currency().code
