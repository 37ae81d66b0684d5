"""Days grouped into the buckets of ``/stats/by-date``'s ``interval``, and the period just
before a range (``compare=previous``). Pure: dates in, dates and sums out.

A week is an ISO week (Monday to Sunday), a month a calendar month; a bucket is named by its
first day (``date``) and sums only the days of the request inside it, so the first and last
buckets of a range that starts mid-week or ends mid-month are partial. The period before a
range is as long as the range and ends the day before it: the same number of days, or, for
``interval=month`` over whole calendar months, the same number of months (March to May is
compared with December to February, not with the 92 days before).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from stats.store import DayStats

INTERVALS = ("day", "week", "month")
# The name of a body's list of buckets, per interval.
BUCKET_LISTS = {"day": "days", "week": "weeks", "month": "months"}
# No response lists more buckets than this (per period: with compare=previous each bucket's
# period and the one before are listed side by side).
MAX_BUCKETS = 366


def bucket_start(day: date, interval: str) -> date:
    """The first day of the bucket ``day`` falls in: itself, its ISO week's Monday, or the
    first of its month. ``OverflowError`` for a Monday before 0001-01-01 (never: that day
    is a Monday)."""
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def bucket_count(start: date, end: date, interval: str) -> int:
    """How many buckets the range from ``start`` to ``end`` (inclusive) touches."""
    if interval == "week":
        return (bucket_start(end, "week") - bucket_start(start, "week")).days // 7 + 1
    if interval == "month":
        return (end.year - start.year) * 12 + end.month - start.month + 1
    return (end - start).days + 1


def buckets(days: Iterable[DayStats], interval: str) -> list[DayStats]:
    """``days`` (in date order) summed per bucket, each named by its first day."""
    if interval == "day":
        return list(days)
    out: list[DayStats] = []
    for day in days:
        first = bucket_start(day.day, interval)
        if out and out[-1].day == first:
            last = out[-1]
            out[-1] = DayStats(
                first,
                last.total_orders + day.total_orders,
                last.total_revenue_cents + day.total_revenue_cents,
                last.refunded_cents + day.refunded_cents,
            )
        else:
            out.append(DayStats(first, day.total_orders, day.total_revenue_cents,
                                day.refunded_cents))  # fmt: skip
    return out


def _last_of_month(day: date) -> date:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def previous_period(start: date, end: date, interval: str) -> tuple[date, date]:
    """The period just before ``start`` to ``end``, as long (see the module); ``OverflowError``
    when it would start before 0001-01-01."""
    if interval == "month" and start.day == 1 and end == _last_of_month(end):
        months = bucket_count(start, end, "month")
        index = start.year * 12 + start.month - 1 - months
        if index < 12:  # before January of year 1
            raise OverflowError("date value out of range")
        return date(index // 12, index % 12 + 1, 1), start - timedelta(days=1)
    span = end - start + timedelta(days=1)
    return start - span, start - timedelta(days=1)
