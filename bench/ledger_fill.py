"""Filling a PostgreSQL ledger at size for the benchmarks: one server-side INSERT … SELECT
generate_series per 200,000 rows (no Python per row), and the database around it."""

from __future__ import annotations

import argparse
import os
import time
from urllib.parse import urlparse

# The order times of ledger_read_bench (its admin day filter asks for 2025-01-15).
FIXED_BASE = "2024-08-01 00:00:00+00"

FILL_SQL = """
INSERT INTO orders_acceptedorder
    (order_id, user_id, value_cents, ordered_at, day, items, fingerprint, message_id,
     received_at, extra)
SELECT
    'ORD' || lpad(n::text, 8, '0'),
    CASE WHEN n %% 200 = 0 THEN 'UHEAVY' ELSE 'U' || lpad((n %% %(users)s)::text, 6, '0') END,
    1999 * (1 + n %% 5),
    at,
    (at AT TIME ZONE 'UTC')::date,
    jsonb_build_array(jsonb_build_object(
        'product_id', 'P' || (n %% 97), 'quantity', 1 + n %% 5, 'price_per_unit', '19.99')),
    '2:' || md5(n::text),
    md5('m' || n::text),
    at + interval '2 seconds',
    '{}'::jsonb
FROM (
    SELECT n, %(base)s::timestamptz
              + (((n * 7919) %% (366 * 86400)) * interval '1 second') AS at
    FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS n
) AS g
"""


def ensure_database(url: str) -> None:
    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    parts = urlparse(url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def fill(rows: int, users: int, base: str = FIXED_BASE) -> None:
    """``rows`` ledger rows from ``users`` users, their order times over the 366 days from
    ``base`` (recorded 2 s after), one in 200 rows belonging to ``UHEAVY``."""
    from django.db import connection

    from orders.models import AcceptedOrder

    have = AcceptedOrder.objects.count()
    if have >= rows:
        print(f"ledger: {have:,} rows already there")
        return
    started = time.perf_counter()
    chunk = 200_000
    with connection.cursor() as cursor:
        for start in range(have, rows, chunk):
            stop = min(start + chunk, rows) - 1
            cursor.execute(FILL_SQL, {"users": users, "start": start, "stop": stop, "base": base})
            print(f"  filled {stop + 1:,} / {rows:,}", flush=True)
        cursor.execute("VACUUM ANALYZE orders_acceptedorder")
    elapsed = time.perf_counter() - started
    print(f"ledger: {rows - have:,} rows written in {elapsed:.1f} s")


def table_size() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_table_size('orders_acceptedorder')),"
            " pg_size_pretty(pg_indexes_size('orders_acceptedorder'))"
        )
        table, indexes = cursor.fetchone()
    return f"table {table}, indexes {indexes}"


def add_arguments(parser: argparse.ArgumentParser, default_url: str) -> None:
    """The options every ledger benchmark takes."""
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")


def open_ledger(database_url: str) -> None:
    """Create (once) and migrate the database, with Django set up on it."""
    ensure_database(database_url)
    os.environ["TEST_DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.setdefault("LOG_LEVEL", "warning")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def close_ledger(database_url: str, drop: bool) -> None:
    if drop:
        from django.db import connections

        connections.close_all()
        drop_database(database_url)
