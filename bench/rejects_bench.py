"""Rejected orders counted by reason with a million rows, run by hand: prints numbers only.

    .venv/bin/python bench/rejects_bench.py [--rows 1000000] [--rounds 7]
        [--server postgres://postgres@127.0.0.1:5432] [--keep]

Creates its own PostgreSQL database (``orderpipe_rejects_bench`` on ``--server``, dropped at
the end unless ``--keep``), migrates it to just before RejectedOrderCode existed, bulk-loads
``--rows`` RejectedOrder rows in SQL (1-3 reason codes each, a ~300-byte JSON body with a
``shipping_address``, 90 days of receipts, 70% new / 20% reviewed / 10% resubmitted), then times
the upgrade migration that creates and fills RejectedOrderCode (what an existing deployment
runs) and the later ones, runs VACUUM ANALYZE, starts its own Redis and moto SQS server, then
  - streams the CSV export of every row through the admin (``export/``), once for its time and
    the growth of the process's peak RSS, once under ``tracemalloc`` for the peak of Python
    allocations (what must stay bounded: the old export built the whole file in memory);
  - times (median of ``--rounds`` interleaved rounds, after a warm-up) the summary by reason
    and status (``orders.admin.reason_summary``) over every row, which ``pipeline_status`` and
    the dashboard show, and over a filtered changelist; the LIKE '%,code,%' aggregate it
    replaced; ``manage.py pipeline_status --json`` end to end (SQS, Redis and the database);
    the staff dashboard page and the admin changelist pages, rendered by Django's test client;
  - last, ``prune_rejected`` over the rows past the 30-day retention (about two thirds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orders.validation import ALL_CODES as CODES  # pure: no Django set-up needed

DATABASE = "orderpipe_rejects_bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


def admin_connection(server: str):  # noqa: ANN201, RUF100
    import psycopg

    return psycopg.connect(f"{server}/postgres", autocommit=True)


def create_database(server: str) -> None:
    with admin_connection(server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")


def drop_database(server: str) -> None:
    from django.db import connections

    connections.close_all()
    with admin_connection(server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")


def code_migrations() -> tuple[tuple[str, str], tuple[str, str]]:
    """(the migration before the one that creates RejectedOrderCode, that one)."""
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    graph = MigrationLoader(connection).graph
    [node] = [n for n in graph.nodes if n[0] == "orders" and n[1].endswith("_rejectedordercode")]
    [parent] = [p for p in graph.node_map[node].parents if p.key[0] == "orders"]
    return parent.key, node


def load(rows: int) -> None:
    """Rows generated in SQL (fast, reproducible), as the release before the codes table."""
    from django.db import connection

    codes = "(ARRAY[" + ", ".join(f"'{c}'" for c in CODES) + "]::text[])"
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO orders_rejectedorder (
                message_id, body, order_id, user_id, reasons, reason_codes, queue_name,
                received_at, sent_at, receive_count, status, staff_note, corrected_payload)
            SELECT 'msg-' || g,
                   convert_to('{{"order_id": "ORD' || g || '", "user_id": "U' || (g %% 50000)
                       || '", "order_value": 19.99, "items": [{{"product_id": "P1", '
                       || '"quantity": 1, "price_per_unit": 19.99}}], "shipping_address": "'
                       || repeat('x', 110) || '", "payment_method": "CreditCard"}}', 'UTF8'),
                   'ORD' || g,
                   'U' || (g %% 50000),
                   jsonb_build_array(jsonb_build_object(
                       'code', c.first, 'field', 'body', 'message', repeat('m', 60))),
                   ',' || array_to_string(ARRAY(
                       SELECT DISTINCT unnest(c.picked) ORDER BY 1), ',') || ',',
                   'orders',
                   now() - ((g * 7919) %% 7776000) * interval '1 second',
                   now() - ((g * 7919) %% 7776000) * interval '1 second',
                   1,
                   CASE WHEN g %% 10 < 7 THEN 'new' WHEN g %% 10 < 9 THEN 'reviewed'
                        ELSE 'resubmitted' END,
                   '', ''
            FROM generate_series(1::bigint, %s) AS g,
                 LATERAL (SELECT {codes}[1 + (g * 7919) %% 8] AS first,
                                 CASE WHEN g %% 10 < 3
                                      THEN ARRAY[{codes}[1 + (g * 7919) %% 8],
                                                 {codes}[1 + (g * 104729) %% 8]]
                                      WHEN g %% 100 < 5
                                      THEN ARRAY[{codes}[1 + (g * 7919) %% 8],
                                                 {codes}[1 + (g * 104729) %% 8],
                                                 {codes}[1 + (g * 1299709) %% 8]]
                                      ELSE ARRAY[{codes}[1 + (g * 7919) %% 8]] END AS picked
                 ) AS c
            """,
            [rows],
        )

    connection.close()
    print(f"{rows:,} RejectedOrder rows loaded in {time.perf_counter() - started:.1f}s")


