"""Epoch milliseconds, the time format orders and stats exchange through Redis and SQS; the
shop's local days and hours."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpipe.timeutils import (
    EPOCH,
    day_and_hour,
    epoch_ms,
    from_epoch_ms,
    hour_key,
    local_day,
    local_hours,
)


def test_epoch_ms_is_exact_far_from_the_epoch() -> None:
    moment = datetime(2270, 11, 14, 12, 19, 9, 264_999, tzinfo=UTC)
    assert int(moment.timestamp() * 1000) == 9_494_540_349_265  # floats round up here
    assert epoch_ms(moment) == 9_494_540_349_264


def test_epoch_ms_drops_microseconds_below_a_millisecond() -> None:
    assert epoch_ms(EPOCH + timedelta(microseconds=1_999)) == 1
    assert epoch_ms(EPOCH - timedelta(microseconds=1)) == -1  # floor, also before the epoch


def test_from_epoch_ms_is_utc_and_inverts_epoch_ms() -> None:
    moment = datetime(2025, 8, 9, 12, 15, 0, 123_000, tzinfo=timezone(timedelta(hours=2)))
    back = from_epoch_ms(epoch_ms(moment))
    assert back == moment
    assert back.tzinfo is UTC
    assert from_epoch_ms(1_700_000_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


# --- local days and hours ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("moment", "zone", "day"),
    [
        ("2025-03-09T04:30:00", "America/New_York", "2025-03-08"),  # 23:30 EST
        ("2025-08-09T18:30:00", "Asia/Kolkata", "2025-08-10"),  # 00:00 IST
        ("2025-08-09T11:14:59", "Pacific/Chatham", "2025-08-09"),  # 23:59:59 +12:45
    ],
)
def test_an_instants_local_day_is_its_date_in_the_zone(moment: str, zone: str, day: str) -> None:
    instant = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    assert local_day(instant, ZoneInfo(zone)) == date.fromisoformat(day)


@pytest.mark.parametrize(
    ("day", "zone", "count"),
    [
        ("2025-03-09", "America/New_York", 23),
        ("2025-11-02", "America/New_York", 25),
        ("2025-04-06", "Pacific/Chatham", 25),  # its daylight saving ends at 03:45
        ("2025-09-28", "Pacific/Chatham", 23),
        ("2025-10-05", "Australia/Lord_Howe", 24),  # a half-hour change: 23.5 h, 24 starts
        ("2025-08-09", "Asia/Kolkata", 24),
    ],
)
def test_every_instant_of_a_day_falls_in_one_of_its_listed_hours(
    day: str, zone: str, count: int
) -> None:
    """hour_key names one of local_hours' hours, each minute of the day's real time."""
    tz = ZoneInfo(zone)
    hours = local_hours(date.fromisoformat(day), tz)
    starts = [h.astimezone(UTC) for h in hours]
    assert len(hours) == count
    names = [s.isoformat(timespec="minutes")[:16] for s in starts]
    moment = starts[0]
    while local_day(moment, tz) == date.fromisoformat(day):
        expected = max(i for i, s in enumerate(starts) if s <= moment)
        assert hour_key(moment, tz) == names[expected], moment
        moment += timedelta(minutes=7, seconds=13)


def test_the_repeated_hour_is_two_hours_named_apart() -> None:
    tz = ZoneInfo("America/New_York")
    first = datetime(2025, 11, 2, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2025, 11, 2, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert (hour_key(first, tz), hour_key(second, tz)) == ("2025-11-02T05:00", "2025-11-02T06:00")
    assert hour_key(datetime(2025, 8, 9, 4, 59, tzinfo=UTC), ZoneInfo("Asia/Kolkata")) == (
        "2025-08-09T04:30"
    )


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
@pytest.mark.parametrize(
    "moment", [datetime(1, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
)
def test_the_calendars_ends_have_a_day_and_an_hour_in_every_zone(
    moment: datetime, zone: str
) -> None:
    """A valid order may be dated 0001-01-01T00:00Z, which is year 0 in New York: its day is
    clamped to the calendar's first (a consumer never fails on it)."""
    day = local_day(moment, ZoneInfo(zone))
    assert day in (date.min, date.max)
    assert hour_key(moment, ZoneInfo(zone))[:4] in ("0001", "9999")


@given(
    moment=st.datetimes(timezones=st.just(UTC)),
    zone=st.sampled_from(
        ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]
    ),
)
def test_day_and_hour_is_the_local_day_and_the_hour_key_from_one_conversion(
    moment: datetime, zone: str
) -> None:
    tz = ZoneInfo(zone)
    assert day_and_hour(moment, tz) == (local_day(moment, tz).isoformat(), hour_key(moment, tz))
