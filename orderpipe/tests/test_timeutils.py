"""Epoch milliseconds, the time format orders and stats exchange through Redis and SQS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from orderpipe.timeutils import EPOCH, epoch_ms, from_epoch_ms


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