def vacuum() -> None:
    import psycopg

    with psycopg.connect(connection_url(), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE orders_rejectedorder")
        conn.execute("VACUUM ANALYZE orders_rejectedordercode")


def connection_url() -> str:
    return os.environ["DATABASE_URL"]


def timed(cases: list[tuple[str, Callable[[], object]]], rounds: int) -> dict[str, list[float]]:
    """ms per case; the rounds interleave the cases, so a burst of load on a shared machine
    spreads over all of them instead of landing on one."""
    for _, action in cases:
        action()  # warm-up: caches, plans, connections
    samples: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(rounds):
        for name, action in cases:
            started = time.perf_counter()
            action()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def main() -> int:
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="orderpipe-rejects-bench-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="orderpipe.settings",
        DEBUG="false",
        SECRET_KEY="bench-only-" + "x" * 50,
        ALLOWED_HOSTS="testserver",
        SECURE_SSL_REDIRECT="false",
        LOG_LEVEL="warning",
        LOG_DIR=tmp,
        DATABASE_URL=f"{args.server}/{DATABASE}",
        CONN_MAX_AGE="600",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
    )
    create_database(args.server)

    from devtools.servers import MotoSQSServer, RedisServer

    redis_server = RedisServer(data_dir=Path(tmp) / "redis")
    sqs_server = MotoSQSServer()
    redis_server.start()
    sqs_server.start()
    os.environ.update(REDIS_URL=redis_server.url, LOCALSTACK_URL=sqs_server.url)
    try:
        return run(args)
    finally:
        sqs_server.stop()
        redis_server.stop()
        if not args.keep:
            drop_database(args.server)


def run(args: argparse.Namespace) -> int:
    import django

    # WhiteNoise warns that collectstatic never ran: the pages are measured without assets.
    warnings.filterwarnings("ignore", message="No directory at")

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection
    from django.db.models import Count, Q
    from django.test import Client

    from orders.admin import reason_summary
    from orders.models import RejectedOrder
    from orders.sqs import OrderQueue
    from stats.store import get_store

    before, with_codes = code_migrations()
    call_command("migrate", verbosity=0)
    call_command("migrate", "orders", before[1], verbosity=0)  # back to the release before
    load(args.rows)
    started = time.perf_counter()
    call_command("migrate", "orders", with_codes[1], verbosity=0)
    upgrade_seconds = time.perf_counter() - started
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    later_seconds = time.perf_counter() - started
    vacuum()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT version(), current_setting('shared_buffers'), current_setting('work_mem'),"
            " pg_size_pretty(pg_total_relation_size('orders_rejectedorder')),"
            " pg_size_pretty(pg_total_relation_size('orders_rejectedordercode')),"
            " (SELECT count(*) FROM orders_rejectedordercode)"
        )
        version, buffers, work_mem, rows_size, codes_size, code_rows = cursor.fetchone()
    OrderQueue.from_settings().ensure()
    store = get_store()
    store.consumer_id = "bench:1"
    store.heartbeat()
    admin = get_user_model().objects.create_superuser("bench", password="x")
    client = Client()
    client.force_login(admin)

    def export() -> int:
        """Bytes of the CSV of every row, read chunk by chunk as a web server sends them."""
        response = client.get("/admin/orders/rejectedorder/export/")
        assert response.status_code == 200 and response.streaming
        size = sum(len(chunk) for chunk in response.streaming_content)
        response.close()
        return size

    client.get("/admin/orders/rejectedorder/")  # warm-up: imports, templates, connection
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    csv_bytes = export()
    export_seconds = time.perf_counter() - started
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    tracemalloc.start()
    export()
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    def like_summary() -> object:
        return RejectedOrder.objects.aggregate(
            **{code: Count("pk", filter=Q(reason_codes__contains=f",{code},")) for code in CODES}
        )

    def pipeline_status() -> None:
        # A stale heartbeat is a verdict (CommandError), not a failure to measure.
        with contextlib.suppress(CommandError):
            call_command("pipeline_status", "--json", stdout=StringIO(), stderr=StringIO())

    def page(path: str) -> Callable[[], None]:
        def get() -> None:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)

        return get

    changelist = "/admin/orders/rejectedorder/"
    cases: list[tuple[str, Callable[[], object]]] = [
        ("reason_summary, all rows (pipeline_status, dashboard)", lambda: reason_summary(
            RejectedOrder.objects.all())),
        ("reason_summary, status=new (a filtered changelist)", lambda: reason_summary(
            RejectedOrder.objects.filter(status="new"))),
        ("the LIKE '%,code,%' aggregate it replaced, all rows", like_summary),
        ("manage.py pipeline_status --json", pipeline_status),
        ("GET /admin/dashboard/", page("/admin/dashboard/")),
        ("GET changelist (summary + page of 50)", page(changelist)),
        ("GET changelist ?reason=value_mismatch", page(f"{changelist}?reason=value_mismatch")),
        ("GET changelist ?status__exact=new", page(f"{changelist}?status__exact=new")),
    ]  # fmt: skip
    print(f"{version.split(' on ')[0]}, shared_buffers {buffers}, work_mem {work_mem}")
    print(
        f"migration {with_codes[1]} (indexes, {code_rows:,} RejectedOrderCode rows): "
        f"{upgrade_seconds:.1f}s, the later ones {later_seconds:.1f}s; "
        f"RejectedOrder {rows_size}, RejectedOrderCode {codes_size}"
    )
    print(
        f"CSV export of {args.rows:,} rows ({csv_bytes / 2**20:,.0f} MiB): {export_seconds:.1f}s "
        f"({args.rows / export_seconds:,.0f} rows/s); peak RSS grew {rss_growth / 1024:,.1f} MiB; "
        f"peak of Python allocations while streaming {traced_peak / 2**20:,.1f} MiB"
    )
    print(f"median of {args.rounds} rounds after a warm-up, ms (min-max):")
    for name, samples in timed(cases, args.rounds).items():
        print(
            f"  {name:<55}{statistics.median(samples):>9.1f}"
            f"   ({min(samples):.1f}-{max(samples):.1f})"
        )
    out = StringIO()
    started = time.perf_counter()
    call_command("prune_rejected", stdout=out)
    prune_seconds = time.perf_counter() - started
    print(f"{out.getvalue().strip()} in {prune_seconds:.1f}s")
    out = StringIO()
    started = time.perf_counter()
    call_command("prune_rejected", stdout=out)
    print(f"again, nothing to do: {(time.perf_counter() - started) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
