"""Buckets of /stats/by-date (ISO weeks, calendar months) and the period before a range."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from stats.api.intervals import bucket_count, bucket_start, buckets, previous_period
from stats.store import DayStats


@pytest.mark.parametrize(
    ("day", "interval", "first"),
    [
        (date(2026, 12, 31), "week", date(2026, 12, 28)),  # ISO week 53 of 2026
        (date(2027, 1, 3), "week", date(2026, 12, 28)),  # its Sunday, in the next year
        (date(2027, 1, 4), "week", date(2027, 1, 4)),  # week 1 of 2027 starts on a Monday
        (date(2024, 2, 29), "month", date(2024, 2, 1)),
        (date(2024, 2, 29), "day", date(2024, 2, 29)),
        (date(1, 1, 7), "week", date(1, 1, 1)),  # 0001-01-01 is a Monday
    ],
)
def test_a_bucket_starts_on_its_weeks_monday_or_its_months_first(
    day: date, interval: str, first: date
) -> None:
    assert bucket_start(day, interval) == first


@pytest.mark.parametrize(
    ("start", "end", "interval", "count"),
    [
        (date(2026, 12, 29), date(2027, 1, 5), "week", 2),  # Tuesday to Tuesday
        (date(2025, 1, 6), date(2032, 1, 11), "week", 366),  # 366 weeks later, less a day
        (date(2025, 1, 6), date(2032, 1, 12), "week", 367),
        (date(2000, 1, 31), date(2030, 6, 1), "month", 366),
        (date(2024, 1, 1), date(2024, 12, 31), "day", 366),
    ],
)
def test_bucket_count_is_every_week_or_month_the_range_touches(
    start: date, end: date, interval: str, count: int
) -> None:
    assert bucket_count(start, end, interval) == count


def test_weeks_sum_only_the_days_given_and_are_named_by_their_monday() -> None:
    sunday = date(2026, 12, 27)
    days = [DayStats(sunday + timedelta(days=i), i, 100 * i, i) for i in range(6)]  # to Fri

    assert buckets(days, "week") == [
        DayStats(date(2026, 12, 21), 0, 0, 0),  # the Sunday alone
        DayStats(date(2026, 12, 28), 15, 1500, 15),
    ]


@pytest.mark.parametrize(
    ("start", "end", "interval", "before"),
    [
        (date(2025, 8, 10), date(2025, 8, 11), "day", (date(2025, 8, 8), date(2025, 8, 9))),
        (date(2025, 3, 1), date(2025, 5, 31), "month", (date(2024, 12, 1), date(2025, 2, 28))),
        (date(2024, 3, 1), date(2024, 3, 31), "month", (date(2024, 2, 1), date(2024, 2, 29))),
        # not whole months: as many days
        (date(2025, 3, 15), date(2025, 4, 14), "month", (date(2025, 2, 12), date(2025, 3, 14))),
        (date(2025, 1, 6), date(2025, 1, 19), "week", (date(2024, 12, 23), date(2025, 1, 5))),
    ],
)
def test_the_period_before_is_as_long_and_ends_the_day_before(
    start: date, end: date, interval: str, before: tuple[date, date]
) -> None:
    assert previous_period(start, end, interval) == before


@pytest.mark.parametrize("interval", ["day", "month"])
def test_no_period_before_the_first_of_year_one(interval: str) -> None:
    with pytest.raises(OverflowError):
        previous_period(date(1, 1, 1), date(1, 1, 31), interval)
