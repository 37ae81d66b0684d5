"""Response shapes: store dataclasses (integer cents) in, API bodies (exact money) out.

Money follows Shopify's sales report: gross is what was ordered, counted on the order's day;
refunds (a cancellation refunds what was left of its order) are counted on the day they
occurred; net = gross - refunds. ``total_revenue``/``total_spend`` are NET, next to
``gross_*`` and ``refunded``; an average order value is gross / orders placed (Shopify's
current definition). With no refund in the data net equals gross: the figures of before.

The serializers are the shapes drf-spectacular publishes. On the hot path the views build the
same bodies with the plain functions at the end of this module (``*_body``): a DRF serializer
instance deep-copies its fields and walks them one by one, which cost more than the Redis round
trip of a request. ``stats/tests/test_bodies.py`` holds each function equal to its serializer's
own output, so the published schema and the answers cannot drift apart. Views read the store;
nothing here touches Redis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from orderpipe.api.fields import CurrencyField, MoneyField
from orderpipe.money import shop_currency
from stats.api.intervals import BUCKET_LISTS, buckets
from stats.store import (
    DayStats,
    GlobalStats,
    HourStats,
    ProductFigures,
    Ranked,
    RankedProduct,
    ServerInfo,
    UserStats,
)

if TYPE_CHECKING:
    from stats.api.metrics import MetricsSnapshot  # which imports this module


def average_cents(total_cents: int, count: int) -> int:
    """Mean in whole cents, half-up, in integers (no float ever sees the money)."""
    if count <= 0:
        return 0
    return (2 * total_cents + count) // (2 * count)


# A UserStats or GlobalStats goes in; DRF reads it through _Averaged, which adds the average.
class UserStatsSerializer(serializers.Serializer[Any]):
    user_id = serializers.CharField()
    order_count = serializers.IntegerField(help_text="Orders placed, cancelled ones included.")
    total_spend = MoneyField(source="net_spend_cents", help_text="Net: gross_spend - refunded.")
    gross_spend = MoneyField(source="gross_spend_cents", help_text="What the orders were worth.")
    refunded = MoneyField(
        source="refunded_cents", help_text="Refunds and cancellations of the user's orders."
    )
    cancelled_orders = serializers.IntegerField(help_text="Orders of the user cancelled.")
    average_order_value = MoneyField(help_text="gross_spend / order_count, half-up to cents.")
    first_order_at = serializers.DateTimeField(allow_null=True, help_text="UTC, ISO 8601.")
    last_order_at = serializers.DateTimeField(allow_null=True, help_text="UTC, ISO 8601.")
    currency = CurrencyField()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return super().to_representation(_Averaged(instance, "gross_spend_cents", "order_count"))


class GlobalStatsSerializer(serializers.Serializer[Any]):
    total_orders = serializers.IntegerField(help_text="Orders placed, cancelled ones included.")
    total_revenue = MoneyField(
        source="net_revenue_cents", help_text="Net: gross_revenue - refunded."
    )
    gross_revenue = MoneyField(
        source="gross_revenue_cents", help_text="What the orders were worth when placed."
    )
    refunded = MoneyField(source="refunded_cents", help_text="Refunds and cancellations.")
    cancelled_orders = serializers.IntegerField(help_text="Orders cancelled.")
    unique_users = serializers.IntegerField()
    average_order_value = MoneyField(
        help_text="gross_revenue / total_orders, half-up to cents (Shopify's definition)."
    )
    currency = CurrencyField()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return super().to_representation(_Averaged(instance, "gross_revenue_cents", "total_orders"))


class _Averaged:
    """Wraps a store dataclass and adds ``average_order_value`` (in cents) computed from it."""

    def __init__(self, inner: Any, total_attr: str, count_attr: str) -> None:
        self._inner = inner
        self.average_order_value = average_cents(
            getattr(inner, total_attr), getattr(inner, count_attr)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TopSpenderSerializer(serializers.Serializer[Ranked]):
    rank = serializers.IntegerField(min_value=1)
    user_id = serializers.CharField()
    total_spend = MoneyField(
        source="value", help_text="Net spend (gross - refunded), what the ranking is by."
    )


class TopBuyerSerializer(serializers.Serializer[Ranked]):
    rank = serializers.IntegerField(min_value=1)
    user_id = serializers.CharField()
    order_count = serializers.IntegerField(source="value")


class TopProductSerializer(serializers.Serializer[RankedProduct]):
    rank = serializers.IntegerField(min_value=1)
    product_id = serializers.CharField()
    units = serializers.IntegerField(
        help_text="Units sold less those refunded by items or taken back by a cancellation."
    )
    revenue = MoneyField(
        source="revenue_cents",
        help_text="Net: what the units sold were worth less what refunds by items and "
        "cancellations took back (a refund by amount takes nothing off a product).",
    )
    currency = CurrencyField()


class ProductStatsSerializer(serializers.Serializer[ProductFigures]):
    product_id = serializers.CharField()
    units = serializers.IntegerField(
        help_text="Units sold less those refunded by items or taken back by a cancellation."
    )
    revenue = MoneyField(
        source="revenue_cents",
        help_text="Net: what the units sold were worth less what refunds by items and "
        "cancellations took back (a refund by amount takes nothing off a product).",
    )
    currency = CurrencyField()


class DayStatsSerializer(serializers.Serializer[DayStats]):
    date = serializers.DateField(source="day")
    total_orders = serializers.IntegerField(help_text="Orders placed on the day.")
    total_revenue = MoneyField(
        source="net_revenue_cents",
        help_text="Net: gross_revenue - refunded (negative on a day of refunds and few sales).",
    )
    gross_revenue = MoneyField(
        source="gross_revenue_cents", help_text="What the orders placed on the day were worth."
    )
    refunded = MoneyField(
        source="refunded_cents",
        help_text="Refunds and cancellations that occurred on the day, whenever their order was.",
    )


_DAYS_HELP = "interval=day: one entry per day, inclusive, zeros included."
_WEEKS_HELP = (
    "interval=week: one entry per ISO week the range touches, zeros included; `date` is its "
    "Monday (before start_date for a range starting mid-week); each counts only the days "
    "inside the range."
)
_MONTHS_HELP = (
    "interval=month: one entry per calendar month the range touches, zeros included; `date` "
    "is its first day; each counts only the days inside the range."
)


class PeriodStatsSerializer(serializers.Serializer[dict[str, Any]]):
    """The period before a range (``compare=previous``): its totals and buckets, the list
    named after the interval."""

    start_date = serializers.DateField()
    end_date = serializers.DateField()
    total_orders = serializers.IntegerField()
    total_revenue = MoneyField(source="net_revenue_cents", help_text="Net, over the period.")
    gross_revenue = MoneyField(source="gross_revenue_cents")
    refunded = MoneyField(source="refunded_cents")
    days = DayStatsSerializer(many=True, required=False, help_text=_DAYS_HELP)
    weeks = DayStatsSerializer(many=True, required=False, help_text=_WEEKS_HELP)
    months = DayStatsSerializer(many=True, required=False, help_text=_MONTHS_HELP)


class DateRangeStatsSerializer(serializers.Serializer[dict[str, Any]]):
    """Input: ``{"start_date", "end_date", "days": [DayStats, ...]}`` and optionally
    ``interval`` and ``previous`` (``(start, end, days)``); totals are summed here. The
    fields of ``PeriodStatsSerializer`` and three more, in the body's order."""

    start_date = serializers.DateField()
    end_date = serializers.DateField()
    interval = serializers.ChoiceField(choices=list(BUCKET_LISTS))
    currency = CurrencyField()
    total_orders = serializers.IntegerField()
    total_revenue = MoneyField(source="net_revenue_cents", help_text="Net, over the range.")
    gross_revenue = MoneyField(source="gross_revenue_cents")
    refunded = MoneyField(source="refunded_cents")
    days = DayStatsSerializer(many=True, required=False, help_text=_DAYS_HELP)
    weeks = DayStatsSerializer(many=True, required=False, help_text=_WEEKS_HELP)
    months = DayStatsSerializer(many=True, required=False, help_text=_MONTHS_HELP)
    previous = PeriodStatsSerializer(
        required=False,
        help_text="compare=previous only: the same figures for the period just before, as "
        "long as this one, its buckets named after its own weeks or months.",
    )

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        return date_range_body(
            instance["start_date"],
            instance["end_date"],
            instance["days"],
            instance.get("interval", "day"),
            instance.get("previous"),
        )


