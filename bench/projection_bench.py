"""rebuild_stats and reconcile_stats at size: a ledger of N orders on PostgreSQL, a real Valkey.

Run by hand::

    .venv/bin/python bench/projection_bench.py [--rows 1000000] [--users 100000]
        [--events 100000] [--shards 1] [--appendfsync always] [--database-url URL] [--drop]
        [--quick]

It creates (once) the database ``--database-url`` (default a local
``orderpipe_projection_bench``), migrates it and fills the ledger with ``--rows`` orders from
``--users`` users over the last 366 days (recorded as they happened, so the last 15 days'
orders are inside the idempotency marks' window) and about ``--events`` refunds and
cancellations of them (default a tenth of ``--rows``; ``bench/ledger_fill.py``: one unit of
every 19th order refunded, every 53rd cancelled, half of others refunded by amount, a day or two
after the order), starts its own Valkey (AOF with ``--appendfsync``, ``noeviction``), then
times, in this process:

1. ``rebuild`` into an empty Redis (users, totals, rankings, days, the window's marks);
2. ``reconcile`` with nothing to find (the first pass only, no lock);
3. ``reconcile`` after 100 users' hashes were damaged (50 in their gross, 50 in their
   refunds; first pass, then the locked pass);
4. ``reconcile --repair`` of the same, and a second ``rebuild`` over the first;
5. the memory column: ``reconcile`` (nothing to find), ``reconcile --repair`` after the marks
   of the whole window were lost (every order and event inside it unapplied: the most a
   repair holds)
   and ``rebuild``, each again under ``tracemalloc``: the peak of what Python allocated
   (slower, so not timed), and the process's peak RSS (``ru_maxrss``) at the end.

``--quick``: steps 1 and 2 and a rebuild over the live generation only.

Prints rows/s for each, the ledger's size on disk per row (table, TOAST and indexes) and the
Redis memory. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ledger_fill import add_arguments, close_ledger, fill, fill_events, open_ledger  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/orderpipe_projection_bench"


def ledger_bytes() -> tuple[int, int, int, int]:
    """(rows, table + TOAST bytes, index bytes, total bytes) of the ledger on PostgreSQL."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM orders_acceptedorder),"
            " pg_table_size('orders_acceptedorder'), pg_indexes_size('orders_acceptedorder'),"
            " pg_total_relation_size('orders_acceptedorder')"
        )
        return cursor.fetchone()


def event_figures() -> tuple[int, int, int]:
    """(events, of them cancellations, cents refunded) in the ledger."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE kind = 'cancelled'),"
            " coalesce(sum(amount_cents), 0) FROM orders_orderevent"
        )
        return cursor.fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, DEFAULT_URL)
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="refunds and cancellations (default rows / 10; 0: none)",
    )
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="steps 1 and 2 and the rebuild over the live generation only (no damage, no "
        "memory column): the A/B of the goals",
    )
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    args = parser.parse_args()

    open_ledger(args.database_url)
    import redis

    from devtools.servers import RedisServer
    from orders import projection
    from stats.store import AggregateStore

    base = (datetime.now(UTC) - timedelta(days=366)).isoformat()
    fill(args.rows, args.users, base=base)
    events = args.rows // 10 if args.events is None else args.events
    if events:  # --events 0: orders only, as before events existed
        fill_events(args.rows, events)
    rows, table, indexes, total = ledger_bytes()
    print(
        f"ledger on PostgreSQL: {rows:,} rows; table {table / rows:.0f} B/row, indexes "
        f"{indexes / rows:.0f} B/row, total {total / rows:.0f} B/row ({total / 2**20:,.0f} MiB)"
    )
    events, cancelled, refunded = event_figures()
    print(
        f"events: {events:,} ({cancelled:,} cancellations, {events - cancelled:,} refunds), "
        f"{refunded / 100:,.2f} refunded"
    )

    server = RedisServer(
        data_dir=Path(tempfile.mkdtemp(prefix="orderpipe-projection-")),
        appendfsync=args.appendfsync,
    ).start()
    try:
        client = redis.Redis.from_url(server.url)
        store = AggregateStore(client, prefix="bench", shards=args.shards)
        print(f"valkey {server.url} (appendfsync {args.appendfsync}), {args.shards} shard(s)")

        def run(label: str, step) -> object:
            started = time.perf_counter()
            cpu = time.process_time()
            result = step()
            seconds = time.perf_counter() - started
            print(
                f"{label:<44} {seconds:7.1f} s  {rows / seconds:>10,.0f} ledger rows/s  "
                f"(this process {time.process_time() - cpu:5.1f} s CPU)",
                flush=True,
            )
            return result

        report = run("rebuild into an empty Redis", lambda: projection.rebuild(store))
        print(
            f"  {report.users:,} users, {report.days:,} day buckets, {report.marks:,} marks, "
            f"{report.refunded_cents / 100:,.2f} refunded, {report.cancelled:,} cancelled, "
            f"{report.event_marks:,} event marks; Redis used_memory "
            f"{client.info('memory')['used_memory'] / 2**20:,.0f} MiB"
        )
        clean = run("reconcile, nothing to find", lambda: projection.reconcile(store))
        print(f"  differences {len(clean.differences)}, in flight {clean.in_flight}")
        if args.quick:
            run("rebuild over the live generation", lambda: projection.rebuild(store))
            return
        for i in range(100):  # half of them in their gross, half in their refunds
            field = "spend" if i % 2 else "refunded"
            client.hincrby(store.aggregate_key("user", f"U{i * 7:06d}"), field, 1)
        found = run("reconcile, 100 users damaged", lambda: projection.reconcile(store))
        print(f"  differences {len(found.differences)} (first: {found.differences[0]})")
        for i in range(100):  # half of them in their gross, half in their refunds
            field = "spend" if i % 2 else "refunded"
            client.hincrby(store.aggregate_key("user", f"U{i * 7:06d}"), field, 1)
        repaired = run(
            "reconcile --repair, 100 users damaged",
            lambda: projection.reconcile(store, repair=True),
        )
        print(f"  repaired {repaired.repaired}, remaining {repaired.remaining}")
        run("rebuild over the live generation", lambda: projection.rebuild(store))

        def peak(label: str, step) -> None:
            tracemalloc.start()
            step()
            _now, most = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"{label:<44} peak Python memory {most / 2**20:7.1f} MiB "
                  f"({most / report.users:,.0f} B per user)", flush=True)  # fmt: skip

        peak("reconcile, nothing to find", lambda: projection.reconcile(store))
        lost = 0
        for shard, generation in enumerate(store.generations()):
            found = [
                key
                for pattern in (
                    store.keys.mark("*", shard, generation),
                    store.keys.event_mark("*", shard, generation),
                )
                for key in client.scan_iter(match=pattern, count=5000)
            ]
            for start in range(0, len(found), 1000):
                lost += client.delete(*found[start : start + 1000])
        print(f"  {lost:,} marks deleted (the window's orders and events are now unapplied)")
        peak(
            "reconcile --repair, the window unapplied",
            lambda: projection.reconcile(store, repair=True, settle=timedelta(0)),
        )
        peak("rebuild over the live generation", lambda: projection.rebuild(store))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"peak RSS of this process (ledger fill, Django, every step): {rss:,.0f} MiB")
    finally:
        server.stop()
        close_ledger(args.database_url, args.drop)


if __name__ == "__main__":
    main()
