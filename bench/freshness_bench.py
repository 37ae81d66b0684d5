"""Freshness benchmark, run by hand: how long an order takes from SendMessage to the stats API.

    .venv/bin/python bench/freshness_bench.py [--rates 200,800,1200] [--seconds 15]
        [--database-url URL] [--sqs fauxqs|moto] [--probes-per-second 40]

Starts its own Valkey and SQS endpoint (``devtools.servers``; fauxqs by default, whose speed
does not fall with the queue's length, or moto) and, for each rate:

1. the **floor**: a bare receiver process (``ReceiveMessage`` long polls of 10, one after
   the other, their ``DeleteMessageBatch`` on a thread behind as the consumer's; nothing
   else) while orders are sent at that rate: SendMessage to the moment a receive returns the
   order;
2. **orderpipe**: one ``manage.py consume_orders`` process (``--consumer-threads`` pollers, by
   default consume_orders' own), as deployed (ledger on ``--database-url``: a PostgreSQL
   database the bench creates, else an SQLite file), while orders are sent at that rate:
   SendMessage to the moment ``GET /users/{id}/stats``, through the project's Django stack in
   this process (test client: URL resolving, middlewares, DRF, the store's read), first
   answers 200 for the order's user.

Each run starts with one second's orders, not timed, consumed before the timed ones are sent
(a process's first batches pay for its start). The sender, a process of its own, sends what
is due every 5 ms in one SendMessageBatch (at most 10 per call), the clock of each order
started just before that call. Most orders go to 1,000 regular users; ``--probes-per-second``
of them go each to a user of its own (so its first 200 is that order), and only those are
timed. This process asks the API for every probe in flight, in turn, then sleeps 1 ms (so its
resolution is about 1 ms plus one request, ~1-3 ms, per probe in flight), its garbage
collector off meanwhile (a full pass over its objects paused it ~200 ms once a run). Prints
p50/p99/max per rate of both, the consumer's CPU per 10 orders, the prober's share of a core,
the queue's backlog at the end (a consumer that falls behind shows it there) and Valkey's own
stalls of 20 ms or more (its latency monitor: an AOF fsync the disk held up); ``--timeline``
prints every probe's time in sending order. Everything shares the machine's cores: the
sender, the prober, the consumer, Valkey, the database and the SQS endpoint.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
_tmp = tempfile.mkdtemp(prefix="orderpipe-freshness-")
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--database-url", default=f"sqlite:///{_tmp}/freshness.sqlite3")
DATABASE_URL = _pre.parse_known_args()[0].database_url
if DATABASE_URL.startswith("postgres"):
    from ledger_fill import ensure_database

    ensure_database(DATABASE_URL)
# What this process and the consumer process share (the servers' URLs are added later).
ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
    "DEBUG": "false",
    "SECRET_KEY": "freshness-bench-only-not-a-secret",
    "ALLOWED_HOSTS": "testserver,127.0.0.1",
    "SECURE_SSL_REDIRECT": "false",
    "STATS_API_AUTH": "none",
    "LOG_LEVEL": "warning",
    "LOG_DIR": _tmp,
    "DATABASE_URL": DATABASE_URL,
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "QUEUE_NAME": "freshness-orders",
}
os.environ.update(ENVIRONMENT)

# Django starts once the servers' URLs are in the environment (main), so that this process's
# stats API reads the bench's Valkey; the modules that need it are imported then.
from devtools.servers import FauxqsSQSServer, MotoSQSServer, RedisServer  # noqa: E402

if TYPE_CHECKING:
    from orders.sqs import OrderQueue


def start_django() -> None:
    import django

    django.setup()
    # Every probe's 404 until its order is applied is expected: not a warning each.
    logging.getLogger("django.request").setLevel(logging.ERROR)


TICK = 0.005  # the sender sends what is due every 5 ms (at most)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Stream:
    """Order bodies for one run: ``rate`` per second for ``seconds``; every ``probe_every``-th
    is a probe, the only order of a user of its own."""

    def __init__(self, run: str, rate: int, seconds: float, probes_per_second: int) -> None:
        self.count = int(rate * seconds)
        self.rate = rate
        from orders.samples import SampleGenerator

        generator = SampleGenerator(seed=hash(run) & 0xFFFF, users=1000, days=30, invalid_ratio=0)
        docs = [json.loads(m.body) for m in generator.messages(self.count)]
        self.probe_every = max(1, rate // max(1, probes_per_second))
        self.probes: dict[int, str] = {}
        for index, doc in enumerate(docs):
            doc["order_id"] = f"{run}-{index}"
            if index % self.probe_every == 0:
                doc["user_id"] = f"P{run}-{index}"
                self.probes[index] = doc["user_id"]
        self.bodies = [json.dumps(doc) for doc in docs]


def send(queue: OrderQueue, stream: Stream, sent_at: dict[int, float]) -> float:
    """Send ``stream`` at its rate; ``sent_at`` gets each probe's send time (time.time());
    returns how late the sender was at the end (it falls behind only if it cannot keep up)."""
    started = time.monotonic()
    position = 0
    while position < stream.count:
        due = min(stream.count, int((time.monotonic() - started) * stream.rate) + 1)
        while position < due:
            chunk = range(position, min(due, position + 10))
            now = time.time()
            for index in chunk:
                if index in stream.probes:
                    sent_at[index] = now
            queue.client.send_message_batch(
                QueueUrl=queue.url,
                Entries=[{"Id": str(i), "MessageBody": stream.bodies[i]} for i in chunk],
            )
            position = chunk[-1] + 1
        next_tick = started + (position / stream.rate)
        time.sleep(max(0.0, min(TICK, next_tick - time.monotonic())))
    return time.monotonic() - started - stream.count / stream.rate


class _Reported(dict[int, float]):
    """``sent_at`` in the sender's process: each probe's send time also goes to the parent."""

    def __init__(self, channel: Any) -> None:
        super().__init__()
        self.channel = channel

    def __setitem__(self, index: int, at: float) -> None:
        super().__setitem__(index, at)
        self.channel.put((index, at))


def _sender_child(sqs_url: str, queue_name: str, stream: Stream, channel: Any) -> None:
    from orders.sqs import OrderQueue, make_client

    late = send(OrderQueue(make_client(sqs_url), queue_name), stream, _Reported(channel))
    channel.put((-1, late))


def start_sender(sqs_url: str, queue_name: str, stream: Stream) -> tuple[Any, Any]:
    """The sender in a process of its own (its boto3 CPU would otherwise slow the prober down
    and be measured as freshness); returns (process, channel of (probe, sent time), then
    (-1, how late the sender ended))."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    channel = context.SimpleQueue()
    process = context.Process(target=_sender_child, args=(sqs_url, queue_name, stream, channel))
    process.start()
    return process, channel