class HourStatsSerializer(serializers.Serializer[HourStats]):
    hour = serializers.DateTimeField(
        source="start",
        help_text="When the local hour began, with its UTC offset (the hour a daylight-saving "
        "change repeats is listed twice, with its two offsets).",
    )
    total_orders = serializers.IntegerField(help_text="Orders placed in the hour.")
    total_revenue = MoneyField(
        source="net_revenue_cents",
        help_text="Net: gross_revenue - refunded (negative in an hour of refunds and few sales).",
    )
    gross_revenue = MoneyField(
        source="gross_revenue_cents", help_text="What the orders placed in the hour were worth."
    )
    refunded = MoneyField(
        source="refunded_cents",
        help_text="Refunds and cancellations that occurred in the hour, whenever their order was.",
    )


class DayHoursSerializer(serializers.Serializer[dict[str, Any]]):
    """A day's hours: the day before a by-hour request (``compare=previous``)."""

    date = serializers.DateField()
    total_orders = serializers.IntegerField()
    total_revenue = MoneyField(source="net_revenue_cents", help_text="Net, over the day.")
    gross_revenue = MoneyField(source="gross_revenue_cents")
    refunded = MoneyField(source="refunded_cents")
    hours = HourStatsSerializer(many=True, help_text="Every local hour: 23, 24 or 25.")


