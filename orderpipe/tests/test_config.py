"""URLs shown in messages without their passwords (``orderpipe.config.redact_url``)."""

from __future__ import annotations

import pytest

from orderpipe.config import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://u:secret@host/db", "postgres://u:***@host/db"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgres://u:p@ss@h:5432/db", "postgres://u:***@h:5432/db"),
        ("postgres://u:secret@[::1/db", "postgres://u:***@[::1/db"),
        ("redis://h/0?password=secret&db=1", "redis://h/0?password=***&db=1"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("sqlite:////var/db.sqlite3", "sqlite:////var/db.sqlite3"),
        ("http://localstack:4566", "http://localstack:4566"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
