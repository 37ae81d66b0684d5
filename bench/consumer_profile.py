"""Where the consumer's Python CPU goes, per batch, run by hand: prints numbers, asserts nothing.

    .venv/bin/python bench/consumer_profile.py [--orders 5000] [--database-url URL]
        [--sqs-latency-ms MS] [--events-share F] [--pyinstrument PATH] [--rounds 3]

Starts its own Valkey and fauxqs (``devtools.servers``), fills the queue, and runs the
consumer as ``consume_orders`` does (``Consumer.run``: one poller, the receive one batch
ahead, the background deleter, the visibility keeper) until the queue is empty. Each step of
a batch is timed in the thread that runs it with ``time.thread_time`` (CPU, not wall):

  receive     ``OrderQueue.receive`` (boto3 builds, signs, sends and parses the request;
              the receiver thread)
  validate    ``orders.commit.validate_batch`` (the poller)
  ledger      ``BatchCommitter._record``: the connection check, the transaction, the
              ledger's rows, the rejects (the poller)
  redis       ``AggregateStore.apply_batch``: the script call(s) (the poller)
  delete      ``OrderQueue.delete`` (the deleter thread)
  bookkeeping the process's CPU minus the above: the rest of the loop (handing batches
              between threads, the keeper, the tally, the batch token), the main thread

and the database's own share of the ledger step (``cursor.execute``, wall and CPU).
``--pyinstrument PATH`` also writes the poller thread's pyinstrument profile (text) to PATH.
``--events-share`` makes that share of the messages refunds and cancellations of orders sent
earlier in the stream (each order sent before its events).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchsetup import empty_ledger, setup_django

_tmp, DATABASE_URL, _pre = setup_django(
    "profile", DEBUG="false", SECRET_KEY="bench-only-not-secret", ALLOWED_HOSTS="*"
)

import redis  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.backends import utils as db_utils  # noqa: E402

from devtools.servers import FauxqsSQSServer, RedisServer  # noqa: E402
from orders import commit  # noqa: E402
from orders.consumer import Consumer  # noqa: E402
from orders.samples import SampleGenerator  # noqa: E402
from orders.sqs import OrderQueue, make_client  # noqa: E402
from stats.store import AggregateStore  # noqa: E402

SECTIONS = ("receive", "validate", "ledger", "redis", "delete")


class Meter:
    """CPU (thread_time) and wall seconds per section, summed over every thread."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def wrap(self, section: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                with self.lock:
                    self.cpu[section] += cpu
                    self.wall[section] += wall
                    self.calls[section] += 1

        return timed


