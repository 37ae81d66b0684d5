"""The staff dashboard's figures: staff only, exact totals, every day of the window, and the
chart's labels. The orders app's rejects panel on it, and the page when Redis is down, are in
tests/test_dashboard_rejects.py."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from orders.validation import Order
from stats.dashboard import axis_step, chart_svg, hours_chart_svg, money
from stats.store import AggregateStore, DayStats, HourStats
from tests.event_helpers import apply_events, cancel, refund
from tests.ingestion_helpers import make_order

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"
SVG = "{http://www.w3.org/2000/svg}"


def order(order_id: str, user_id: str, cents: int, day: date) -> Order:
    return make_order(order_id, user_id, cents, datetime.combine(day, time(12), tzinfo=UTC))


def today() -> date:
    return datetime.now(UTC).date()


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert match, element_id
    return match.group(1)


def daily_rows(html: str) -> list[tuple[str, ...]]:
    """The exact figures' table: day, orders, gross, refunded, net."""
    num = r'<td class="num">([-\d,.]+)</td>'
    return re.findall(rf"<tr><td>(\d{{4}}-\d\d-\d\d)</td>{num * 4}</tr>", html)


def test_anonymous_users_are_sent_to_the_admin_login(client: Client) -> None:
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/dashboard/"


def test_non_staff_users_are_sent_to_the_admin_login(client: Client, django_user_model) -> None:
    client.force_login(django_user_model.objects.create_user("shopper", password="x"))

    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def staff(django_user_model, username: str, *, can_view_stats: bool):
    from django.contrib.auth.models import Group, Permission

    user = django_user_model.objects.create_user(username, password="x", is_staff=True)
    if can_view_stats:
        group = Group.objects.create(name=f"{username}-group")
        group.permissions.add(Permission.objects.get(codename="view_stats"))
        user.groups.add(group)
    return user


def test_staff_without_the_stats_permission_get_403_and_no_link(
    client: Client, django_user_model, app_store: AggregateStore
) -> None:
    client.force_login(staff(django_user_model, "support", can_view_stats=False))

    response = client.get(URL)
    index = client.get("/admin/")

    assert response.status_code == 403
    assert index.status_code == 200
    assert b"/admin/dashboard/" not in index.content


def test_staff_granted_the_stats_permission_see_the_dashboard(
    client: Client, django_user_model, app_store: AggregateStore
) -> None:
    client.force_login(staff(django_user_model, "analyst", can_view_stats=True))

    response = client.get(URL)
    index = client.get("/admin/")

    assert response.status_code == 200
    assert b'<a href="/admin/dashboard/">Dashboard' in index.content


def test_admin_index_links_to_the_dashboard(admin_client: Client) -> None:
    response = admin_client.get("/admin/")

    assert response.status_code == 200
    assert b'<a href="/admin/dashboard/">Dashboard: orders and revenue per day' in response.content


def test_dashboard_shows_exact_totals_and_thirty_days(
    admin_client: Client, app_store: AggregateStore
) -> None:
    app_store.apply_orders(
        [
            order("A", "U1", 1999, today()),
            order("B", "U2", 100_000_001, today()),
            order("C", "U1", 5, today() - timedelta(days=29)),
            order("OLD", "U3", 700, today() - timedelta(days=30)),  # outside the window
        ]
    )

    response = admin_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert text_of(html, "total-orders") == "4"
    assert text_of(html, "total-revenue") == "1,000,027.05"
    assert text_of(html, "total-gross") == "1,000,027.05"
    assert text_of(html, "total-refunded") == "0.00"
    assert text_of(html, "total-cancelled") == "0"
    assert text_of(html, "total-users") == "3"
    assert text_of(html, "window-orders") == "3"
    assert text_of(html, "window-revenue") == "1,000,020.05"
    # Every day of the window in the table, newest first, zeros included, cents exact.
    rows = daily_rows(html)
    assert len(rows) == 30
    assert rows[0] == (today().isoformat(), "2", "1,000,020.00", "0.00", "1,000,020.00")
    assert rows[1] == ((today() - timedelta(days=1)).isoformat(), "0", "0.00", "0.00", "0.00")
    assert rows[-1] == ((today() - timedelta(days=29)).isoformat(), "1", "0.05", "0.00", "0.05")
    start = (today() - timedelta(days=29)).isoformat()
    assert f'href="/stats/by-date?start_date={start}&amp;end_date={today()}"' in html
    assert "<script" not in html.split('id="dashboard"')[1]  # no JavaScript for the chart


