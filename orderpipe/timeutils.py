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
from datetime import UTC, date, datetime, timedelta, tzinfo
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
    return moment.astimezone(zone).date()


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