def instrument(meter: Meter) -> Callable[[], None]:
    """Wrap each section's function; returns what undoes it."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, section: str) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, meter.wrap(section, original))

    patch(OrderQueue, "receive", "receive")
    patch(commit, "validate_batch", "validate")
    patch(commit.BatchCommitter, "_record", "ledger")
    patch(AggregateStore, "apply_batch", "redis")
    patch(OrderQueue, "delete", "delete")
    # The database's share of the ledger step: every statement (fetches are not counted).
    for name in ("execute", "executemany"):
        patch(db_utils.CursorWrapper, name, "  of which SQL")

    def undo() -> None:
        for owner, name, original in reversed(saved):
            if original is None:  # inherited: uncover the base class's again
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    return undo


class ProfiledConsumer(Consumer):
    """The consumer with its poller thread under pyinstrument."""

    profile_path: Path | None = None

    def run_worker(self) -> None:
        if self.profile_path is None:
            super().run_worker()
            return
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        try:
            super().run_worker()
        finally:
            profiler.stop()
            self.profile_path.write_text(profiler.output_text(unicode=True, show_all=False))
            self.profiled.set()

    profiled = threading.Event()


def add_latency(client: object, seconds: float) -> None:
    def delay(**_: object) -> None:
        time.sleep(seconds)

    client.meta.events.register("before-send.sqs", delay)  # type: ignore[attr-defined]


def stream(count: int, events_share: float, seed: int) -> list[str]:
    """``count`` bodies: valid orders, and with ``events_share`` refunds (of one unit of an
    item, or of an amount) and cancellations of orders sent earlier, never twice the same."""
    generator = SampleGenerator(seed=seed, users=1000, days=365, invalid_ratio=0.0)
    rng = random.Random(seed)
    events = int(count * events_share)
    orders = generator.messages(count - events)
    bodies = [m.body for m in orders]
    if not events:
        return bodies
    docs = [json.loads(b) for b in bodies]
    targets = rng.sample(range(len(docs)), events)
    # Each event after its order: insert it at a random later position.
    out: list[tuple[float, str]] = [(float(i), b) for i, b in enumerate(bodies)]
    for n, index in enumerate(sorted(targets)):
        doc = docs[index]
        roll = rng.random()
        event: dict[str, Any] = {"event_id": f"EV{seed}-{n:07d}", "order_id": doc["order_id"]}
        if roll < 0.3:
            event["type"] = "order.cancelled"
        elif roll < 0.65:
            item = doc["items"][0]
            event.update(
                type="order.refunded",
                items=[{"product_id": item["product_id"], "quantity": 1}],
                reason="damaged",
            )
        else:
            event.update(type="order.refunded", amount=1)
        later = rng.uniform(index + 0.5, len(docs))
        out.append((later, json.dumps(event)))
    out.sort(key=lambda pair: pair[0])
    return [b for _, b in out]


def fill(queue: OrderQueue, bodies: list[str], threads: int = 4) -> None:
    chunks = [bodies[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=queue.send_bodies, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def one_round(
    queue: OrderQueue, store: AggregateStore, profile: Path | None, threads: int = 1
) -> tuple[dict[str, float], dict[str, float], float, float, int, int]:
    meter = Meter()
    undo = instrument(meter)
    ProfiledConsumer.profile_path = profile
    consumer = ProfiledConsumer(queue, store, wait_time=1, until_empty=True, log_interval=3600)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        consumer.run(threads=threads)
        if profile is not None:
            consumer.profiled.wait(30)  # run() may return before the poller has ended
    finally:
        undo()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    received = consumer.tally.snapshot()[0]
    batches = meter.calls["validate"]
    return dict(meter.cpu), dict(meter.wall), cpu, wall, received, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000, help="messages per round")
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--sqs-latency-ms", type=float, default=0.0, metavar="MS")
    parser.add_argument("--events-share", type=float, default=0.0, metavar="F")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="pollers (consume_orders --threads)")
    parser.add_argument("--pyinstrument", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    redis_server = RedisServer(data_dir=Path(_tmp) / "redis").start()
    sqs_server = FauxqsSQSServer().start()
    try:
        queue = OrderQueue(make_client(sqs_server.url), "profile-orders")
        queue.ensure(visibility_timeout=30)
        filler = OrderQueue(make_client(sqs_server.url), "profile-orders")
        if args.sqs_latency_ms:
            add_latency(queue.client, args.sqs_latency_ms / 1000)
        client = redis.Redis.from_url(redis_server.url)
        bodies = stream(args.orders, args.events_share, seed=7)
        print(
            f"{len(bodies)} messages ({args.events_share:.0%} events), {args.threads} poller(s), "
            f"ledger on "
            f"{connection.vendor}, +{args.sqs_latency_ms:g} ms per SQS call, "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        rows: list[dict[str, float]] = []
        for round_ in range(args.rounds):
            empty_ledger()
            fill(filler, bodies)
            store = AggregateStore(client, prefix=f"profile{round_}", dedup_ttl=3600)
            last = round_ == args.rounds - 1
            cpu_by, wall_by, cpu, wall, received, batches = one_round(
                queue, store, args.pyinstrument if last else None, args.threads
            )
            per = 1000 / batches
            row = {name: cpu_by.get(name, 0.0) * per for name in SECTIONS}
            row["  of which SQL"] = cpu_by.get("  of which SQL", 0.0) * per
            row["  SQL wall"] = wall_by.get("  of which SQL", 0.0) * per
            row["  ledger wall"] = wall_by.get("ledger", 0.0) * per
            row["  redis wall"] = wall_by.get("redis", 0.0) * per
            row["bookkeeping"] = cpu * per - sum(row[name] for name in SECTIONS)
            row["total"] = cpu * per
            row["msg/s"] = received / wall
            row["batch size"] = received / batches
            rows.append(row)
            print(
                f"round {round_ + 1}: {received} messages in {batches} batches, "
                f"{received / wall:.0f} msg/s, {cpu * per:.2f} ms CPU per batch, "
                f"load {os.getloadavg()[0]:.2f}"
            )
        print("\nCPU ms per batch (median of the rounds; wall where it says so):")
        for name in (*SECTIONS[:3], "  of which SQL", "  SQL wall", "  ledger wall",
                     "redis", "  redis wall", "delete", "bookkeeping", "total", "msg/s",
                     "batch size"):  # fmt: skip
            print(f"  {name:16s} {statistics.median(r[name] for r in rows):8.2f}")
        if args.pyinstrument:
            print(f"pyinstrument profile of the poller (last round): {args.pyinstrument}")
    finally:
        sqs_server.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