def warm_up(queue: OrderQueue, run: str, rate: int) -> None:
    """Send one second's orders at ``rate`` (none timed) and wait until they are consumed:
    the first batches of a process pay for its lazy imports, connections and the Lua
    script's loading, which is start-up, not freshness."""
    from orders.samples import SampleGenerator

    generator = SampleGenerator(seed=1, users=1000, days=30, invalid_ratio=0)
    docs = [json.loads(m.body) for m in generator.messages(rate)]
    for index, doc in enumerate(docs):
        doc["order_id"] = f"{run}-warm-{index}"
    queue.send_bodies([json.dumps(doc) for doc in docs])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        depth = queue.depth()
        if depth.visible + depth.in_flight == 0:
            break
        time.sleep(0.2)
    time.sleep(0.5)


def probe_api(
    client: Any, stream: Stream, channel: Any
) -> tuple[dict[int, float], dict[int, float], float]:
    """Ask ``GET /users/{id}/stats`` for every probe sent and not yet seen, in turn, until all
    are seen (or 30 s after the sender's end); returns the probes' send times, when each was
    first seen (both time.time()), and how late the sender ended."""
    sent_at: dict[int, float] = {}
    seen: dict[int, float] = {}
    pending: dict[int, str] = {}
    late: float | None = None
    deadline = float("inf")
    while len(seen) < len(stream.probes) and time.monotonic() < deadline:
        while not channel.empty():
            index, at = channel.get()
            if index < 0:
                late, deadline = at, time.monotonic() + 30
            else:
                sent_at[index] = at
                pending[index] = f"/users/{stream.probes[index]}/stats"
        for index, path in list(pending.items()):
            response = client.get(path)
            if response.status_code == 200:
                seen[index] = time.time()
                del pending[index]
            elif response.status_code != 404:
                raise RuntimeError(f"{path}: {response.status_code} {response.content[:200]!r}")
        time.sleep(0.001)  # not a busy loop: the consumer needs the cores more
    return sent_at, seen, late if late is not None else float("nan")


