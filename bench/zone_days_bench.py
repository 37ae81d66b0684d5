"""Local days at size: grouping the ledger by the day of ``ordered_at`` in the shop's zone in
the database (``TruncDate(..., tzinfo=zone)``, what rebuild and reconcile run) against
streaming the rows and computing ``local_day`` in Python, and against the stored UTC ``day``
column (what a UTC shop still groups by).

Run by hand::

    .venv/bin/python bench/zone_days_bench.py [--rows 500000] [--users 50000]
        [--database-url postgres://…|sqlite:///path] [--drop]

PostgreSQL is filled by ``ledger_fill`` (server side); SQLite (``sqlite:///…``) by one
``executemany``. Each way is timed three times (best kept), per day and per user and day (the
sharded rebuild's query), and the results are checked equal; then the local hours of
``/stats/by-hour`` (``ledger.hour_totals``: UTC quarter hours grouped in the database, each
group's hour named in Python). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ledger_fill import add_arguments, close_ledger, fill, open_ledger  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/orderpipe_zone_days_bench"
ZONE = ZoneInfo("America/New_York")


def open_sqlite(url: str, rows: int, users: int) -> None:
    os.environ["TEST_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.setdefault("LOG_LEVEL", "warning")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_acceptedorder")
        if cursor.fetchone()[0] >= rows:
            return
        base = datetime(2024, 8, 1, tzinfo=UTC)
        values = []
        for n in range(rows):
            at = base + timedelta(seconds=(n * 7919) % (366 * 86400))
            text = at.strftime("%Y-%m-%d %H:%M:%S")  # as Django stores a UTC datetime
            values.append((
                f"ORD{n:08d}", f"U{n % users:06d}", 1999 * (1 + n % 5), text,
                at.date().isoformat(), "[]", f"2:{n}", f"m{n}", text, "USD", "{}",
            ))  # fmt: skip
        cursor.executemany(
            "INSERT INTO orders_acceptedorder (order_id, user_id, value_cents, ordered_at, day,"
            " items, fingerprint, message_id, received_at, currency, extra)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            values,
        )


def best(label: str, rows: int, run: Callable[[], Any]) -> Any:
    times, result = [], None
    for _ in range(3):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    print(f"  {label:<44} {min(times) * 1000:8.0f} ms  {rows / min(times):>12,.0f} rows/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, DEFAULT_URL)
    parser.set_defaults(rows=500_000, users=50_000)
    args = parser.parse_args()
    if args.database_url.startswith("sqlite"):
        open_sqlite(args.database_url, args.rows, args.users)
    else:
        open_ledger(args.database_url)
        fill(args.rows, args.users)
    from django.db import connection

    from orderpipe.timeutils import local_day
    from orders import ledger
    from orders.models import AcceptedOrder

    rows = AcceptedOrder.objects.count()

    def stream_days() -> list[tuple[Any, int, int]]:
        days: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
        query = AcceptedOrder.objects.order_by().values_list("ordered_at", "value_cents")
        for at, cents in query.iterator(chunk_size=20_000):
            bucket = days[local_day(at, ZONE)]
            bucket[0] += 1
            bucket[1] += cents
        return sorted((d, n, r) for d, (n, r) in days.items())

    def stream_user_days() -> int:
        pairs: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
        query = AcceptedOrder.objects.order_by().values_list("user_id", "ordered_at", "value_cents")
        for user, at, cents in query.iterator(chunk_size=20_000):
            bucket = pairs[(user, local_day(at, ZONE))]
            bucket[0] += 1
            bucket[1] += cents
        return len(pairs)

    print(f"{connection.vendor}: {rows:,} ledger rows, zone {ZONE.key}")
    best("per day, stored UTC day column", rows, lambda: ledger.day_totals(None))
    in_db = best("per day, TruncDate in the database", rows, lambda: ledger.day_totals(ZONE))
    in_py = best("per day, streamed, local_day in Python", rows, stream_days)
    assert [(d.day, d.orders, d.revenue_cents) for d in in_db] == in_py
    best("per user and day, stored UTC day column", rows,
         lambda: sum(1 for _ in ledger.user_day_totals(None)))  # fmt: skip
    pairs = best("per user and day, TruncDate in the database", rows,
                 lambda: sum(1 for _ in ledger.user_day_totals(ZONE)))  # fmt: skip
    assert pairs == best("per user and day, streamed, local_day in Python", rows, stream_user_days)
    best("per local hour (UTC quarters grouped, named in Python)", rows,
         lambda: sum(1 for _ in ledger.hour_totals(ZONE)))  # fmt: skip
    best("per user and local hour (several shards)", rows,
         lambda: sum(1 for _ in ledger.hour_totals(ZONE, by_user=True)))  # fmt: skip
    if not args.database_url.startswith("sqlite"):
        close_ledger(args.database_url, args.drop)


if __name__ == "__main__":
    main()
