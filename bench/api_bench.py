"""Stats API benchmark: requests per second and p50/p99 latency per endpoint under gunicorn.

Run by hand: ``.venv/bin/python bench/api_bench.py [--seconds 5] [--clients 8]``. It starts
its own Redis server, fills 10,000 users over 366 days through the aggregate store, starts
gunicorn on a free port pointed at it, and fires concurrent keep-alive HTTP requests. For
comparison it answers the same by-date ranges the naive way (one HGETALL per day against
per-day hashes this script writes) next to the store's single HMGET. Prints numbers; asserts
nothing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import redis  # noqa: E402

from orderpipe.devservers import RedisServer, free_port, port_is_open  # noqa: E402
from orders.validation import Item, Order  # noqa: E402
from stats.store import AggregateStore  # noqa: E402

PREFIX = "bench"
NAIVE_PREFIX = "naive"
USERS = 10_000
FIRST_DAY = date(2024, 8, 1)
DAYS = 366
ORDERS = 60_000
BATCH = 500


def fill(store: AggregateStore, client: redis.Redis) -> None:
    """Orders through the real apply script, plus the per-day hashes a naive design keeps."""
    rng = random.Random(6)
    naive = client.pipeline(transaction=False)
    batch: list[Order] = []
    for n in range(ORDERS):
        user = f"U{rng.randrange(USERS):05d}" if n >= USERS else f"U{n:05d}"
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        when = datetime(day.year, day.month, day.day, rng.randrange(24), tzinfo=UTC)
        cents = rng.randrange(100, 50_000)
        price = Decimal(cents).scaleb(-2)
        batch.append(Order(f"O{n}", user, cents, (Item("P1", 1, price),), when, when))
        naive.hincrby(f"{NAIVE_PREFIX}:day:{day.isoformat()}", "orders", 1)
        naive.hincrby(f"{NAIVE_PREFIX}:day:{day.isoformat()}", "revenue", cents)
        if len(batch) == BATCH:
            store.apply_orders(batch)
            naive.execute()
            batch = []
    if batch:
        store.apply_orders(batch)
        naive.execute()


def naive_by_date(client: redis.Redis, start: date, end: date) -> tuple[int, int]:
    """What a simple implementation does: one HGETALL per day, one round trip each."""
    orders = revenue = 0
    day = start
    while day <= end:
        values = client.hgetall(f"{NAIVE_PREFIX}:day:{day.isoformat()}")
        orders += int(values.get(b"orders", 0))
        revenue += int(values.get(b"revenue", 0))
        day += timedelta(days=1)
    return orders, revenue


def run_load(
    make_worker: Callable[[], Callable[[], None]], clients: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Each client thread loops its own worker (own connection) until the deadline."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = time.perf_counter() + seconds
    barrier = threading.Barrier(clients + 1)

    def loop(i: int) -> None:
        work = make_worker()
        barrier.wait()
        while (started := time.perf_counter()) < deadline:
            try:
                work()
            except Exception:
                errors[i] += 1
                continue
            latencies[i].append(time.perf_counter() - started)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for lat in latencies for x in lat]
    return sum(errors), elapsed, flat


def http_worker(port: int, path: str) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def request() -> None:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")

        return request

    return make


def report(name: str, errors: int, elapsed: float, latencies: list[float]) -> None:
    if not latencies:
        print(f"{name:<44} no successful request ({errors} errors)")
        return
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(
        f"{name:<44} {len(ordered) / elapsed:>9.0f} {p50:>9.2f} {p99:>9.2f} {len(ordered):>8}"
        f"{'  errors=' + str(errors) if errors else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per endpoint")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="orderpipe-api-bench-"))
    server = RedisServer(data_dir=workdir / "redis", appendonly=False)
    server.start()
    gunicorn: subprocess.Popen[bytes] | None = None
    try:
        client = redis.Redis.from_url(server.url)
        store = AggregateStore(client, prefix=PREFIX)
        began = time.perf_counter()
        fill(store, client)
        g = store.global_stats()
        print(
            f"filled {g.total_orders} orders, {g.unique_users} users, {DAYS} days "
            f"in {time.perf_counter() - began:.1f}s (Redis {server.url})"
        )

        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
            "SECRET_KEY": "api-bench-secret-key-not-used-anywhere-else-0123456789",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "REDIS_URL": server.url,
            "REDIS_KEY_PREFIX": PREFIX,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "LOG_DIR": str(workdir / "logs"),
            "LOG_LEVEL": "warning",  # the request log at INFO would measure the log file
        }
        gunicorn = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "orderpipe.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        deadline = time.time() + 30
        while not port_is_open(port):
            if time.time() > deadline or gunicorn.poll() is not None:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.1)

        last = FIRST_DAY + timedelta(days=DAYS - 1)
        week_end = FIRST_DAY + timedelta(days=6)
        endpoints = [
            "/users/U00042/stats",
            "/stats/global",
            "/stats/top-spenders?limit=5",
            "/stats/top-buyers?limit=100",
            f"/stats/by-date?start_date={FIRST_DAY}&end_date={week_end}",
            f"/stats/by-date?start_date={FIRST_DAY}&end_date={last}",
            "/health",
            "/metrics",
            "/metrics?format=prometheus",
        ]
        print(
            f"\ngunicorn gthread: {args.workers} workers x 4 threads; {args.clients} keep-alive "
            f"clients; {args.seconds:.0f}s per endpoint; {os.cpu_count()} CPUs shared by all"
        )
        print(f"{'endpoint':<44} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'requests':>8}")
        for path in endpoints:
            http_worker(port, path)()()  # warm up: fails loudly on a non-200
            report(path, *run_load(http_worker(port, path), args.clients, args.seconds))

        print("\nby-date straight against Redis (no HTTP), same concurrency:")
        print(f"{'read':<44} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'requests':>8}")
        for label, start, end in (("7 days", FIRST_DAY, week_end), ("366 days", FIRST_DAY, last)):
            assert_same = naive_by_date(client, start, end)
            days = store.by_date(start, end)
            one = (sum(d.total_orders for d in days), sum(d.total_revenue_cents for d in days))
            if one != assert_same:
                print(f"  mismatch {label}: store {one} naive {assert_same}")

            def store_worker(start: date = start, end: date = end) -> Callable[[], None]:
                own = AggregateStore(redis.Redis.from_url(server.url), prefix=PREFIX)
                return lambda: own.by_date(start, end)

            def naive_worker(start: date = start, end: date = end) -> Callable[[], None]:
                own = redis.Redis.from_url(server.url)
                return lambda: naive_by_date(own, start, end)

            report(
                f"store.by_date {label} (1 HMGET)",
                *run_load(store_worker, args.clients, args.seconds),
            )
            report(
                f"naive {label} ({(end - start).days + 1} HGETALLs)",
                *run_load(naive_worker, args.clients, args.seconds),
            )
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(10)
        server.stop()


if __name__ == "__main__":
    main()
