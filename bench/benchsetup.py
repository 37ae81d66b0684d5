"""Start Django for a benchmark script: its database chosen from ``--database-url`` before
Django reads its settings (a PostgreSQL database is created when missing), logs and SQLite in
a temporary directory of its own."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def setup_django(prefix: str, **environment: str) -> tuple[str, str, argparse.ArgumentParser]:
    """Set the environment and call ``django.setup()``; returns the temporary directory, the
    database URL and the parser of ``--database-url`` (a parent for the script's own).
    ``environment`` adds or overrides variables (``DEBUG``, ``SECRET_KEY``)."""
    tmp = tempfile.mkdtemp(prefix=f"orderpipe-{prefix}-")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--database-url", default=f"sqlite:///{tmp}/{prefix}.sqlite3")
    database_url: str = pre.parse_known_args()[0].database_url
    if database_url.startswith("postgres"):
        from ledger_fill import ensure_database

        ensure_database(database_url)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
            "LOG_LEVEL": "warning",
            "LOG_DIR": tmp,
            "DATABASE_URL": database_url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            **environment,
        }
    )
    import django

    django.setup()
    return tmp, database_url, pre


def empty_ledger() -> None:
    """Each round sends the same orders again: start it from an empty ledger (bench only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        tables = (
            "orders_acceptedorder", "orders_orderevent", "orders_waitingevent",
            "orders_rejectedordercode", "orders_rejectedorder",
        )  # fmt: skip
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