class HourRangeSerializer(serializers.Serializer[dict[str, Any]]):
    """Input: ``{"date", "time_zone", "hours": [HourStats, ...]}`` and optionally
    ``previous`` (``(date, hours)``); the body is ``by_hour_body``'s."""

    date = serializers.DateField()
    time_zone = serializers.CharField(help_text="STATS_TIME_ZONE: the calendar of the hours.")
    currency = CurrencyField()
    total_orders = serializers.IntegerField()
    total_revenue = MoneyField(source="net_revenue_cents", help_text="Net, over the day.")
    gross_revenue = MoneyField(source="gross_revenue_cents")
    refunded = MoneyField(source="refunded_cents")
    hours = HourStatsSerializer(many=True, help_text="Every local hour of the day: 23, 24 or 25.")
    previous = DayHoursSerializer(
        required=False, help_text="compare=previous only: the day before, hour by hour."
    )

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        return by_hour_body(
            instance["date"], instance["time_zone"], instance["hours"], instance.get("previous")
        )


class RedisNodeSerializer(serializers.Serializer[ServerInfo]):
    """One Redis primary (one, unless REDIS_CLUSTER), from its INFO."""

    node = serializers.CharField(help_text="host:port")
    reachable = serializers.BooleanField()
    version = serializers.CharField(
        allow_null=True, help_text='As the server names itself, e.g. "valkey 9.1.2".'
    )
    eviction_policy = serializers.CharField(
        allow_null=True,
        help_text="maxmemory-policy; anything but noeviction is refused by the consumer.",
    )


class HealthSerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    redis = serializers.ChoiceField(choices=["connected", "unavailable"])
    redis_latency_ms = serializers.FloatField(
        allow_null=True, help_text="Round trip of a PING; null when Redis is unavailable."
    )
    redis_nodes = RedisNodeSerializer(
        many=True,
        required=False,
        help_text=(
            "Every primary (one without REDIS_CLUSTER), only for callers who may read the "
            "stats: the stats.view_stats permission, or everyone with STATS_API_AUTH=none."
        ),
    )
    database = serializers.ChoiceField(choices=["connected", "unavailable"])
    timestamp = serializers.DateTimeField()


