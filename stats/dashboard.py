"""The staff dashboard at /admin/dashboard/: today by hour against yesterday, 30 days of orders
and revenue, then other apps' panels.

Days and hours are the shop's (``STATS_TIME_ZONE``), as the stats API's by-date and by-hour.
Hours show orders and what they were worth when placed (gross), the trade of each hour; the
refunds of each hour are in the API's by-hour (``refunded``, net beside it).

Revenue is shown gross and net, as the stats API serves it (Shopify's rule): a day's gross is
what the orders placed on it were worth, its refunds those that occurred on it, net the
difference (below zero on a day whose refunds exceed its sales: the revenue axis then goes
below zero too).

The chart is SVG built here on the server (no CDN, no JavaScript), so it renders in any browser
the admin runs in, prints, and shows exact money in its labels and tooltips. Stats come from
``stats.store`` (the days in one HMGET, the two days' hours in another); a Redis outage shows
a message instead of a 500, because the panels other apps add (rejects by reason, from the
database) are still useful then.
Staff need the ``stats.view_stats`` permission to see it (403 otherwise), like the stats API.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from orderpipe.money import shop_currency
from stats.models import VIEW_STATS
from stats.store import DayStats, GlobalStats, HourStats, StoreUnavailableError, get_store

logger = logging.getLogger(__name__)

DASHBOARD_DAYS = 30

# Chart geometry (SVG user units; the SVG scales to its container).
WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 96, 16, 44
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
ORDERS_COLOUR = "#79aec8"
REVENUE_COLOUR = "#ba2121"  # gross
NET_COLOUR = "#2e7d32"


def money(minor: int) -> str:
    """Exact money text in the shop's currency with thousands separators: 123456789 USD is
    '1,234,567.89', 123456789 JPY '123,456,789'."""
    return f"{shop_currency().from_minor_units(minor):,}"


GRID_STEPS = 4
_NICE_TENTHS = (10, 15, 20, 25, 30, 40, 50, 60, 75, 80)


def axis_step(value: int, steps: int = GRID_STEPS) -> int:
    """The smallest readable whole step (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30, …) such that
    ``steps`` of them reach ``value``: grid lines then fall on round, exact numbers."""
    need = max(1, -(-value // steps))
    magnitude = 1
    while True:
        for tenths in _NICE_TENTHS:
            step, remainder = divmod(tenths * magnitude, 10)
            if not remainder and step >= need:
                return step
        magnitude *= 10


@dataclass(frozen=True, slots=True)
class Scale:
    """A value axis of the chart: ``GRID_STEPS`` grid lines ``step`` apart, from ``bottom``
    (0, or a multiple of ``step`` below it) at the bottom of the plot to ``top`` at its top."""

    step: int
    bottom: int = 0

    @property
    def top(self) -> int:
        return self.bottom + self.step * GRID_STEPS

    def tick(self, index: int) -> int:
        """The value of the ``index``-th grid line from the bottom."""
        return self.bottom + self.step * index

    def y(self, value: int) -> float:
        return TOP + PLOT_H - PLOT_H * (value - self.bottom) / (self.top - self.bottom)


def _orders_scale(days: list[DayStats]) -> Scale:
    return Scale(axis_step(max((d.total_orders for d in days), default=0)))


def _revenue_scale(days: list[DayStats]) -> Scale:
    """Gross and net of the days (net may be below zero on a refunds day)."""
    high = max((max(d.gross_revenue_cents, d.net_revenue_cents) for d in days), default=0)
    low = min((d.net_revenue_cents for d in days), default=0)
    return _money_scale(high, low)


def _money_scale(high: int, low: int) -> Scale:
    """Amounts in minor units from ``low`` to ``high``, stepped in whole currency units so the
    tick labels are round amounts; from 0 up, or from the grid line at or below ``low`` when
    it is below zero (zero then falls on a grid line)."""
    high, low = max(high, 0), min(low, 0)
    unit = 10 ** shop_currency().minor_units
    step = axis_step(-(-(high - low) // unit))
    while True:
        minor_step = step * unit
        bottom = low // minor_step * minor_step
        if bottom + minor_step * GRID_STEPS >= high:
            return Scale(minor_step, bottom)
        step = axis_step(step * GRID_STEPS + 1)


@dataclass(frozen=True, slots=True)
class Columns:
    """The x axis: one slot per day, a bar centred in each."""

    slot: float

    @classmethod
    def for_days(cls, days: Sequence[object]) -> Columns:
        return cls(PLOT_W / max(len(days), 1))

    @property
    def bar_width(self) -> float:
        return max(self.slot * 0.7, 1.0)

    def bar_left(self, i: int) -> float:
        return LEFT + i * self.slot + (self.slot - self.bar_width) / 2

    def centre(self, i: int) -> float:
        return LEFT + i * self.slot + self.slot / 2


def chart_svg(days: list[DayStats]) -> SafeString:
    """Bars for orders per day (left axis), lines for gross and net revenue (right axis), on a
    grid.

    Every bar has a ``<title>`` tooltip with the exact day, count, gross, refunds and net; the
    axis ends are rounded to readable numbers so the tick labels are exact too.
    """
    orders, revenue, columns = _orders_scale(days), _revenue_scale(days), Columns.for_days(days)
    parts = [
        _svg_open(days),
        *_grid(orders, revenue),
        *_bars_and_day_labels(days, orders, columns),
        *_revenue_line(days, revenue, columns, "gross"),
        *_revenue_line(days, revenue, columns, "net"),
        _axes(f"day ({settings.STATS_TIME_ZONE.key})"),
        "</svg>",
    ]
    return mark_safe("".join(parts))  # noqa: S308 - every part is format_html-escaped


def _svg_open(days: list[DayStats]) -> SafeString:
    """The ``<svg>`` element's opening tag and the chart's accessible title."""
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" '
        'role="img" aria-labelledby="chart-title" class="dashboard-chart" '
        'style="max-width: {}px; font: 11px sans-serif">'
        '<title id="chart-title">Orders and revenue per day, {} to {}</title>',
        WIDTH,
        HEIGHT,
        WIDTH,
        days[0].day.isoformat() if days else "",
        days[-1].day.isoformat() if days else "",
    )


def _grid(orders: Scale, revenue: Scale) -> Iterator[SafeString]:
    """A grid line per step, its orders tick on the left and its revenue tick on the right."""
    for step in range(GRID_STEPS + 1):
        y = TOP + PLOT_H - PLOT_H * step / GRID_STEPS
        yield format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>'
            '<text x="{}" y="{}" text-anchor="end" class="tick-orders">{}</text>'
            '<text x="{}" y="{}" text-anchor="start" fill="{}" class="tick-revenue">'
            "{}</text>",
            LEFT,
            _f(y),
            LEFT + PLOT_W,
            _f(y),
            LEFT - 6,
            _f(y + 4),
            f"{orders.step * step:,}",
            LEFT + PLOT_W + 6,
            _f(y + 4),
            REVENUE_COLOUR,
            money(revenue.tick(step)),
        )


def _bars_and_day_labels(
    days: list[DayStats], orders: Scale, columns: Columns
) -> Iterator[SafeString]:
    """A bar per day; under every 5th day and the last one, its date (MM-DD)."""
    for i, day in enumerate(days):
        yield _bar(day, columns.bar_left(i), orders.y(day.total_orders), columns.bar_width)
        if i % 5 == 0 or i == len(days) - 1:
            yield _day_label(day, columns.centre(i))


def _bar(day: DayStats, x: float, y: float, width: float) -> SafeString:
    """One day's orders as a bar, with the exact day, count, gross, refunds and net in its
    tooltip."""
    amount = shop_currency().from_minor_units
    return format_html(
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="bar" data-date="{}" '
        'data-orders="{}" data-gross="{}" data-refunded="{}" data-net="{}">'
        "<title>{}: {} order{}, gross {}, refunded {}, net {}</title></rect>",
        _f(x),
        _f(y),
        _f(width),
        _f(TOP + PLOT_H - y),
        ORDERS_COLOUR,
        day.day.isoformat(),
        day.total_orders,
        amount(day.gross_revenue_cents),
        amount(day.refunded_cents),
        amount(day.net_revenue_cents),
        day.day.isoformat(),
        day.total_orders,
        "" if day.total_orders == 1 else "s",
        money(day.gross_revenue_cents),
        money(day.refunded_cents),
        money(day.net_revenue_cents),
    )


def _day_label(day: DayStats, x: float) -> SafeString:
    return format_html(
        '<text x="{}" y="{}" text-anchor="middle">{}</text>',
        _f(x),
        TOP + PLOT_H + 16,
        day.day.strftime("%m-%d"),
    )


# The two revenue lines: (colour, dash pattern) of gross and of net.
_LINES = {"gross": (REVENUE_COLOUR, "none"), "net": (NET_COLOUR, "6 3")}


def _revenue_line(
    days: list[DayStats], revenue: Scale, columns: Columns, which: str
) -> Iterator[SafeString]:
    """Gross or net revenue per day as a line over the bars, with a dot (and its tooltip)
    per day."""
    if not days:
        return
    colour, dashes = _LINES[which]
    values = [d.gross_revenue_cents if which == "gross" else d.net_revenue_cents for d in days]
    points = [(columns.centre(i), revenue.y(v)) for i, v in enumerate(values)]
    yield format_html(
        '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" '
        'stroke-dasharray="{}" class="revenue {}"/>',
        " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
        colour,
        dashes,
        which,
    )
    yield format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="3" fill="{}" class="{}"><title>{}: {} {}</title></circle>',
        (
            (_f(x), _f(y), colour, which, d.day.isoformat(), which, money(v))
            for (x, y), d, v in zip(points, days, values, strict=True)
        ),
    )


def _axes(x_title: str) -> SafeString:
    """The plot's frame: the x axis (titled ``x_title``), the orders axis (left), the revenue
    axis (right), and their titles."""
    return format_html(
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#666"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#666"/>'
        '<line x1="{r}" y1="{t}" x2="{r}" y2="{b}" stroke="{c}"/>'
        '<text x="{cx}" y="{h}" text-anchor="middle">{x}</text>'
        '<text transform="translate(14,{cy}) rotate(-90)" text-anchor="middle" '
        'fill="{o}">orders</text>'
        '<text transform="translate({rx},{cy}) rotate(90)" text-anchor="middle" '
        'fill="{c}">revenue</text>',
        l=LEFT,
        r=LEFT + PLOT_W,
        t=TOP,
        b=TOP + PLOT_H,
        c=REVENUE_COLOUR,
        o="#417690",
        cx=_f(LEFT + PLOT_W / 2),
        cy=_f(TOP + PLOT_H / 2),
        h=HEIGHT - 6,
        rx=WIDTH - 12,
        x=x_title,
    )


def _f(value: float) -> str:
    return f"{value:.1f}"


# --- Today by hour against yesterday ---------------------------------------------------------

TODAY_COLOUR = "#417690"
YESTERDAY_COLOUR = "#c4dce8"
# The two days' series: (label, bar colour, gross line's dash pattern).
_DAYS = (("yesterday", YESTERDAY_COLOUR, "6 3"), ("today", TODAY_COLOUR, "none"))


def hours_chart_svg(today: list[HourStats], yesterday: list[HourStats]) -> SafeString:
    """Orders per local hour as two bars per slot, yesterday's (light) then today's (left
    axis), and each day's gross revenue as a line (right axis; yesterday's dashed).

    Slots pair the two days' hours in order, 0:00 with 0:00: on a daylight-saving day (23 or
    25 hours) the hours after the change pair with the one an hour apart, and each bar's
    tooltip names its own hour with its offset. Gross: what was sold in each hour.
    """
    both = (yesterday, today)
    orders = Scale(axis_step(max((h.total_orders for d in both for h in d), default=0)))
    revenue = _money_scale(max((h.gross_revenue_cents for d in both for h in d), default=0), 0)
    columns = Columns.for_days(range(max(len(today), len(yesterday))))
    parts = [
        _hours_svg_open(today, yesterday),
        *_grid(orders, revenue),
        *_hour_bars(both, orders, columns),
        *_hour_labels(today if len(today) >= len(yesterday) else yesterday, columns),
        *_hour_lines(both, revenue, columns),
        _axes(f"hour ({settings.STATS_TIME_ZONE.key})"),
        "</svg>",
    ]
    return mark_safe("".join(parts))  # noqa: S308 - every part is format_html-escaped


def _hours_svg_open(today: list[HourStats], yesterday: list[HourStats]) -> SafeString:
    def day(hours: list[HourStats]) -> str:
        return hours[0].start.date().isoformat() if hours else ""

    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" '
        'role="img" aria-labelledby="hours-chart-title" class="dashboard-chart hours-chart" '
        'style="max-width: {}px; font: 11px sans-serif">'
        '<title id="hours-chart-title">Orders and gross revenue per hour, {} against {}</title>',
        WIDTH,
        HEIGHT,
        WIDTH,
        day(today),
        day(yesterday),
    )


def _hour_bars(
    both: tuple[list[HourStats], list[HourStats]], orders: Scale, columns: Columns
) -> Iterator[SafeString]:
    """Per slot, yesterday's bar in its left half and today's in its right half."""
    width = columns.bar_width / 2
    for side, ((label, colour, _dashes), hours) in enumerate(zip(_DAYS, both, strict=True)):
        for i, hour in enumerate(hours):
            yield _hour_bar(hour, label, colour, columns.bar_left(i) + side * width, orders, width)


def _hour_bar(
    hour: HourStats, label: str, colour: str, x: float, orders: Scale, width: float
) -> SafeString:
    y = orders.y(hour.total_orders)
    return format_html(
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="hour-bar {}" '
        'data-hour="{}" data-orders="{}" data-gross="{}">'
        "<title>{} ({}): {} order{}, gross {}</title></rect>",
        _f(x),
        _f(y),
        _f(width),
        _f(TOP + PLOT_H - y),
        colour,
        label,
        hour.start.isoformat(),
        hour.total_orders,
        shop_currency().from_minor_units(hour.gross_revenue_cents),
        hour.start.strftime("%Y-%m-%d %H:%M %z"),
        label,
        hour.total_orders,
        "" if hour.total_orders == 1 else "s",
        money(hour.gross_revenue_cents),
    )


def _hour_labels(hours: list[HourStats], columns: Columns) -> Iterator[SafeString]:
    """Under every 3rd slot, the local time its hour began (HH:MM)."""
    for i, hour in enumerate(hours):
        if i % 3 == 0:
            yield format_html(
                '<text x="{}" y="{}" text-anchor="middle" class="hour-label">{}</text>',
                _f(columns.centre(i)),
                TOP + PLOT_H + 16,
                hour.start.strftime("%H:%M"),
            )


def _hour_lines(
    both: tuple[list[HourStats], list[HourStats]], revenue: Scale, columns: Columns
) -> Iterator[SafeString]:
    """Each day's gross revenue per hour as a line through its slots' centres."""
    for (label, _colour, dashes), hours in zip(_DAYS, both, strict=True):
        if hours:
            yield format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" '
                'stroke-dasharray="{}" class="gross {}"/>',
                " ".join(
                    f"{columns.centre(i):.1f},{revenue.y(h.gross_revenue_cents):.1f}"
                    for i, h in enumerate(hours)
                ),
                REVENUE_COLOUR,
                dashes,
                label,
            )


def hour_rows(
    today: list[HourStats], yesterday: list[HourStats]
) -> list[tuple[str, str, str, str, str]]:
    """The hours' table: per slot, the local time and today's then yesterday's orders and
    gross (blank where one day has no such slot: a 23- or 25-hour day)."""
    rows = []
    for i in range(max(len(today), len(yesterday))):
        now, then = _hour_cells(today, i), _hour_cells(yesterday, i)
        label = (today[i] if i < len(today) else yesterday[i]).start.strftime("%H:%M %z")
        rows.append((label, *now, *then))
    return rows


def _hour_cells(hours: list[HourStats], i: int) -> tuple[str, str]:
    if i >= len(hours):
        return "", ""
    return str(hours[i].total_orders), money(hours[i].gross_revenue_cents)


# A panel another app adds below the statistics: a callable that returns the context of its
# section, with "template" naming the template that renders it (the section reads ``panel.…``).
Panel = Callable[[HttpRequest], dict[str, Any]]


def split_days(hours: list[HourStats], day: date) -> tuple[list[HourStats], list[HourStats]]:
    """The hours before ``day`` and those of it (``hours`` in order, local starts)."""
    split = next((i for i, h in enumerate(hours) if h.start.date() == day), len(hours))
    return hours[:split], hours[split:]


def dashboard_view(request: HttpRequest, panels: Sequence[Panel] = ()) -> HttpResponse:
    """Today by hour against yesterday (one read of both days' hours), the statistics of the
    last 30 days, then each of ``panels`` (``orderpipe/urls.py``
    adds the orders app's rejects, so that stats need not know about orders)."""
    if not request.user.has_perm(VIEW_STATS):
        raise PermissionDenied(f"The dashboard needs the {VIEW_STATS} permission.")
    today = timezone.now().astimezone(settings.STATS_TIME_ZONE).date()  # the shop's today
    start = today - timedelta(days=DASHBOARD_DAYS - 1)
    yesterday = today - timedelta(days=1)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Pipeline dashboard",
        "start": start,
        "end": today,
        "days": None,
        "stats_error": None,
        "time_zone": settings.STATS_TIME_ZONE.key,
    }
    try:
        store = get_store()
        days = store.by_date(start, today)
        totals: GlobalStats = store.global_stats()
        yesterday_hours, today_hours = split_days(store.by_hour(yesterday, today), today)
    except StoreUnavailableError as exc:
        logger.warning("dashboard: Redis unavailable: %s", exc)
        context["stats_error"] = str(exc)
    else:
        gross = sum(d.gross_revenue_cents for d in days)
        refunded = sum(d.refunded_cents for d in days)
        context.update(
            days=days,
            daily_rows=[
                (
                    d.day,
                    d.total_orders,
                    money(d.gross_revenue_cents),
                    money(d.refunded_cents),
                    money(d.net_revenue_cents),
                )
                for d in reversed(days)
            ],
            chart=chart_svg(days),
            totals={
                "orders": totals.total_orders,
                "revenue": money(totals.net_revenue_cents),
                "gross": money(totals.gross_revenue_cents),
                "refunded": money(totals.refunded_cents),
                "cancelled": totals.cancelled_orders,
                "users": totals.unique_users,
            },
            window={
                "orders": sum(d.total_orders for d in days),
                "revenue": money(gross - refunded),
                "gross": money(gross),
                "refunded": money(refunded),
            },
            by_date_url=f"{reverse('stats-by-date')}?"
            + urlencode({"start_date": start.isoformat(), "end_date": today.isoformat()}),
            hours_chart=hours_chart_svg(today_hours, yesterday_hours),
            hour_rows=hour_rows(today_hours, yesterday_hours),
            hours_totals={
                "today_orders": sum(h.total_orders for h in today_hours),
                "today_gross": money(sum(h.gross_revenue_cents for h in today_hours)),
                "yesterday_orders": sum(h.total_orders for h in yesterday_hours),
                "yesterday_gross": money(sum(h.gross_revenue_cents for h in yesterday_hours)),
            },
            by_hour_url=f"{reverse('stats-by-hour')}?"
            + urlencode({"date": today.isoformat(), "compare": "previous"}),
        )
    context["panels"] = [panel(request) for panel in panels]
    return TemplateResponse(request, "admin/stats/dashboard.html", context)


def dashboard(*panels: Panel) -> Callable[[HttpRequest], HttpResponse]:
    """The dashboard as an admin view: staff only (others are sent to the admin login), never
    cached, CSRF-protected; staff without stats.view_stats get a 403."""
    return admin.site.admin_view(functools.partial(dashboard_view, panels=panels))


# The admin index links to the dashboard. An app template named admin/index.html would lose to
# django.contrib.admin's own (it is earlier in INSTALLED_APPS), hence a template of our own.
admin.site.index_template = "admin/stats/index.html"
