"""The products' part of rebuild_stats and reconcile_stats at size: a PostgreSQL ledger of N
orders (``bench/ledger_fill.py``: one line each, 97 products, with its refunds by items and
cancellations), a real Valkey.

Run by hand::

    .venv/bin/python bench/products_bench.py [--rows 200000] [--users 100000] [--shards 1]
        [--database-url URL] [--drop]

Times, in this process: the products' derivation alone (``ledger.product_rows`` streamed and
summed by ``products_by_shard``: the orders' and refunds' JSON items, each cancellation's
lines from its order and refunds), its peak Python memory under ``tracemalloc``, then
``rebuild`` into an empty Redis with the products and without them (the derivation replaced
by nothing, for the difference), and ``reconcile`` with nothing to find. Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ledger_fill import add_arguments, close_ledger, fill, fill_events, open_ledger  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/orderpipe_products_bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, DEFAULT_URL)
    parser.add_argument("--shards", type=int, default=1)
    parser.set_defaults(rows=200_000)
    args = parser.parse_args()

    open_ledger(args.database_url)
    import redis

    from devtools.servers import RedisServer
    from orders import ledger, projection
    from orders.models import OrderEvent
    from orders.projection import rebuilding
    from stats.store import AggregateStore

    base = (datetime.now(UTC) - timedelta(days=366)).isoformat()
    fill(args.rows, args.users, base=base)
    fill_events(args.rows)
    events = OrderEvent.objects.count()
    cancels = OrderEvent.objects.filter(kind="cancelled").count()
    print(f"ledger: {args.rows:,} orders, {events:,} events ({cancels:,} cancellations)")

    server = RedisServer(data_dir=Path(tempfile.mkdtemp(prefix="orderpipe-products-"))).start()
    try:
        client = redis.Redis.from_url(server.url)
        store = AggregateStore(client, prefix="bench", shards=args.shards)

        def derive() -> int:
            with ledger.snapshot():
                shards = rebuilding.products_by_shard(store, ledger.product_rows(store.time_zone))
            return sum(len(days) for _s, _t, days in shards)

        def run(label: str, step: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            result = step()
            seconds = time.perf_counter() - started
            print(
                f"{label:<52} {seconds:6.2f} s  {args.rows / seconds:>9,.0f} orders/s  "
                f"(this process {time.process_time() - cpu:5.2f} s CPU)",
                flush=True,
            )
            return result

        day_hashes = run("products derived (streamed and summed, no Redis)", derive)
        tracemalloc.start()
        derive()
        _now, most = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  {day_hashes:,} product-day hashes; peak Python memory {most / 2**20:.1f} MiB")

        report = run(
            "rebuild into an empty Redis, with products", lambda: projection.rebuild(store)
        )
        print(
            f"  {report.products} products; Redis used_memory "
            f"{client.info('memory')['used_memory'] / 2**20:,.1f} MiB"
        )
        run("reconcile, nothing to find (products included)", lambda: projection.reconcile(store))
        client.flushdb()
        real = rebuilding.products_by_shard
        rebuilding.products_by_shard = lambda store, rows: []  # type: ignore[assignment]
        try:
            run("rebuild into an empty Redis, without products", lambda: projection.rebuild(store))
        finally:
            rebuilding.products_by_shard = real
    finally:
        server.stop()
    close_ledger(args.database_url, args.drop)


if __name__ == "__main__":
    main()