class IngestionSerializer(serializers.Serializer[SimpleNamespace]):
    received = serializers.IntegerField(help_text="SQS messages received by the consumer.")
    applied = serializers.IntegerField(help_text="Orders applied to the aggregates.")
    duplicates = serializers.IntegerField(help_text="Redeliveries and identical resends.")
    rejected = serializers.IntegerField(help_text="Messages rejected (recorded for review).")
    rejected_by_code = serializers.DictField(
        child=serializers.IntegerField(),
        help_text=(
            "Rejection reasons by code (a message can have several), those of refunds and "
            "cancellations included (refund_exceeds_order, duplicate_event_id, ...)."
        ),
    )
    events_received = serializers.IntegerField(
        help_text="Refund and cancellation messages received (counted once, when received)."
    )
    events_applied = serializers.IntegerField(
        help_text="Refunds and cancellations applied to the aggregates."
    )
    events_duplicates = serializers.IntegerField(
        help_text="Refunds and cancellations found applied already (redeliveries, resends)."
    )
    events_waiting = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "Refunds and cancellations waiting for their order (they arrived first), from the "
            "database; null when the database did not answer."
        ),
    )
    events_orphaned = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "Of those, the ones waiting longer than ORPHAN_EVENT_DAYS (an order that never "
            "came); null when the database did not answer."
        ),
    )
    last_batch_at = serializers.DateTimeField(allow_null=True)
    consumer_heartbeat_at = serializers.DateTimeField(allow_null=True, source="heartbeat_at")
    consumer_lag_seconds = serializers.FloatField(
        allow_null=True,
        help_text="Seconds since the consumer's last heartbeat; null if it never beat.",
    )


class MetricsSerializer(serializers.Serializer["MetricsSnapshot"]):
    total_orders = serializers.IntegerField(source="global_stats.total_orders")
    total_revenue = MoneyField(
        source="global_stats.net_revenue_cents", help_text="Net: gross_revenue - refunded."
    )
    gross_revenue = MoneyField(source="global_stats.gross_revenue_cents")
    refunded = MoneyField(source="global_stats.refunded_cents")
    cancelled_orders = serializers.IntegerField(source="global_stats.cancelled_orders")
    unique_users = serializers.IntegerField(source="global_stats.unique_users")
    average_order_value = MoneyField(
        source="average_order_value_cents", help_text="gross_revenue / total_orders."
    )
    timestamp = serializers.DateTimeField(source="taken_at")
    ingestion = IngestionSerializer(source="ingestion_view")
    redis = RedisNodeSerializer(many=True)
    currency = CurrencyField()


class ApiRootSerializer(serializers.Serializer[dict[str, str]]):
    """The browsable entry point: where each endpoint lives."""

    user_stats = serializers.CharField()
    order = serializers.CharField()
    user_orders = serializers.CharField()
    global_stats = serializers.URLField()
    top_spenders = serializers.URLField()
    top_buyers = serializers.URLField()
    by_date = serializers.CharField()
    top_products = serializers.URLField()
    product_stats = serializers.CharField()
    by_hour = serializers.URLField()
    health = serializers.URLField()
    metrics = serializers.URLField()
    schema = serializers.URLField()
    docs = serializers.URLField()


# --- Hot path: the serializers' output as plain dicts ------------------------------------------

_datetime_field = serializers.DateTimeField()


def _datetime(value: datetime | None) -> str | None:
    """DRF's own DateTimeField rendering (UTC, ``Z``), so the text is exactly the serializer's."""
    return None if value is None else _datetime_field.to_representation(value)


def user_stats_body(user: UserStats) -> dict[str, Any]:
    """``UserStatsSerializer(user).data`` without a serializer."""
    currency = shop_currency()
    money = currency.from_minor_units
    gross = user.gross_spend_cents
    return {
        "user_id": user.user_id,
        "order_count": user.order_count,
        "total_spend": money(user.net_spend_cents),
        "gross_spend": money(gross),
        "refunded": money(user.refunded_cents),
        "cancelled_orders": user.cancelled_orders,
        "average_order_value": money(average_cents(gross, user.order_count)),
        "first_order_at": _datetime(user.first_order_at),
        "last_order_at": _datetime(user.last_order_at),
        "currency": currency.code,
    }