def test_dashboards_last_day_is_today_in_the_shops_zone(
    admin_client: Client, fake_redis: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20:00 UTC on 9 August is 01:30 on the 10th in Kolkata: the 30 days end on the 10th,
    where an order of 00:30 IST counts."""
    settings.STATS_TIME_ZONE = ZoneInfo("Asia/Kolkata")
    store = AggregateStore(fake_redis, prefix=settings.REDIS_KEY_PREFIX, zone="Asia/Kolkata")
    store.apply_orders([make_order("K", "U1", 1999, datetime(2025, 8, 9, 19, 0, tzinfo=UTC))])
    monkeypatch.setattr("django.utils.timezone.now", lambda: datetime(2025, 8, 9, 20, tzinfo=UTC))

    rows = daily_rows(admin_client.get(URL).content.decode())

    assert rows[0] == ("2025-08-10", "1", "19.99", "0.00", "19.99")
    assert rows[-1][0] == "2025-07-12"


@pytest.mark.parametrize(
    ("value", "step"),
    [(0, 1), (4, 1), (5, 2), (9, 3), (17, 5), (33, 10), (41, 15), (99, 25), (291, 75), (3001, 800)],
)
def test_grid_steps_are_round_numbers(value: int, step: int) -> None:
    assert axis_step(value) == step


def test_chart_is_well_formed_svg_with_exact_labels() -> None:
    start = date(2025, 8, 1)
    days = [DayStats(start + timedelta(days=i), i % 3, i * 1001) for i in range(30)]

    svg = str(chart_svg(days))

    root = ET.fromstring(svg)
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 30
    assert bars[4].get("data-date") == "2025-08-05"
    assert (bars[4].get("data-gross"), bars[4].get("data-net")) == ("40.04", "40.04")
    title = bars[4].find(f"{SVG}title")
    assert title is not None
    assert title.text == "2025-08-05: 1 order, gross 40.04, refunded 0.00, net 40.04"
    assert bars[0].get("height") == "0.0"
    revenue_ticks = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "tick-revenue"]
    assert revenue_ticks == ["0.00", "75.00", "150.00", "225.00", "300.00"]  # max 290.29 -> 300
    order_ticks = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "tick-orders"]
    assert order_ticks == ["0", "1", "2", "3", "4"]
    assert money(123456789) == "1,234,567.89"


def test_dashboard_shows_gross_refunds_and_net_with_refunds_on_their_own_day(
    admin_client: Client, app_store: AggregateStore
) -> None:
    placed, refunded_on = today() - timedelta(days=2), today() - timedelta(days=1)
    a, b = order("A", "U1", 10000, placed), order("B", "U2", 2550, placed)
    app_store.apply_orders([a, b])
    at_noon = datetime.combine(refunded_on, time(12), tzinfo=UTC)
    apply_events(app_store, [refund("E1", a, 2500, at_noon), cancel("E2", b, 2550, at_noon)])

    response = admin_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    figures = ["total-orders", "total-revenue", "total-gross", "total-refunded"]
    figures += ["total-cancelled", "total-users", "window-orders", "window-revenue"]
    figures += ["window-gross", "window-refunded"]
    assert [text_of(html, f) for f in figures] == [
        "2", "75.00", "125.50", "50.50", "1", "2", "2", "75.00", "125.50", "50.50"
    ]  # fmt: skip
    rows = daily_rows(html)
    assert rows[:3] == [
        (today().isoformat(), "0", "0.00", "0.00", "0.00"),
        (refunded_on.isoformat(), "0", "0.00", "50.50", "-50.50"),
        (placed.isoformat(), "2", "125.50", "0.00", "125.50"),
    ]


def test_chart_draws_gross_and_net_and_its_axis_goes_below_zero_for_a_refunds_day() -> None:
    start = date(2025, 8, 1)
    days = [
        DayStats(start, 2, 29000),
        DayStats(start + timedelta(days=1), 0, 0, refunded_cents=12050),
        DayStats(start + timedelta(days=2), 1, 5000, refunded_cents=1000),
    ]

    root = ET.fromstring(str(chart_svg(days)))

    ticks = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "tick-revenue"]
    assert ticks == ["-150.00", "0.00", "150.00", "300.00", "450.00"]
    lines = {line.get("class"): line.get("points") for line in root.findall(f"{SVG}polyline")}
    assert set(lines) == {"revenue gross", "revenue net"}
    # Zero is the second grid line from the bottom: y = 16 + 260 * 3/4.
    assert [p.split(",")[1] for p in (lines["revenue net"] or "").split()] == [
        f"{16 + 260 - 260 * (29000 + 15000) / 60000:.1f}",
        f"{16 + 260 - 260 * (-12050 + 15000) / 60000:.1f}",
        f"{16 + 260 - 260 * (4000 + 15000) / 60000:.1f}",
    ]
    bar = root.findall(f"{SVG}rect")[1]
    assert (bar.get("data-gross"), bar.get("data-refunded"), bar.get("data-net")) == (
        "0.00",
        "120.50",
        "-120.50",
    )
    dots = [c.find(f"{SVG}title") for c in root.findall(f"{SVG}circle")]
    assert [d.text for d in dots if d is not None][3:] == [
        "2025-08-01: net 290.00",
        "2025-08-02: net -120.50",
        "2025-08-03: net 40.00",
    ]


def hourly_rows(html: str) -> list[tuple[str, ...]]:
    """The hours' table: local time, today's orders and gross, yesterday's orders and gross."""
    num = r'<td class="num">([-\d,.]*)</td>'
    return re.findall(rf'<tr class="hour"><td>([^<]+)</td>{num * 4}</tr>', html)


def test_dashboard_shows_today_by_hour_against_yesterday_with_exact_figures(
    admin_client: Client, fake_redis: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 15:00 New York time on 3 Nov 2025 (EST, -05:00), the day after the 25-hour day
    daylight saving ended: today's 24 hours against yesterday's 25, each hour's orders and
    gross exact, yesterday's repeated 01:00 told apart by its offset."""
    zone = ZoneInfo("America/New_York")
    settings.STATS_TIME_ZONE = zone
    store = AggregateStore(fake_redis, prefix=settings.REDIS_KEY_PREFIX, zone=zone.key)
    store.apply_orders(
        [
            make_order("T1", "U1", 1999, datetime(2025, 11, 3, 14, 10, tzinfo=UTC)),  # 09:10
            make_order("T2", "U2", 100_000_001, datetime(2025, 11, 3, 14, 50, tzinfo=UTC)),
            make_order("Y1", "U1", 500, datetime(2025, 11, 2, 5, 30, tzinfo=UTC)),  # 01:30 EDT
            make_order("Y2", "U3", 700, datetime(2025, 11, 2, 6, 30, tzinfo=UTC)),  # 01:30 EST
            make_order("OLD", "U3", 900, datetime(2025, 11, 1, 4, 0, tzinfo=UTC)),  # 31 October
        ]
    )
    now = datetime(2025, 11, 3, 20, tzinfo=UTC)
    monkeypatch.setattr("django.utils.timezone.now", lambda: now)

    response = admin_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    cards = ["today-orders", "today-gross", "yesterday-orders", "yesterday-gross"]
    assert [text_of(html, c) for c in cards] == ["2", "1,000,020.00", "2", "12.00"]
    rows = hourly_rows(html)
    assert len(rows) == 25  # yesterday's 25 hours; today has 24
    assert rows[0] == ("00:00 -0500", "0", "0.00", "0", "0.00")
    assert rows[1] == ("01:00 -0500", "0", "0.00", "1", "5.00")  # 01:00 EDT yesterday
    assert rows[2] == ("02:00 -0500", "0", "0.00", "1", "7.00")  # 01:00 EST yesterday
    assert rows[9] == ("09:00 -0500", "2", "1,000,020.00", "0", "0.00")
    assert rows[24] == ("23:00 -0500", "", "", "0", "0.00")  # yesterday's 23:00 only
    assert 'href="/stats/by-hour?date=2025-11-03&amp;compare=previous"' in html
    svg = re.search(r'<svg[^>]*class="dashboard-chart hours-chart".*?</svg>', html, re.S)
    assert svg is not None
    root = ET.fromstring(svg.group(0))
    today_bars = [r for r in root.findall(f"{SVG}rect") if r.get("class") == "hour-bar today"]
    before_bars = [r for r in root.findall(f"{SVG}rect") if r.get("class") == "hour-bar yesterday"]
    assert (len(today_bars), len(before_bars)) == (24, 25)
    assert (today_bars[9].get("data-orders"), today_bars[9].get("data-gross")) == (
        "2",
        "1000020.00",
    )
    assert today_bars[9].get("data-hour") == "2025-11-03T09:00:00-05:00"
    titles = [b.find(f"{SVG}title") for b in before_bars[1:3]]
    assert [t.text for t in titles if t is not None] == [
        "2025-11-02 01:00 -0400 (yesterday): 1 order, gross 5.00",
        "2025-11-02 01:00 -0500 (yesterday): 1 order, gross 7.00",
    ]


def test_hours_chart_is_well_formed_svg_with_round_ticks_and_a_line_per_day() -> None:
    zone = ZoneInfo("UTC")
    start = datetime(2025, 8, 1, tzinfo=zone)
    yesterday = [HourStats(start + timedelta(hours=h), h % 2, h * 1000) for h in range(24)]
    today = [HourStats(start + timedelta(days=1, hours=h), 0, 0) for h in range(24)]
    today[23] = HourStats(today[23].start, 7, 29000)

    root = ET.fromstring(str(hours_chart_svg(today, yesterday)))

    ticks = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "tick-revenue"]
    assert ticks == ["0.00", "75.00", "150.00", "225.00", "300.00"]  # max 290.00 -> 300
    orders = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "tick-orders"]
    assert orders == ["0", "2", "4", "6", "8"]
    labels = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "hour-label"]
    assert labels == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]
    lines = {line.get("class") for line in root.findall(f"{SVG}polyline")}
    assert lines == {"gross today", "gross yesterday"}
    assert len(root.findall(f"{SVG}rect")) == 48
