"""One log file per UTC day, switching at midnight inside a long-running process."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from orderpipe.logging import DailyFileHandler, UTCFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def record(message: str, when: datetime, level: int = logging.INFO) -> logging.LogRecord:
    rec = logging.LogRecord("orderpipe.test", level, __file__, 1, message, None, None)
    rec.created = when.timestamp()
    rec.msecs = (rec.created - int(rec.created)) * 1000
    return rec


def make_handler(directory: Path) -> DailyFileHandler:
    handler = DailyFileHandler(directory)
    handler.setFormatter(UTCFormatter(FORMAT))
    return handler


def test_writes_to_the_day_of_the_record(tmp_path: Path) -> None:
    handler = make_handler(tmp_path / "logs")  # the directory is created on demand
    try:
        handler.emit(record("hello", datetime(2025, 8, 9, 10, 15, 0, 123000, tzinfo=UTC)))
    finally:
        handler.close()
    text = (tmp_path / "logs" / "2025-08-09.log").read_text(encoding="utf-8")
    assert text == "2025-08-09T10:15:00.123Z INFO orderpipe.test hello\n"


def test_switches_files_at_utc_midnight_in_one_process(tmp_path: Path) -> None:
    handler = make_handler(tmp_path)
    try:
        handler.emit(record("before", datetime(2025, 8, 9, 23, 59, 59, 999000, tzinfo=UTC)))
        handler.emit(record("after", datetime(2025, 8, 10, 0, 0, 0, tzinfo=UTC)))
        handler.emit(record("later", datetime(2025, 8, 10, 12, 0, 0, tzinfo=UTC)))
    finally:
        handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2025-08-09.log", "2025-08-10.log"]
    day1 = (tmp_path / "2025-08-09.log").read_text(encoding="utf-8")
    day2 = (tmp_path / "2025-08-10.log").read_text(encoding="utf-8")
    assert day1.splitlines() == ["2025-08-09T23:59:59.999Z INFO orderpipe.test before"]
    assert [line.split()[-1] for line in day2.splitlines()] == ["after", "later"]


def test_day_follows_utc_not_the_local_time_zone(tmp_path: Path, monkeypatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: local date is a day ahead
    time.tzset()
    try:
        handler = make_handler(tmp_path)
        try:
            handler.emit(record("x", datetime(2025, 8, 9, 12, 0, tzinfo=UTC)))
        finally:
            handler.close()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert [p.name for p in tmp_path.iterdir()] == ["2025-08-09.log"]


def test_appends_to_an_existing_day_file(tmp_path: Path) -> None:
    """A restart, or a second process (web and worker share LOG_DIR), must not truncate."""
    (tmp_path / "2025-08-09.log").write_text("earlier line\n", encoding="utf-8")
    handler = make_handler(tmp_path)
    try:
        handler.emit(record("new", datetime(2025, 8, 9, 8, 0, tzinfo=UTC)))
    finally:
        handler.close()
    lines = (tmp_path / "2025-08-09.log").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "earlier line"
    assert lines[1].endswith("new")


def test_settings_send_the_root_logger_to_console_and_daily_file() -> None:
    from django.conf import settings

    root = settings.LOGGING["root"]
    assert set(root["handlers"]) == {"console", "daily_file"}
    assert settings.LOGGING["handlers"]["daily_file"]["()"] == "orderpipe.logging.DailyFileHandler"
    assert settings.LOGGING["handlers"]["daily_file"]["directory"] == str(settings.LOG_DIR)


# --- one record, one line -------------------------------------------------------------------
FORGED = "2025-08-09T10:15:00.000Z ERROR orders.consumer Redis unavailable"


def test_control_characters_in_a_message_become_visible_escapes(tmp_path: Path) -> None:
    handler = make_handler(tmp_path)
    rec = logging.LogRecord(
        "orders.test",
        logging.WARNING,
        __file__,
        1,
        "id=%s",
        ("a\nb\r\x07\t\x85\u2028\ud800",),
        None,
    )
    rec.created = datetime(2025, 8, 9, 10, 15, tzinfo=UTC).timestamp()
    try:
        handler.emit(rec)
    finally:
        handler.close()
    text = (tmp_path / "2025-08-09.log").read_text(encoding="utf-8")
    assert text == (
        "2025-08-09T10:15:00.000Z WARNING orders.test id=a\\nb\\r\\x07\\t\\x85\\u2028\\ud800\n"
    )


def test_a_traceback_stays_multi_line_but_no_line_of_it_starts_like_a_record(
    tmp_path: Path,
) -> None:
    handler = make_handler(tmp_path)
    try:
        raise ValueError(f"bad input X\n{FORGED}")
    except ValueError:
        rec = logging.LogRecord(
            "orders.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    rec.created = datetime(2025, 8, 9, 10, 15, tzinfo=UTC).timestamp()
    try:
        handler.emit(rec)
    finally:
        handler.close()
    lines = (tmp_path / "2025-08-09.log").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "2025-08-09T10:15:00.000Z ERROR orders.test failed"
    assert lines[1] == "  Traceback (most recent call last):"
    assert lines[-2:] == ["  ValueError: bad input X", f"  {FORGED}"]
    assert all(line.startswith("  ") for line in lines[1:])


def test_a_record_is_formatted_once_for_the_handlers_sharing_the_formatter(
    tmp_path: Path, monkeypatch
) -> None:
    formatted: list[str] = []
    real_format = logging.Formatter.format

    def counting(self: logging.Formatter, rec: logging.LogRecord) -> str:
        formatted.append(rec.getMessage())
        return real_format(self, rec)

    monkeypatch.setattr(logging.Formatter, "format", counting)
    formatter = UTCFormatter(FORMAT)
    first, second = DailyFileHandler(tmp_path / "a"), DailyFileHandler(tmp_path / "b")
    logger = logging.getLogger("orderpipe.test.shared")
    logger.propagate = False
    try:
        for handler in (first, second):
            handler.setFormatter(formatter)
            logger.addHandler(handler)
        logger.warning("one %s", "line")
        logger.warning("one %s", "line")  # a new record with the same text: formatted again
    finally:
        for handler in (first, second):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True

    assert formatted == ["one line", "one line"]
    [a_file] = (tmp_path / "a").iterdir()
    [b_file] = (tmp_path / "b").iterdir()
    a_text = a_file.read_text(encoding="utf-8")
    assert a_text == b_file.read_text(encoding="utf-8")
    assert [line.split(" ", 1)[1] for line in a_text.splitlines()] == [
        "WARNING orderpipe.test.shared one line"
    ] * 2