def global_stats_body(stats: GlobalStats) -> dict[str, Any]:
    """``GlobalStatsSerializer(stats).data`` without a serializer."""
    currency = shop_currency()
    money = currency.from_minor_units
    gross = stats.gross_revenue_cents
    return {
        "total_orders": stats.total_orders,
        "total_revenue": money(stats.net_revenue_cents),
        "gross_revenue": money(gross),
        "refunded": money(stats.refunded_cents),
        "cancelled_orders": stats.cancelled_orders,
        "unique_users": stats.unique_users,
        "average_order_value": money(average_cents(gross, stats.total_orders)),
        "currency": currency.code,
    }


def top_spenders_body(rows: Iterable[Ranked]) -> list[dict[str, Any]]:
    """``TopSpenderSerializer(rows, many=True).data`` without a serializer: ``value`` is the
    user's net spend (the ranking's score)."""
    money = shop_currency().from_minor_units
    return [{"rank": r.rank, "user_id": r.user_id, "total_spend": money(r.value)} for r in rows]


def top_buyers_body(rows: Iterable[Ranked]) -> list[dict[str, Any]]:
    """``TopBuyerSerializer(rows, many=True).data`` without a serializer."""
    return [{"rank": r.rank, "user_id": r.user_id, "order_count": r.value} for r in rows]


def top_products_body(rows: Iterable[RankedProduct]) -> list[dict[str, Any]]:
    """``TopProductSerializer(rows, many=True).data`` without a serializer."""
    currency = shop_currency()
    money, code = currency.from_minor_units, currency.code
    return [
        {"rank": r.rank, "product_id": r.product_id, "units": r.units,
         "revenue": money(r.revenue_cents), "currency": code}
        for r in rows
    ]  # fmt: skip


def product_stats_body(product: ProductFigures) -> dict[str, Any]:
    """``ProductStatsSerializer(product).data`` without a serializer."""
    currency = shop_currency()
    return {
        "product_id": product.product_id,
        "units": product.units,
        "revenue": currency.from_minor_units(product.revenue_cents),
        "currency": currency.code,
    }


def date_range_body(
    start: date,
    end: date,
    days: list[DayStats],
    interval: str = "day",
    previous: tuple[date, date, list[DayStats]] | None = None,
) -> dict[str, Any]:
    """``DateRangeStatsSerializer``'s body: the range, its totals and one entry per bucket
    (``days``, ``weeks`` or ``months``: ``days`` summed by ``intervals.buckets``); with
    ``previous`` (its range and days) the same for the period before, under ``previous``."""
    currency = shop_currency()
    body = {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "interval": interval,
        "currency": currency.code,
        **_period_figures(days, interval, currency.from_minor_units),
    }
    if previous is not None:
        first, last, before = previous
        body["previous"] = {
            "start_date": first.isoformat(),
            "end_date": last.isoformat(),
            **_period_figures(before, interval, currency.from_minor_units),
        }
    return body


def _period_figures(
    days: list[DayStats], interval: str, money: Callable[[int], Decimal]
) -> dict[str, Any]:
    """The totals and one entry per bucket. A year of days is 1,100 amounts: each read once
    from its field (no property); a day without refunds has its gross as its net and the one
    shared zero as its refunds (a ``Decimal`` is immutable), two amounts fewer to make; the
    totals are summed in the same loop and the dates' text is cached (``_iso``)."""
    zero = money(0)
    rows: list[dict[str, Any]] = []
    append, iso = rows.append, _iso
    orders = gross = refunded = 0
    for d in buckets(days, interval):
        day_orders, day_gross, day_refunded = (
            d.total_orders,
            d.total_revenue_cents,
            d.refunded_cents,
        )
        orders += day_orders
        gross += day_gross
        gross_money = money(day_gross)
        if day_refunded:
            refunded += day_refunded
            net_money, refunded_money = money(day_gross - day_refunded), money(day_refunded)
        else:
            net_money, refunded_money = gross_money, zero
        append(
            {
                "date": iso(d.day),
                "total_orders": day_orders,
                "total_revenue": net_money,
                "gross_revenue": gross_money,
                "refunded": refunded_money,
            }
        )
    return {
        "total_orders": orders,
        "total_revenue": money(gross - refunded),
        "gross_revenue": money(gross),
        "refunded": money(refunded),
        BUCKET_LISTS[interval]: rows,
    }