def bare_receiver(sqs_url: str, queue_name: str, probes_file: str, stop_file: str) -> None:
    """A child process: receive and delete until ``stop_file`` exists; writes each message's
    receive time (time.time()) by order id to ``probes_file``."""
    start_django()
    from orders.consumer_threads import Deleter
    from orders.sqs import OrderQueue, make_client

    queue = OrderQueue(make_client(sqs_url), queue_name)
    deleter = Deleter(queue)  # as the consumer deletes: behind, so receives follow each other
    seen: dict[str, float] = {}
    while not os.path.exists(stop_file):
        messages = queue.receive(max_messages=10, wait_time=1)
        now = time.time()
        for message in messages:
            seen[json.loads(message["Body"])["order_id"]] = now
        if messages:
            deleter.submit([m["ReceiptHandle"] for m in messages])
    deleter.close()
    Path(probes_file).write_text(json.dumps(seen))


def run_floor(sqs_url: str, queue: OrderQueue, stream: Stream, run: str) -> list[float]:
    probes_file, stop_file = f"{_tmp}/{run}.json", f"{_tmp}/{run}.stop"
    child = subprocess.Popen(
        [sys.executable, __file__, "--bare-receiver", sqs_url, queue.name, probes_file, stop_file],
        env={**os.environ},
    )
    time.sleep(1.5)  # Django is up
    warm_up(queue, run, stream.rate)
    sender, channel = start_sender(sqs_url, queue.name, stream)
    sender.join(stream.count / stream.rate + 60)
    sent_at: dict[int, float] = {}
    late = float("nan")
    while not channel.empty():
        index, at = channel.get()
        if index < 0:
            late = at
        else:
            sent_at[index] = at
    time.sleep(1.0)
    Path(stop_file).touch()
    child.wait(30)
    received = json.loads(Path(probes_file).read_text())
    print(f"    floor: sender {late * 1000:.0f} ms late at the end")
    return [
        (received[f"{run}-{index}"] - at) * 1000
        for index, at in sorted(sent_at.items())
        if f"{run}-{index}" in received
    ]


