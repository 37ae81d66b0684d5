"""Filling a PostgreSQL ledger at size for the benchmarks: one server-side INSERT … SELECT
generate_series per 200,000 rows (no Python per row), and the database around it; the orders'
refunds and cancellations likewise (``fill_events``: 7% of the orders, or as many as asked)."""

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
     received_at, currency, extra)
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
    'USD',
    '{}'::jsonb
FROM (
    SELECT n, %(base)s::timestamptz
              + (((n * 7919) %% (366 * 86400)) * interval '1 second') AS at
    FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS n
) AS g
"""


# Events of the orders FILL_SQL writes: a refund of one unit (19.99) of every 19th order (5.3%),
# a cancellation of every 53rd (1.9%; the rest of its value), a day after the order.
EVENTS_FILL_SQL = """
INSERT INTO orders_orderevent
    (event_id, order_id, user_id, kind, amount_cents, items, occurred_at, reason, currency,
     fingerprint, message_id, received_at)
SELECT
    CASE WHEN n %% 19 = 0 THEN 'RF' ELSE 'CX' END || lpad(n::text, 8, '0'),
    o.order_id,
    o.user_id,
    CASE WHEN n %% 19 = 0 THEN 'refunded' ELSE 'cancelled' END,
    CASE WHEN n %% 19 = 0 THEN 1999 ELSE o.value_cents END,
    CASE WHEN n %% 19 = 0 THEN jsonb_build_array(jsonb_build_object(
        'product_id', 'P' || (n %% 97), 'quantity', 1, 'price_per_unit', '19.99'))
        ELSE '[]'::jsonb END,
    o.ordered_at + interval '1 day',
    CASE WHEN n %% 19 = 0 THEN 'arrived damaged' ELSE '' END,
    'USD',
    'e1:' || md5('e' || n::text),
    md5('me' || n::text),
    o.ordered_at + interval '1 day 2 seconds'
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS n
JOIN orders_acceptedorder o ON o.order_id = 'ORD' || lpad(n::text, 8, '0')
WHERE n %% 19 = 0 OR n %% 53 = 0
"""


# More events when asked for (``fill_events(rows, events=N)``): half of the value of orders that
# have no other event, refunded by amount two days after the order, every ``step``-th of them.
EXTRA_REFUNDS_SQL = """
INSERT INTO orders_orderevent
    (event_id, order_id, user_id, kind, amount_cents, items, occurred_at, reason, currency,
     fingerprint, message_id, received_at)
SELECT
    'RA' || lpad(n::text, 8, '0'),
    o.order_id,
    o.user_id,
    'refunded',
    o.value_cents / 2,
    '[]'::jsonb,
    o.ordered_at + interval '2 days',
    'goodwill',
    'USD',
    'e1:' || md5('a' || n::text),
    md5('ma' || n::text),
    o.ordered_at + interval '2 days 2 seconds'
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS n
JOIN orders_acceptedorder o ON o.order_id = 'ORD' || lpad(n::text, 8, '0')
WHERE n %% 19 <> 0 AND n %% 53 <> 0 AND n %% %(step)s = 7
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


def fill_events(rows: int, events: int | None = None) -> None:
    """The events ``EVENTS_FILL_SQL`` gives the first ``rows`` orders (once): about 7% of
    them; with ``events`` above that, partial refunds of orders without another event
    (``EXTRA_REFUNDS_SQL``) bring the count to about ``events``."""
    from django.db import connection

    from orders.models import OrderEvent

    if OrderEvent.objects.exists():
        print(f"events: {OrderEvent.objects.count():,} rows already there")
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for start in range(0, rows, 200_000):
            stop = min(start + 200_000, rows) - 1
            cursor.execute(EVENTS_FILL_SQL, {"start": start, "stop": stop})
        base = OrderEvent.objects.count()
        if events is not None and events > base:
            # Orders without a refund (every 19th) or a cancellation (every 53rd).
            free = rows * (1 - 1 / 19) * (1 - 1 / 53)
            step = max(int(free / (events - base)), 1)
            for start in range(0, rows, 200_000):
                stop = min(start + 200_000, rows) - 1
                cursor.execute(EXTRA_REFUNDS_SQL, {"start": start, "stop": stop, "step": step})
        cursor.execute("VACUUM ANALYZE orders_orderevent")
    count = OrderEvent.objects.count()
    print(f"events: {count:,} rows written in {time.perf_counter() - started:.1f} s")


def table_size(table: str = "orders_acceptedorder") -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_table_size(%s)), pg_size_pretty(pg_indexes_size(%s))",
            [table, table],
        )
        size, indexes = cursor.fetchone()
    return f"table {size}, indexes {indexes}"


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