@functools.lru_cache(maxsize=4096)
def _iso(day: date) -> str:
    """A bucket's date as text: a dashboard or client asks for the same days again and
    again, and a year's ``isoformat`` calls were a sixth of building its body."""
    return day.isoformat()


def by_hour_body(
    day: date,
    time_zone: str,
    hours: list[HourStats],
    previous: tuple[date, list[HourStats]] | None = None,
) -> dict[str, Any]:
    """``HourRangeSerializer``'s body: the day, its totals and every local hour (its start
    with its offset: the repeated hour of a daylight-saving change is told apart)."""
    currency = shop_currency()
    body: dict[str, Any] = {
        "date": day.isoformat(),
        "time_zone": time_zone,
        "currency": currency.code,
        **_hour_figures(hours, currency.from_minor_units),
    }
    if previous is not None:
        before, before_hours = previous
        body["previous"] = {
            "date": before.isoformat(),
            **_hour_figures(before_hours, currency.from_minor_units),
        }
    return body


def _hour_figures(hours: list[HourStats], money: Callable[[int], Decimal]) -> dict[str, Any]:
    """The day's totals and one entry per hour, in by-date's order: orders, net, gross,
    refunded."""
    gross = sum(h.gross_revenue_cents for h in hours)
    refunded = sum(h.refunded_cents for h in hours)
    return {
        "total_orders": sum(h.total_orders for h in hours),
        "total_revenue": money(gross - refunded),
        "gross_revenue": money(gross),
        "refunded": money(refunded),
        "hours": [
            {
                "hour": h.start.isoformat(),
                "total_orders": h.total_orders,
                "total_revenue": money(h.net_revenue_cents),
                "gross_revenue": money(h.gross_revenue_cents),
                "refunded": money(h.refunded_cents),
            }
            for h in hours
        ],
    }


def metrics_body(snapshot: MetricsSnapshot) -> dict[str, Any]:
    """``MetricsSerializer(snapshot).data`` without a serializer."""
    g, i, waiting = snapshot.global_stats, snapshot.ingestion, snapshot.waiting
    lag = snapshot.consumer_lag_seconds
    currency = shop_currency()
    money = currency.from_minor_units
    return {
        "total_orders": g.total_orders,
        "total_revenue": money(g.net_revenue_cents),
        "gross_revenue": money(g.gross_revenue_cents),
        "refunded": money(g.refunded_cents),
        "cancelled_orders": g.cancelled_orders,
        "unique_users": g.unique_users,
        "average_order_value": money(snapshot.average_order_value_cents),
        "timestamp": _datetime(snapshot.taken_at),
        "ingestion": {
            "received": i.received,
            "applied": i.applied,
            "duplicates": i.duplicates,
            "rejected": i.rejected,
            "rejected_by_code": dict(i.rejected_by_code),
            "events_received": i.events_received,
            "events_applied": i.events_applied,
            "events_duplicates": i.events_duplicates,
            "events_waiting": None if waiting is None else waiting.count,
            "events_orphaned": None if waiting is None else waiting.orphans,
            "last_batch_at": _datetime(i.last_batch_at),
            "consumer_heartbeat_at": _datetime(i.heartbeat_at),
            "consumer_lag_seconds": None if lag is None else float(lag),
        },
        "redis": [
            {
                "node": n.node,
                "reachable": n.reachable,
                "version": n.version,
                "eviction_policy": n.eviction_policy,
            }
            for n in snapshot.redis
        ],
        "currency": currency.code,
    }