def run_consumer(
    sqs_url: str,
    queue: OrderQueue,
    stream: Stream,
    environment: dict[str, str],
    run: str,
    threads: int | None = None,
) -> tuple[list[float], float, int]:
    log = open(f"{_tmp}/{run}-consumer.log", "wb")  # noqa: SIM115 - closed below
    child = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "consume_orders",
            "--log-interval",
            "3600",
            *(["--threads", str(threads)] if threads else []),
        ],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    cpu_before = _cpu_seconds(child.pid)
    time.sleep(3.0)  # Django starts
    warm_up(queue, run, stream.rate)
    cpu_start = _cpu_seconds(child.pid)
    from django.test import Client

    client = Client()
    client.get("/users/warm-up/stats")  # the first request imports the API's modules
    sender, channel = start_sender(sqs_url, queue.name, stream)
    # The prober is the instrument: a full collection over this process's objects (Django,
    # the streams) paused it for ~200 ms once a run (measured with gc.callbacks), which read
    # as every probe in flight arriving late. Its collector is off while it probes.
    gc.disable()
    probing_cpu, probing_wall = time.process_time(), time.monotonic()
    try:
        sent_at, seen, late = probe_api(client, stream, channel)
    finally:
        gc.enable()
    probing = (time.process_time() - probing_cpu) / (time.monotonic() - probing_wall)
    sender.join(30)
    while not channel.empty():  # every probe was seen before the sender said how late it was
        index, at = channel.get()
        if index < 0:
            late = at
    cpu = _cpu_seconds(child.pid) - cpu_start
    depth = queue.depth()
    child.terminate()
    child.wait(30)
    log.close()
    print(
        f"    consumer: sender {late * 1000:.0f} ms late at the end; "
        f"consumer CPU {cpu / (stream.count / 10) * 1000:.2f} ms per 10 orders "
        f"(start-up and warm-up {cpu_start - cpu_before:.1f} s); backlog at the end "
        f"{depth.visible + depth.in_flight}; {len(stream.probes) - len(seen)} probes never "
        f"seen; the prober used {probing:.0%} of a core"
    )
    return (
        [(seen[i] - sent_at[i]) * 1000 for i in sorted(seen)],
        cpu,
        depth.visible + depth.in_flight,
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no samples"
    return (
        f"{label}: p50 {statistics.median(values):6.1f} ms  p99 {percentile(values, 0.99):6.1f} ms"
        f"  max {max(values):7.1f} ms  ({len(values)} probes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="200,800,1200", help="orders per second, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="sending time per run")
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--sqs", choices=("fauxqs", "moto"), default="fauxqs")
    parser.add_argument("--probes-per-second", type=int, default=40)
    parser.add_argument("--no-floor", action="store_true", help="skip the bare receiver runs")
    parser.add_argument(
        "--consumer-threads",
        type=int,
        default=None,
        help="consume_orders --threads (pollers); default: consume_orders' own default",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="also print each probe's ms in sending order"
    )
    args = parser.parse_args()
    redis_server = RedisServer(data_dir=Path(_tmp) / "redis").start()
    server_type: Callable[[], Any] = FauxqsSQSServer if args.sqs == "fauxqs" else MotoSQSServer
    sqs_server = server_type().start()
    os.environ.update(REDIS_URL=redis_server.url, LOCALSTACK_URL=sqs_server.url)
    import redis

    valkey = redis.Redis.from_url(redis_server.url)
    # Valkey records every event of its own that took 20 ms or more (an AOF fsync the disk
    # held up, say): a stall of the whole pipeline shows whether it came from there.
    valkey.config_set("latency-monitor-threshold", 20)
    environment = {**os.environ}
    try:
        start_django()
        from django.core.management import call_command
        from django.db import connection

        from orders.consumer import DEFAULT_POLLERS
        from orders.sqs import OrderQueue, make_client

        call_command("migrate", verbosity=0)
        # Probe ids repeat from run to run: an earlier run's rows in a kept PostgreSQL ledger
        # would turn every probe into a rejected duplicate_order_id, never seen in the API.
        from benchsetup import empty_ledger

        empty_ledger()
        vendor = connection.vendor
        connection.close()
        queue = OrderQueue(make_client(sqs_server.url), ENVIRONMENT["QUEUE_NAME"])
        queue.ensure(visibility_timeout=30)
        print(
            f"{args.sqs} + Valkey (AOF always), ledger on {vendor}, "
            f"{args.consumer_threads or DEFAULT_POLLERS} poller(s) (consume_orders' default: "
            f"{DEFAULT_POLLERS}), "
            f"{args.seconds:g} s per run, {args.probes_per_second} probes/s, "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        for rate in (int(r) for r in args.rates.split(",")):
            print(f"{rate} orders/s (load average {os.getloadavg()[0]:.2f}):")
            if not args.no_floor:
                stream = Stream(f"f{rate}", rate, args.seconds, args.probes_per_second)
                print("    " + describe("bare receiver", run_floor(sqs_server.url, queue, stream,
                                                                     f"f{rate}")))  # fmt: skip
            stream = Stream(f"c{rate}", rate, args.seconds, args.probes_per_second)
            latencies, _, _ = run_consumer(
                sqs_server.url, queue, stream, environment, f"c{rate}", args.consumer_threads
            )
            print("    " + describe("consume_orders -> API", latencies))
            stalls = valkey.latency_latest()
            valkey.latency_reset()
            if stalls:
                print("    Valkey's own stalls of 20 ms or more (event, last ms, worst ms): "
                      + ", ".join(f"{s[0].decode()} {s[2]} {s[3]}" for s in stalls))  # fmt: skip
            if args.timeline:
                print("    " + " ".join(f"{ms:.0f}" for ms in latencies))
    finally:
        sqs_server.stop()
        redis_server.stop()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--bare-receiver":
        bare_receiver(*sys.argv[2:])
    else:
        main()
