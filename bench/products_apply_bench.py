"""The apply script's cost of products, run by hand: prints numbers, asserts nothing.

    .venv/bin/python bench/products_apply_bench.py [--orders 20000] [--rounds 3]
        [--appendfsync always]

Starts its own Valkey and applies ``--orders`` orders of three items each (of 97 products, from
10,000 users, over 30 days) through ``AggregateStore.apply_orders`` in batches of ten (one
script call per batch, as a consumer's batch), once as it is and once with the products left
out (``product_sums`` answering nothing: no product section, what the script did before
products; the orders and their fingerprints, which cover the items, are the same),
alternating, ``--rounds`` times each, into a fresh prefix each time. Prints the median rate
of each, their ratio, this process's CPU per batch, and Redis memory per product-day.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("LOG_LEVEL", "warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    args = parser.parse_args()

    import django

    django.setup()
    import redis

    from devtools.servers import RedisServer
    from orders.validation import Item, Order
    from stats.store import AggregateStore

    base = datetime(2025, 8, 1, tzinfo=UTC)

    def orders() -> list[Order]:
        made = []
        for n in range(args.orders):
            items = tuple(
                Item(f"P{(n * 3 + k) % 97}", 1 + (n + k) % 3, Decimal("19.99")) for k in range(3)
            )
            value = sum(int(i.unit_price * 100) * i.quantity for i in items)
            when = base + timedelta(seconds=(n * 7919) % (30 * 86400))
            made.append(Order(f"O{n}", f"U{n % 10_000}", value, items, when, when))
        return made

    from stats.store import apply as apply_module

    with_products = apply_module.product_sums
    same = orders()
    runs = {"with products": same, "without products (before)": same}
    server = RedisServer(
        data_dir=Path(tempfile.mkdtemp(prefix="orderpipe-products-apply-")),
        appendfsync=args.appendfsync,
    ).start()
    try:
        client = redis.Redis.from_url(server.url)
        rates: dict[str, list[float]] = {label: [] for label in runs}
        cpu: dict[str, list[float]] = {label: [] for label in runs}
        for round_ in range(args.rounds):
            for which, (label, batch_orders) in enumerate(runs.items()):
                apply_module.product_sums = (  # type: ignore[assignment]
                    with_products if label == "with products" else lambda lines, currency: {}
                )
                store = AggregateStore(client, prefix=f"b{round_}:{which}")
                started, cpu_started = time.perf_counter(), time.process_time()
                for start in range(0, len(batch_orders), 10):
                    store.apply_orders(batch_orders[start : start + 10])
                seconds = time.perf_counter() - started
                rates[label].append(len(batch_orders) / seconds)
                cpu[label].append((time.process_time() - cpu_started) / (len(batch_orders) / 10))
                print(f"  round {round_ + 1} {label:<26} {rates[label][-1]:>8,.0f} orders/s",
                      flush=True)  # fmt: skip
        for label in runs:
            print(
                f"{label:<26} median {statistics.median(rates[label]):>8,.0f} orders/s, "
                f"{statistics.median(cpu[label]) * 1000:.2f} ms CPU per batch of 10"
            )
        with_items, without = (statistics.median(r) for r in rates.values())
        print(f"ratio with/without: {with_items / without:.2f}")
        store = AggregateStore(client, prefix="mem")
        apply_module.product_sums = with_products
        orders_with = runs["with products"]
        for start in range(0, len(orders_with), 10):
            store.apply_orders(orders_with[start : start + 10])
        keys = [store.keys.products(0, 0)]
        keys += [k.decode() for k in client.scan_iter(match="mem:pdays:*", count=1000)]
        used = sum(client.memory_usage(k, samples=0) or 0 for k in keys)
        print(
            f"Redis memory of the products: {used / 2**10:,.0f} KiB in {len(keys)} hashes "
            f"({used / (97 * (len(keys) - 1)):,.0f} B per product-day)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
