"""Epoch milliseconds, the one time format both apps exchange; the shop's time zone names, and
the one rule of which local day an instant belongs to.

SQS stamps messages in epoch milliseconds, and Redis keeps order times and heartbeats in them:
``orders`` and ``stats`` both convert, and neither app may import the other's modules for it.
Exact integer arithmetic (timedelta division), never floats. The ledger keeps UTC instants;
``local_day`` turns one into the shop's calendar day (``STATS_TIME_ZONE``) wherever an
aggregate is derived from it: the apply script's arguments, and reconcile's unapplied rows (the
database's ``TruncDate(..., tzinfo=zone)`` is the same rule for rebuild's GROUP BYs).
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from importlib import resources

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly."""
    return (moment - EPOCH) // _MILLISECOND


def from_epoch_ms(millis: int) -> datetime:
    """The UTC moment ``millis`` milliseconds after the Unix epoch."""
    return EPOCH + timedelta(milliseconds=millis)


def local_day(moment: datetime, zone: tzinfo) -> date:
    """The calendar date of ``moment`` (an aware instant) in ``zone``, daylight saving
    included: 2025-03-09T04:30Z is 2025-03-08 in America/New_York (23:30 EST), 2025-08-09T18:30Z
    is 2025-08-10 in Asia/Kolkata (+05:30)."""
    try:
        return moment.astimezone(zone).date()
    except OverflowError:  # 0001-01-01 west of UTC, 9999-12-31 east of it: the calendar's ends
        return date.min if moment.year == 1 else date.max


_HOUR = timedelta(hours=1)


def _midnight(day: date, zone: tzinfo) -> datetime:
    """When ``day`` begins in ``zone``, in UTC (where midnight is skipped, the instant the
    clocks jump from it; before 0001-01-01 UTC, that)."""
    try:
        return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=4096)
def _hour_keys(day: date, zone: tzinfo) -> tuple[datetime, tuple[str, ...], str]:
    """``day``'s midnight in ``zone`` (UTC), the names of the (at most 25) hours from it, and
    the day's ISO date. Cached: a batch's orders, and a rebuild's, share few days; naming an
    hour is then an index (2 us an order, where formatting each took 12)."""
    midnight = _midnight(day, zone)
    names = []
    for index in range(25):
        try:
            start = midnight + index * _HOUR
        except OverflowError:  # 9999-12-31
            break
        names.append(start.isoformat(timespec="minutes")[:16])
    return midnight, tuple(names), day.isoformat()


def hour_key(moment: datetime, zone: tzinfo) -> str:
    """The local hour ``moment`` falls in, in ``zone`` (one of its day's ``local_hours``),
    named by the UTC instant it began (``YYYY-MM-DDTHH:MM``): unique even for the hour a
    daylight-saving change repeats (01:00 EDT is ``05:00``, 01:00 EST ``06:00``), and at :30
    or :45 past a UTC hour in a zone such as Asia/Kolkata (10:00 IST is ``04:30``)."""
    return day_and_hour(moment, zone)[1]


def day_and_hour(moment: datetime, zone: tzinfo) -> tuple[str, str]:
    """``local_day(moment, zone)`` as an ISO date and ``hour_key(moment, zone)``, from one
    conversion to ``zone`` (the apply script's arguments need both for every order)."""
    midnight, names, day = _hour_keys(local_day(moment, zone), zone)
    # Clamped only at the calendar's ends (a local day local_day clamped).
    return day, names[min(max((moment - midnight) // _HOUR, 0), len(names) - 1)]


def local_hours(day: date, zone: tzinfo) -> list[datetime]:
    """Every local hour of ``day`` in ``zone``, as aware local datetimes in order: hours of
    real time from its midnight to the next, so 24, or 23 and 25 on the days daylight saving
    starts and ends (a repeated hour is there twice, with its two offsets; after a change
    that is not a whole hour, as Australia/Lord_Howe's, hours begin at :30)."""
    start = _midnight(day, zone)
    end = _midnight(day + timedelta(days=1), zone)
    hours = []
    while start < end:
        hours.append(start.astimezone(zone))
        start += _HOUR
    return hours


@functools.cache
def iana_zone_names() -> frozenset[str]:
    """The IANA time zone names (``UTC``, ``America/New_York``, ``Asia/Kolkata`` …).

    The list the pinned ``tzdata`` package ships, so every machine of a release accepts the
    same names, whatever its system zone database holds. zoneinfo's ``available_timezones``
    adds what the system's directories hold, such as ``localtime``: whatever zone the machine
    happens to be set to, which two machines may read as two calendars. Without ``tzdata``
    installed: zoneinfo's list, less that one.
    """
    try:
        text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    except ModuleNotFoundError:  # pragma: no cover - tzdata is a pinned requirement
        return frozenset(zoneinfo.available_timezones() - {"localtime"})
    return frozenset(text.split())


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not a time zone the shop can be in (None when it is), as the end of a
    sentence that starts with the name."""
    if name not in iana_zone_names():
        return (
            "is not an IANA time zone name (case counts: UTC, Europe/London, "
            "America/New_York, Asia/Kolkata)"
        )
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:  # pragma: no cover - listed
        return f"cannot be loaded: {exc}"
    return None
