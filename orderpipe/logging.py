"""Logging pieces: one UTC timestamp format and a handler writing ``LOG_DIR/YYYY-MM-DD.log``.

One record is one line: the formatter escapes control characters in the message (``\\n``,
``\\x07``, lone surrogates …), since ids and error texts come from messages anyone can send,
and a raw newline would let one forge a line (``… ERROR orders.consumer Redis unavailable``)
in the file operators grep. A traceback stays multi-line, each of its lines indented, so no
line but a record's first starts with a timestamp.

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
from typing import Any

# Control characters (C0, DEL, C1), the Unicode line and paragraph separators some viewers
# break lines at, and lone surrogates (which a UTF-8 file cannot even hold).
_ESCAPES: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"},
    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0xD800, 0xE000))},
}
# Inside a traceback line (the newlines between lines are the traceback's own).
_LINE_ESCAPES = {c: e for c, e in _ESCAPES.items() if c != 0x0A}
TRACEBACK_INDENT = "  "


def escape_control(text: str) -> str:
    """``text`` on one line: control characters become visible escapes (``\\n``, ``\\x07``)."""
    return text.translate(_ESCAPES)


class UTCFormatter(logging.Formatter):
    """ISO-8601 UTC timestamps with milliseconds, whatever the host's time zone; the message
    escaped onto one line, tracebacks indented (see the module docstring).

    The console and the daily file share this formatter, so each record (every request's log
    line among them) would be formatted twice; the text of the last record is kept and handed
    to the second handler. Only that very record object hits (a new record is always
    formatted), and the cache holds no attribute on the record, which stays picklable.
    """

    converter = staticmethod(time.gmtime)
    _last: tuple[logging.LogRecord, str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        last = self._last
        if last is not None and last[0] is record:
            return last[1]
        text = super().format(record)
        self._last = (record, text)
        return text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = datetime.fromtimestamp(record.created, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        # format() sets record.message afresh from msg % args before every call.
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join(TRACEBACK_INDENT + line.translate(_LINE_ESCAPES) for line in text.split("\n"))


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
                        self.stream = None
                    self.current_day = day
                    self.baseFilename = self._path(day)
            finally:
                self.release()
        super().emit(record)
