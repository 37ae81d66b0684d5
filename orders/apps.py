from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.signals import setting_changed


def _validate_in_shop_currency(*, setting: str, **kwargs: Any) -> None:
    """A test that overrides STATS_CURRENCY gets a validator in that currency, and back."""
    if setting == "STATS_CURRENCY":
        from orders import validation

        validation.configure(settings.STATS_CURRENCY)


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        # The validator is pure (no settings): it is told the shop's currency once, here, so
        # every process that validates (consumer, admin, shell) uses STATS_CURRENCY.
        from orders import validation

        validation.configure(settings.STATS_CURRENCY)
        setting_changed.connect(_validate_in_shop_currency, dispatch_uid="orders.currency")
