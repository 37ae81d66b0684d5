"""Logging pieces: one UTC timestamp format and a handler writing ``LOG_DIR/YYYY-MM-DD.log``.

``TimedRotatingFileHandler`` renames the old file (``app.log.2025-01-01``) and rotates relative
to process start; operators asked for one file per UTC calendar day named by the date, shared
by the web server and the consumers, so the handler computes the file name from each record's
own time and reopens when the day changes.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path


class UTCFormatter(logging.Formatter):
    """ISO-8601 UTC timestamps with milliseconds, whatever the host's time zone."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = datetime.fromtimestamp(record.created, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class DailyFileHandler(logging.FileHandler):
    """Append to ``<directory>/<UTC date>.log``, switching files at UTC midnight.

    Several processes may append to the same day's file: each opens it in append mode, and
    short lines written with O_APPEND do not interleave.
    """

    def __init__(self, directory: str | Path, encoding: str = "utf-8") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.current_day = self._day(time.time())
        super().__init__(self._path(self.current_day), mode="a", encoding=encoding, delay=True)

    @staticmethod
    def _day(timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")

    def _path(self, day: str) -> str:
        return str(self.directory / f"{day}.log")

    def emit(self, record: logging.LogRecord) -> None:
        day = self._day(record.created)
        if day != self.current_day:
            self.acquire()
            try:
                if day != self.current_day:
                    if self.stream is not None:
                        self.stream.close()
                        self.stream = None  # type: ignore[assignment]
                    self.current_day = day
                    self.baseFilename = self._path(day)
            finally:
                self.release()
        super().emit(record)
