"""Reading the ledger at size: the orders API and the ledger's admin over N rows on PostgreSQL.

Run by hand: ``.venv/bin/python bench/ledger_read_bench.py [--rows 1000000] [--rounds 7]``.
It creates (once) the database ``--database-url`` (default a local ``orderpipe_ledger_bench``),
migrates it, fills it with ``--rows`` ledger rows from ``--users`` users over 366 days (one
in 200 rows belongs to ``UHEAVY``, a user with many pages) and their refunds and cancellations
(7% of the orders) in server-side INSERT … SELECT generate_series statements (no Python per
row), then times each request
in-process through Django's test client (no HTTP server, no network) and prints the median
and the worst of ``--rounds`` rounds with the number of queries. Prints numbers; asserts
nothing. ``--drop`` removes the database afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ledger_fill import (  # noqa: E402
    add_arguments,
    close_ledger,
    fill,
    fill_events,
    open_ledger,
    table_size,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/orderpipe_ledger_bench"


def timed(client: Any, path: str, rounds: int) -> tuple[float, float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(path)  # warm: caches, prepared plans, buffers
    times = []
    for _ in range(rounds):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), len(queries), response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    open_ledger(args.database_url)
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's ALLOWED_HOSTS and context capture
    fill(args.rows, args.users)
    fill_events(args.rows)
    print(
        f"PostgreSQL: orders {table_size()}, events {table_size('orders_orderevent')}; "
        f"median / worst of {args.rounds} rounds, in-process"
    )

    api = Client()
    first = api.get("/users/UHEAVY/orders?page_size=100").json()
    deep = first
    for _ in range(20):  # page 21 of the heavy user
        deep = api.get(deep["next"]).json()
    admin = Client()
    superuser, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    admin.force_login(superuser)
    from orders.models import AcceptedOrder

    pk = AcceptedOrder.objects.only("pk").get(order_id="ORD00000042").pk
    cases = [
        ("API  order (accepted)", api, "/orders/ORD00000042"),
        ("API  order (refunded in part)", api, "/orders/ORD00000038"),
        ("API  order (unknown)", api, "/orders/NOPE"),
        ("API  user orders, first page of 20", api, "/users/U000042/orders"),
        ("API  user orders, page_size=100", api, "/users/U000042/orders?page_size=100"),
        ("API  heavy user, page_size=100", api, "/users/UHEAVY/orders?page_size=100"),
        ("API  heavy user, page 22 (next link)", api, deep["next"]),
        ("API  heavy user, a previous link", api, deep["previous"]),
        ("admin list (no filter)", admin, "/admin/orders/acceptedorder/"),
        ("admin search order_id prefix", admin, "/admin/orders/acceptedorder/?q=ORD0000004"),
        ("admin search user_id", admin, "/admin/orders/acceptedorder/?q=U000042"),
        ("admin day filter", admin, "/admin/orders/acceptedorder/?day=2025-01-15"),
        ("admin change view", admin, f"/admin/orders/acceptedorder/{pk}/change/"),
    ]
    for label, client, path in cases:
        median, worst, queries, status = timed(client, path, args.rounds)
        print(f"{label:<38} {median:8.1f} ms {worst:8.1f} ms  {queries} queries  {status}")
    close_ledger(args.database_url, args.drop)


if __name__ == "__main__":
    main()
