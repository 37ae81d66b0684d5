"""Chaos run (``make chaos``): prove the ingestion guarantees under crashes and outages, against
an oracle.

    .venv/bin/python bench/chaos.py [--orders 10000] [--seed 7] [--sqs fauxqs|moto]
        [--cluster] [--database-url postgres://postgres@127.0.0.1:5432]
        [--kill-rebuilds N] [--kill-repairs N]

Starts a real Redis (Valkey, AOF with appendfsync always, data on disk; with ``--cluster`` a
3-primary Valkey cluster, ``REDIS_CLUSTER=true REDIS_SHARDS=8``), a local SQS server (fauxqs,
or moto with the producer keeping the backlog short) and a database (an SQLite file in the
workdir; with ``--database-url`` / ``CHAOS_DATABASE_URL`` a PostgreSQL database of the run's
own, created on that server and dropped afterwards), then runs two ``consume_orders``
processes while it:

* sends the orders (10% invalid, 5% exact duplicates, then 1% conflicting re-sends of an
  earlier order_id and the poison bodies once the originals are in) and their events: 5% of the
  orders refunded (whole, in part by amount or by items), 2% cancelled, 1% given an
  over-refund that must be rejected, 10% of the events sent before their order, 10% sent twice,
  and once the originals are in, 5% re-sent with the same event_id and another payload (a
  conflict that must be rejected); ``--no-events``: orders only;
* kills -9 one consumer three times at random moments and restarts it;
* single node: stops Redis for ~5 s and starts it again on the same data, and kills -9 Redis
  once (appendfsync always: an acknowledged write is on disk) and restarts it;
* cluster: stops one primary for ~5 s and starts it again; the others declare it failed and
  the whole cluster answers CLUSTERDOWN until it is back (no replicas), an outage the
  consumers ride out with their batches in hand;
* with ``--kill-rebuilds N``, runs ``rebuild_stats`` N times while the consumers ingest and
  kills it with kill -9 at a random point of its run: during start-up, while it writes its
  generation, just before or during its switch, while it drops the old generation (the point
  is chosen, then reached by watching the command's log); with ``--kill-repairs N`` the same
  with ``reconcile_stats --repair --settle 0``, started right after the run itself took a
  batch and committed it to the ledger only (a consumer killed between its database commit and
  its Redis script: until SQS redelivers it those orders are recorded and not applied, a
  difference the repair counts under the lock), killed while it runs. Both run
  with ``--lock-ttl 3``, so the consumers wait at most 3 s after each kill (a Redis outage
  due meanwhile waits for that lease to run out, so that it meets consumers that consume);
* finally sends SIGTERM to both consumers (they must exit 0).

Then every aggregate the API serves (per user: orders, gross, refunded, net, cancelled; global:
the same and unique users; the top-N by net spend and by orders; the top-N products by revenue
and by units; every day and the range's totals: orders, gross, refunded on the day the refund
occurred, net) and the ledger (``AcceptedOrder``: every order, its user, cents and day;
``OrderEvent``: every accepted event, its order, user, kind and cents; no event left waiting)
are compared with an oracle computed from what was sent (``orders.samples.expected_totals``),
before any reconcile (a killed rebuild or repair must have lost nothing); then what the killed
commands left behind is counted, ``rebuild_stats --cleanup`` must remove it, and
``reconcile_stats`` must find no difference. Redis is then emptied (FLUSHALL on every primary:
the run started them), ``rebuild_stats`` derives the aggregates again from the ledger, the API
must serve the oracle again and ``reconcile_stats`` agree.
Prints expected vs got, ``lost=0 double_counted=0 mismatched_users=0``, the timings; exits 1
on any difference. Bounded in time: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

Row = tuple[str, Any, Any]  # what, expected, got

# Where a killed command stops: a name and the log line that marks the point (None: at a
# random moment of its start-up).
REBUILD_POINTS: list[tuple[str, str | None]] = [
    ("during its start-up", None),
    ("while it writes its generation", "rebuild_stats: writing generation"),
    ("just before or during its switch", "written; switching"),
    ("while it drops the old generation", "rebuild_stats: switched to generation"),
]
# The --lock-ttl of the rebuilds and repairs the run kills: the consumers wait at most that
# long after each kill.
LOCK_TTL = 3
REPAIR_POINTS: list[tuple[str, str | None]] = [
    ("during its start-up or first pass", None),
    ("while it compares and repairs under the lock", "comparing again under the lock"),
    ("while it checks its repair", "repair writes; checking"),
]


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


class ScratchPostgres:
    """A database of the chaos run's own on a PostgreSQL server: created before the run,
    dropped after it. ``server_url`` names the server; its database (``postgres`` when it
    names none) is only connected to for CREATE and DROP DATABASE, and no other database is
    ever touched."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise SystemExit(f"--database-url must be a postgres:// URL, got {parts.scheme}://")
        self.name = f"orderpipe_chaos_{uuid.uuid4().hex[:10]}"
        admin_db = parts.path.lstrip("/") or "postgres"
        self.admin_url = urlunsplit(("postgresql", parts.netloc, f"/{admin_db}", parts.query, ""))
        self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", parts.query, ""))
        self.created = False

    def create(self) -> ScratchPostgres:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.created = True
        return self

    def drop(self) -> None:
        """FORCE ends the sessions still open on this database (a killed consumer's)."""
        if not self.created:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
        self.created = False


@dataclass
class CommandRun:
    """A manage.py command run as a child process, as an operator would run it."""

    code: int
    seconds: float
    summary: str  # the command's own last line (its count, time and orders/s)
    output: str

    @property
    def work(self) -> str:
        """The command's own figures: ``0.3s, 35,000 orders/s``."""
        found = re.search(r"in ([\d.]+s) \(([\d,]+ orders/s)\)", self.summary)
        return ", ".join(found.groups()) if found else repr(self.summary)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="orderpipe-chaos-"))
        self.today = date.today()
        self.shards = args.shards if args.cluster else 1
        self.database: ScratchPostgres | None = None
        self.clusterdown_seen: bool | None = None
        self.timings: dict[str, float] = {}
        self.log_offsets: dict[str, int] = {}
        self.kills: list[str] = []  # the commands killed while they ran
        # When the lease of the last killed command has surely run out (monotonic).
        self.lease_until = 0.0

    # --- setup ------------------------------------------------------------------------------
    def start_servers(self) -> None:
        from devtools.servers import (
            FauxqsSQSServer,
            MotoSQSServer,
            RedisServer,
            ValkeyCluster,
            prefix_spread_over_every_primary,
        )
        from orderpipe.config import redact_url

        self.prefix = "chaos"
        if self.args.cluster:
            from redis.cluster import RedisCluster

            self.redis = ValkeyCluster(
                nodes=3,
                data_dir=self.workdir / "cluster",
                appendfsync=self.args.appendfsync,
                node_timeout_ms=self.args.node_timeout_ms,
            ).start()
            with contextlib.closing(RedisCluster.from_url(self.redis.url)) as client:
                # The shards must cover every primary, or a stopped primary might hold none.
                self.prefix = prefix_spread_over_every_primary(client, "chaos", self.shards)
            redis_shown = (
                f"valkey cluster {self.redis.ports} (3 primaries, appendfsync "
                f"{self.args.appendfsync}, node timeout {self.args.node_timeout_ms} ms), "
                f"{self.shards} shards, prefix {self.prefix!r}"
            )
        else:
            self.redis = RedisServer(
                data_dir=self.workdir / "redis",
                appendfsync=self.args.appendfsync,
                log_path=self.workdir / "redis.log",
            ).start()
            redis_shown = f"redis {self.redis.url} (appendfsync {self.args.appendfsync})"
        self.sqs = None
        if self.args.sqs == "fauxqs":
            try:
                self.sqs = FauxqsSQSServer(log_path=self.workdir / "sqs.log").start()
            except Exception as exc:
                log(f"fauxqs unavailable ({exc}); falling back to moto with a short backlog")
        if self.sqs is None:
            self.sqs = MotoSQSServer(log_path=self.workdir / "sqs.log").start()
        self.max_backlog = 10**9 if isinstance(self.sqs, FauxqsSQSServer) else 200
        if self.args.database_url:
            self.database = ScratchPostgres(self.args.database_url).create()
            database_url = self.database.url
        else:
            database_url = f"sqlite:///{self.workdir / 'chaos.sqlite3'}"
        log(f"{redis_shown}; sqs {self.sqs.url} ({self.sqs.name}); database "
            f"{redact_url(database_url)}; workdir {self.workdir}")  # fmt: skip

        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
            "DEBUG": "true",
            "SECRET_KEY": "chaos-run-local-only",
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis.url,
            "REDIS_CLUSTER": "true" if self.args.cluster else "false",
            "REDIS_SHARDS": str(self.shards),
            "REDIS_KEY_PREFIX": self.prefix,
            "REDIS_SOCKET_TIMEOUT": "2",
            "LOCALSTACK_URL": self.sqs.url,
            "QUEUE_NAME": "chaos-orders",
            "SQS_VISIBILITY_TIMEOUT": "3",
            "LOG_DIR": str(self.workdir / "logs"),
            "LOG_LEVEL": "info",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONUNBUFFERED": "1",
        }
        os.environ.update({k: v for k, v in self.env.items() if k != "PYTHONUNBUFFERED"})
        import django

        django.setup()
        from django.core.management import call_command

        from orders.sqs import OrderQueue, make_client

        call_command("migrate", verbosity=0)
        self.queue = OrderQueue(make_client(self.sqs.url), "chaos-orders")
        self.queue.ensure(max_receive_count=5, visibility_timeout=3)

    # --- the messages -------------------------------------------------------------------------
    def build_messages(self) -> None:
        from orders.samples import SampleGenerator, poison_bodies

        events = 0.0 if self.args.no_events else 1.0
        generator = SampleGenerator(
            seed=self.args.seed, users=self.args.users, days=30, invalid_ratio=0.10,
            duplicate_ratio=0.05, conflict_ratio=0.01, today=self.today,
            refund_ratio=0.05 * events, cancel_ratio=0.02 * events, early_event_ratio=0.1,
            event_duplicate_ratio=0.1, event_conflict_ratio=0.05, over_refund_ratio=0.01 * events,
        )  # fmt: skip
        self.messages = generator.messages(self.args.orders)
        # A conflict's effect depends on which version is applied first; sending conflicts
        # after the originals are in makes "first wins" deterministic for the oracle (an
        # event's conflict differs only in its reason, but a redelivered original arriving
        # after it would be a second reject).
        later = ("conflict", "event_conflict")
        self.first_wave = [m for m in self.messages if m.kind not in later]
        self.second_wave = [m.body for m in self.messages if m.kind in later]
        self.poison = poison_bodies()
        self.second_wave += list(self.poison.values())

    def send(self, bodies: list[str], rate: float) -> None:
        """Send at about ``rate`` msg/s so the chaos events land while orders flow."""
        started = time.monotonic()
        for i in range(0, len(bodies), 10):
            while self.queue.depth().visible > self.max_backlog:
                time.sleep(0.05)
            self.queue.send_bodies(bodies[i : i + 10])
            ahead = (i + 10) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    # --- the processes --------------------------------------------------------------------------
    def start_consumer(self, name: str) -> subprocess.Popen[bytes]:
        path = self.workdir / f"{name}.log"
        log_file = open(path, "ab")  # noqa: SIM115
        self.log_offsets[name] = path.stat().st_size
        return subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "consume_orders", "--wait-time", "1",
             "--max-backoff", "1", "--log-interval", "5", "--threads", "2"],
            env=self.env, stdout=log_file, stderr=subprocess.STDOUT, cwd=BASE_DIR,
        )  # fmt: skip

    def consuming(self, name: str) -> bool:
        """Whether consumer ``name``, since its last start, has its signal handlers and says
        it is consuming (a SIGTERM before that kills it during start-up: nothing to finish,
        but no exit 0 either)."""
        with open(self.workdir / f"{name}.log", "rb") as text:
            text.seek(self.log_offsets[name])
            return b" consuming " in text.read()

    def rode_out(self, name: str) -> bool:
        """Consumer ``name`` (never killed) met the Redis outage with a batch in hand and
        resumed: one outage start and end in its log (kept, nothing deleted, no exit)."""
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return "ERROR orders.consumer Redis unavailable" in text and "Redis is back" in text

    def manage(self, *argv: str) -> CommandRun:
        """``manage.py argv`` in a child process with the consumers' environment."""
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *argv],
            env=self.env, cwd=BASE_DIR, capture_output=True, text=True, timeout=self.args.timeout,
        )  # fmt: skip
        seconds = time.monotonic() - started
        lines = [line for line in run.stdout.splitlines() if line.strip()]
        with open(self.workdir / f"{argv[0]}.log", "a") as out:
            out.write(run.stdout + run.stderr)
        return CommandRun(run.returncode, seconds, lines[-1] if lines else "", run.stdout)

    def strand_a_batch(self) -> None:
        """Receive a batch and commit it to the ledger only, like a consumer killed between
        its database commit and its Redis script: until SQS redelivers it (3 s), its orders
        are recorded and not applied, so the repair started next has them to count."""
        from orders.commit import BatchCommitter, validate_batch
        from stats.store import get_store

        messages: list[dict[str, Any]] = []
        batch = validate_batch([], datetime.now(UTC))
        for _attempt in range(5):  # the consumers take most batches first
            messages = self.queue.receive(wait_time=1, visibility_timeout=3)
            batch = validate_batch(messages, datetime.now(UTC))
            if batch.orders:
                break
        # The consumer's own database step (ledger rows, events, rejects in one transaction),
        # so that waiting events attached or refused there are recorded as a consumer would.
        committer = BatchCommitter(get_store(), self.queue.name)
        for _attempt in range(20):  # SQLite: the consumers hold the one writer now and then
            try:
                committer._record(batch, datetime.now(UTC))
                break
            except Exception as exc:  # "database is locked": try again
                log(f"stranding a batch: {exc}; again")
                time.sleep(0.1)
        log(f"stranded a batch of {len(messages)} messages ({len(batch.orders)} valid orders, "
            f"{len(batch.events)} events recorded in the ledger, not applied, not "
            "deleted)")  # fmt: skip

    def kill_command(self, argv: list[str], points: list[tuple[str, str | None]]) -> None:
        """Start ``manage.py argv`` beside the consumers and kill -9 it at a point of its run
        chosen at random: when its log shows a line (plus up to a random fraction of a
        second), or at a random moment of its start-up."""
        label, line = self.rng.choice(points)
        delay = self.rng.uniform(0.0, 0.1) if line else self.rng.uniform(0.2, 2.5)
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), *argv],
            env=self.env, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(raw.decode(errors="replace") for raw in process.stdout),
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + 60
        while line and not any(line in text for text in lines) and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        time.sleep(delay)
        finished = process.poll()
        if finished is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
        reader.join(5)
        with open(self.workdir / f"{argv[0]}-killed.log", "a") as out:
            out.write("".join(lines) + f"--- {label}, exit {process.returncode}\n")
        last = lines[-1].strip() if lines else "(no output)"
        if finished is None:
            self.kills.append(argv[0])
            self.lease_until = time.monotonic() + LOCK_TTL + 1
            log(f"killed {argv[0]}, aimed {label} (+{delay:.2f}s, "
                f"{time.monotonic() - started:.1f}s after its start); its last line: "
                f"{last[-150:]}")  # fmt: skip
        else:
            log(f"{argv[0]} finished (exit {finished}) before the kill aimed {label}; its last "
                f"line: {last[-150:]}")  # fmt: skip

    def stop_primary(self) -> None:
        """Stop one primary for ``--redis-down`` seconds, watching for the cluster to go down.

        Any primary, the one REDIS_URL names included (a consumer restarted while it is down
        waits for it).
        """
        import redis

        index = self.rng.choice(range(len(self.redis.nodes)))
        watcher = self.redis.nodes[(index + 1) % len(self.redis.nodes)]
        self.redis.stop_node(index)
        stopped = time.monotonic()
        down_after = None
        while time.monotonic() - stopped < self.args.redis_down:
            if down_after is None:
                with contextlib.suppress(redis.RedisError):
                    if watcher.cluster_info().get("cluster_state") == "fail":
                        down_after = time.monotonic() - stopped
            time.sleep(0.1)
        self.redis.start_node(index)  # returns once the cluster is ok again
        self.clusterdown_seen = down_after is not None
        down = f"from {down_after:.1f}s after the stop" if down_after is not None else "never"
        log(f"primary {index} (port {self.redis.nodes[index].port}) started again after "
            f"{self.args.redis_down:.0f}s; cluster_state fail {down}; cluster ok "
            f"{time.monotonic() - stopped:.1f}s after the stop")  # fmt: skip

    def run(self) -> int:
        run_started = time.monotonic()
        self.start_servers()
        self.build_messages()
        consumers = self.consumers = {"a": self.start_consumer("a"), "b": self.start_consumer("b")}
        # The clock of the events starts once both consume, so that the outage meets
        # consumers with batches in hand rather than ones still starting up.
        for name in consumers:
            wait_until(lambda n=name: self.consuming(n), self.args.timeout, f"consumer {name}")
        first = [m.body for m in self.first_wave]
        duration = len(first) / self.args.rate
        sender = threading.Thread(target=self.send, args=(first, self.args.rate), daemon=True)
        started = time.monotonic()
        sender.start()
        log(f"sending {len(first)} messages over ~{duration:.0f}s; two consumers running")

        events: list[tuple[float, str]] = [
            (self.rng.uniform(0.1, 0.9) * duration, "kill -9 consumer a") for _ in range(3)
        ]
        events += [
            (self.rng.uniform(0.05, 0.95) * duration, "kill -9 rebuild_stats")
            for _ in range(self.args.kill_rebuilds)
        ]
        events += [
            (self.rng.uniform(0.05, 0.95) * duration, "kill -9 reconcile_stats --repair")
            for _ in range(self.args.kill_repairs)
        ]
        if self.args.cluster:
            events.append((self.rng.uniform(0.2, 0.6) * duration, "stop a primary"))
        else:
            events.append((self.rng.uniform(0.2, 0.5) * duration, "stop redis"))
            events.append((self.rng.uniform(0.6, 0.9) * duration, "kill -9 redis"))
        for at, what in sorted(events):
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            if what in ("stop a primary", "stop redis", "kill -9 redis"):
                # The outage must meet consumers that consume: not ones waiting out the
                # lease of a rebuild or repair killed a moment ago (they would not touch
                # Redis until it ran out, and the outage would prove nothing).
                time.sleep(max(0.0, self.lease_until - time.monotonic()))
            log(what)
            if what == "kill -9 consumer a":
                consumers["a"].send_signal(signal.SIGKILL)
                consumers["a"].wait(10)
                time.sleep(self.rng.uniform(0.2, 1.5))
                consumers["a"] = self.start_consumer("a")
                log("consumer a restarted")
            elif what == "kill -9 rebuild_stats":
                self.kill_command(["rebuild_stats", "--no-progress", "--lock-ttl", str(LOCK_TTL)],
                                  REBUILD_POINTS)  # fmt: skip
            elif what == "kill -9 reconcile_stats --repair":
                self.strand_a_batch()
                self.kill_command(["reconcile_stats", "--repair", "--no-progress", "--settle",
                                   "0", "--lock-ttl", str(LOCK_TTL)], REPAIR_POINTS)  # fmt: skip
            elif what == "stop a primary":
                self.stop_primary()
            elif what == "stop redis":
                self.redis.stop()
                time.sleep(self.args.redis_down)
                self.redis.start()
                log(f"redis started again after {self.args.redis_down:.0f}s")
            else:
                self.redis.kill()
                time.sleep(1)
                self.redis.start()
                log("redis restarted after kill -9")
        sender.join(self.args.timeout)
        if sender.is_alive():
            raise TimeoutError("sender did not finish")

        from stats.store import get_store

        store = get_store()
        expected_first = sum(1 for m in self.first_wave if m.kind == "valid")

        def drained() -> bool:
            depth = self.queue.depth()
            return depth.visible + depth.in_flight + depth.delayed == 0

        wait_until(drained, self.args.timeout, "the first wave to drain")
        log(f"first wave drained ({store.global_stats().total_orders}/{expected_first} orders); "
            f"sending {len(self.second_wave)} conflicts and poison bodies")  # fmt: skip
        self.queue.send_bodies(self.second_wave)
        wait_until(drained, self.args.timeout, "the second wave to drain")

        for name in consumers:
            wait_until(lambda n=name: self.consuming(n), self.args.timeout, f"consumer {name}")
        log("SIGTERM to both consumers")
        codes = {}
        for name, process in consumers.items():
            process.send_signal(signal.SIGTERM)
            codes[name] = process.wait(60)
        self.timings["ingestion"] = time.monotonic() - started
        log(f"consumer exit codes {codes}")
        dlq = self.queue.depth().dlq_visible or 0
        failed = self.verdict(codes, dlq)
        self.timings["total"] = time.monotonic() - run_started
        self.print_figures()
        print("CHAOS RUN " + ("FAILED" if failed else "PASSED") + f" (logs in {self.workdir})")
        return 1 if failed else 0

    # --- the verdict ----------------------------------------------------------------------------
    def verdict(self, exit_codes: dict[str, int], dlq: int) -> bool:
        """Every check, in two parts: the run as the consumers left it, then Redis emptied and
        rebuilt from the ledger. Prints both tables; True when anything differs."""
        from orders.models import RejectedOrder
        from orders.samples import expected_totals

        self.expected = expected_totals(self.messages)
        rows, counts = self.api_rows()
        rows += self.ledger_rows()
        self.event_counters = self.get("/metrics")["ingestion"]
        want_rejected = self.expected.rejected + len(self.poison)
        rows.append(("RejectedOrder rows", want_rejected, RejectedOrder.objects.count()))
        rows.append(("rejected counter (/metrics)", want_rejected, self.rejected_counter()))
        rows.append(("messages in DLQ", 0, dlq))
        rows.append(("consumer exit codes", {"a": 0, "b": 0}, exit_codes))
        if self.args.cluster:
            rows.append(("primaries holding the prefix's keys", 3, self.primaries_with_keys()))
            rows.append(("CLUSTERDOWN while a primary was down", True, self.clusterdown_seen))
        rows.append(("consumer b rode out the outage (its log)", True, self.rode_out("b")))
        if self.args.kill_rebuilds or self.args.kill_repairs:
            from stats.store import get_store

            left = len(get_store().leftovers())
            cleaned = self.manage("rebuild_stats", "--cleanup")
            log(f"{left} leftover(s) of the killed commands; {cleaned.summary}")
            rows.append(("rebuild_stats --cleanup exit code", 0, cleaned.code))
            rows.append(("leftovers after rebuild_stats --cleanup", 0,
                         len(get_store().leftovers())))  # fmt: skip
        reconciled = self.manage("reconcile_stats", "--no-progress", "--settle", "0")
        self.timings["reconcile"] = reconciled.seconds
        rows.append(("reconcile_stats exit code", 0, reconciled.code))
        failed = self.print_rows("as the consumers left it", rows, counts, reconciled)

        log("emptying Redis (FLUSHALL on every primary), then rebuild_stats from the ledger")
        self.flush_redis()
        emptied = self.keys_in_redis()
        rebuilt = self.manage("rebuild_stats", "--no-progress")
        self.timings["rebuild"] = rebuilt.seconds
        log(rebuilt.summary)
        self.rebuilt, self.reconciled = rebuilt, reconciled
        rows = [
            ("keys left after FLUSHALL", 0, emptied),
            ("rebuild_stats exit code", 0, rebuilt.code),
        ]
        api_rows, counts = self.api_rows()
        rows += api_rows
        if self.args.cluster:
            rows.append(("primaries holding the prefix's keys", 3, self.primaries_with_keys()))
        again = self.manage("reconcile_stats", "--no-progress", "--settle", "0")
        self.timings["reconcile after rebuild"] = again.seconds
        self.reconciled_again = again
        rows.append(("reconcile_stats exit code", 0, again.code))
        failed |= self.print_rows("after FLUSHALL and rebuild_stats", rows, counts, again, rebuilt)
        return failed

    def api_rows(self) -> tuple[list[Row], tuple[int, int, list[str]]]:
        """Every aggregate the API serves against the oracle; and (lost, double counted,
        mismatched users) over every user (a user mismatches when any of its orders, gross,
        refunded, net or cancelled differs)."""
        expected = self.expected

        lost = double = 0
        mismatched: list[str] = []
        for user_id, want in sorted(expected.users.items()):
            got = self.get(f"/users/{user_id}/stats")
            got_count = got.get("order_count", 0)
            lost += max(0, want.order_count - got_count)
            double += max(0, got_count - want.order_count)
            got_figures = (
                got_count,
                cents(got.get("gross_spend", 0)),
                cents(got.get("refunded", 0)),
                cents(got.get("total_spend", 0)),
                got.get("cancelled_orders", 0),
            )
            want_figures = (
                want.order_count,
                want.total_spend_cents,
                want.refunded_cents,
                want.net_cents,
                want.cancelled_orders,
            )
            if got_figures != want_figures:
                mismatched.append(user_id)

        glob = self.get("/stats/global")
        rows: list[Row] = [
            ("total_orders", expected.total_orders, glob["total_orders"]),
            ("gross_revenue (cents)", expected.total_revenue_cents,
             cents(glob.get("gross_revenue", 0))),
            ("refunded (cents)", expected.refunded_cents, cents(glob.get("refunded", 0))),
            ("total_revenue, net (cents)", expected.net_revenue_cents,
             cents(glob["total_revenue"])),
            ("cancelled_orders", expected.cancelled_orders, glob.get("cancelled_orders")),
            ("unique_users", len(expected.users), glob.get("unique_users")),
        ]  # fmt: skip
        top_n = 10
        by_spend = sorted(expected.users.items(), key=lambda kv: (-kv[1].net_cents, kv[0]))
        by_count = sorted(expected.users.items(), key=lambda kv: (-kv[1].order_count, kv[0]))
        spenders = self.get(f"/stats/top-spenders?limit={top_n}")
        buyers = self.get(f"/stats/top-buyers?limit={top_n}")
        rows.append((
            f"top-{top_n} spenders (net)",
            [(u, t.net_cents) for u, t in by_spend[:top_n]],
            [(e["user_id"], cents(e["total_spend"])) for e in spenders],
        ))  # fmt: skip
        rows.append((
            f"top-{top_n} buyers",
            [(u, t.order_count) for u, t in by_count[:top_n]],
            [(e["user_id"], e["order_count"]) for e in buyers],
        ))  # fmt: skip
        for by, figure in (("revenue", 1), ("units", 0)):
            ranked = sorted(expected.products.items(), key=lambda kv: (-kv[1][figure], kv[0]))
            served = self.get(f"/stats/top-products?limit={top_n}&by={by}")
            rows.append((
                f"top-{top_n} products by {by}",
                [(p, units, revenue) for p, (units, revenue) in ranked[:top_n]],
                [(e["product_id"], e["units"], cents(e["revenue"])) for e in served],
            ))  # fmt: skip
        start = self.today - timedelta(days=40)
        by_date = self.get(f"/stats/by-date?start_date={start}&end_date={self.today}")

        def want_day(day: date) -> tuple[int, int, int, int]:
            totals = expected.days.get(day)
            if totals is None:
                return (0, 0, 0, 0)
            return (totals.order_count, totals.revenue_cents, totals.refunded_cents,
                    totals.net_cents)  # fmt: skip

        served = {
            date.fromisoformat(d["date"]): (
                d["total_orders"], cents(d.get("gross_revenue", 0)), cents(d.get("refunded", 0)),
                cents(d["total_revenue"]),
            )
            for d in by_date["days"]
        }  # fmt: skip
        days = sorted(served.keys() | {d for d in expected.days if d >= start})
        day_diffs = [d for d in days if served.get(d, (0, 0, 0, 0)) != want_day(d)]
        rows.append((f"days differing (of {len(days)}: orders, gross, refunded, net)", 0,
                     len(day_diffs)))  # fmt: skip
        rows.append((
            "by-date totals (orders, gross, refunded, net)",
            (expected.total_orders, expected.total_revenue_cents, expected.refunded_cents,
             expected.net_revenue_cents),
            (by_date["total_orders"], cents(by_date.get("gross_revenue", 0)),
             cents(by_date.get("refunded", 0)), cents(by_date["total_revenue"])),
        ))  # fmt: skip
        return rows, (lost, double, mismatched)

    def ledger_rows(self) -> list[Row]:
        """The ledger read with the ORM: every accepted order once, as the oracle has it."""
        from django.db.models import Count, Sum

        from orders.models import AcceptedOrder

        want = {
            m.order_id: (m.user_id, m.value_cents, m.day)
            for m in self.messages
            if m.kind == "valid"
        }
        got = {
            order_id: (user_id, value_cents, day)
            for order_id, user_id, value_cents, day in AcceptedOrder.objects.values_list(
                "order_id", "user_id", "value_cents", "day"
            )
        }
        totals = AcceptedOrder.objects.aggregate(n=Count("pk"), cents=Sum("value_cents"))
        per_user = {
            user_id: (n, int(spend))
            for user_id, n, spend in AcceptedOrder.objects.order_by()
            .values_list("user_id")
            .annotate(n=Count("pk"), spend=Sum("value_cents"))
        }
        want_users = {
            u: (t.order_count, t.total_spend_cents) for u, t in self.expected.users.items()
        }
        users_differing = {
            u for u in want_users.keys() | per_user.keys() if want_users.get(u) != per_user.get(u)
        }
        rows_differing = {k for k in want.keys() | got.keys() if want.get(k) != got.get(k)}
        return [
            *self.ledger_event_rows(),
            ("ledger orders", self.expected.total_orders, totals["n"]),
            (
                "ledger revenue (cents)",
                self.expected.total_revenue_cents,
                int(totals["cents"] or 0),
            ),
            (f"ledger users differing (of {len(want_users)})", 0, len(users_differing)),
            ("ledger orders differing (id, user, cents, day)", 0, len(rows_differing)),
        ]

    def ledger_event_rows(self) -> list[Row]:
        """The ledger's events read with the ORM: every accepted event once (its order, user,
        kind and cents), none refused or left waiting that should not be."""
        from django.db.models import Sum

        from orders.models import OrderEvent, WaitingEvent

        kinds = {"refund": "refunded", "cancel": "cancelled"}
        want = {
            str(m.event_id): (m.order_id, m.user_id, kinds[m.kind], m.refund_cents)
            for m in self.messages
            if m.kind in kinds
        }
        got = {
            event_id: (order_id, user_id, kind, amount)
            for event_id, order_id, user_id, kind, amount in OrderEvent.objects.values_list(
                "event_id", "order_id", "user_id", "kind", "amount_cents"
            )
        }
        differing = {k for k in want.keys() | got.keys() if want.get(k) != got.get(k)}
        refunded = OrderEvent.objects.aggregate(cents=Sum("amount_cents"))["cents"] or 0
        return [
            ("ledger events", self.expected.events_applied, len(got)),
            ("ledger refunded (cents)", self.expected.refunded_cents, int(refunded)),
            ("ledger events differing (id, order, user, kind, cents)", 0, len(differing)),
            ("events still waiting for their order", 0, WaitingEvent.objects.count()),
        ]

    def get(self, path: str) -> Any:
        import logging

        from django.test import Client

        logging.getLogger("orderpipe.requests").setLevel(logging.WARNING)  # one line per GET
        response = Client(HTTP_HOST="localhost").get(path, HTTP_ACCEPT="application/json")
        if response.status_code not in (200, 404):
            raise RuntimeError(f"GET {path} -> {response.status_code}: {response.content!r}")
        return json.loads(response.content, parse_float=Decimal)

    def rejected_counter(self) -> int:
        return self.get("/metrics")["ingestion"]["rejected"]

    def primary_clients(self) -> list[Any]:
        """A plain client of each primary the run started (one for a single node)."""
        import redis

        if self.args.cluster:
            return [node.admin() for node in self.redis.nodes]
        return [redis.Redis.from_url(self.redis.url)]

    def primaries_with_keys(self) -> int:
        """How many primaries hold keys of the run's prefix (its shard tags start with it)."""
        found = 0
        for client in self.primary_clients():
            with client:
                found += any(client.scan_iter(match=f"{{{self.prefix}:*", count=1000))
        return found

    def keys_in_redis(self) -> int:
        total = 0
        for client in self.primary_clients():
            with client:
                total += client.dbsize()
        return total

    def flush_redis(self) -> None:
        """FLUSHALL on every primary: the run's own Redis, which nobody else uses."""
        for client in self.primary_clients():
            with client:
                client.flushall()

    def print_rows(
        self,
        title: str,
        rows: list[Row],
        counts: tuple[int, int, list[str]],
        *commands: CommandRun,
    ) -> bool:
        width = max(len(r[0]) for r in rows)
        print(f"\n{title}\n{'aggregate'.ljust(width)}  {'expected':>22}  {'got':>22}  ok")
        failed = False
        for name, want, got in rows:
            ok = want == got
            failed |= not ok
            shown_want = want if not isinstance(want, list) else f"{len(want)} entries"
            shown_got = got if not isinstance(got, list) else f"{len(got)} entries"
            print(f"{name.ljust(width)}  {shown_want!s:>22}  {shown_got!s:>22}  "
                  f"{'yes' if ok else 'NO'}")  # fmt: skip
            if not ok and isinstance(want, list):
                print(f"    expected {want}\n    got      {got}")
        for command in commands:
            if command.code != 0:
                print(f"    {command.output.strip()}")
        lost, double, mismatched = counts
        print(f"\nlost={lost} double_counted={double} mismatched_users={len(mismatched)}")
        if mismatched:
            print(f"mismatched users (first 10): {mismatched[:10]}")
        return failed or bool(lost or double or mismatched)

    def print_figures(self) -> None:
        t = self.timings
        print(
            f"\nfigures: {len(self.messages) + len(self.poison):,} messages "
            f"({self.expected.total_orders:,} orders) "
            f"sent, consumed through the chaos and drained in {t['ingestion']:.1f}s; whole run "
            f"{t['total']:.1f}s"
        )
        kinds = Counter(m.kind for m in self.messages)
        early = sum(m.before_order for m in self.messages)
        counters = self.event_counters
        print(
            f"  events sent: {kinds['refund']:,} refunds and {kinds['cancel']:,} cancellations "
            f"({early:,} of the events before their order), {kinds['event_duplicate']:,} sent "
            f"twice, {kinds['event_conflict']:,} conflicting, {kinds['over_refund']:,} "
            f"over-refunds; oracle: {self.expected.events_applied:,} applied, refunded "
            f"{self.expected.refunded_cents / 100:,.2f} of gross "
            f"{self.expected.total_revenue_cents / 100:,.2f} (net "
            f"{self.expected.net_revenue_cents / 100:,.2f}), "
            f"{self.expected.cancelled_orders:,} orders cancelled"
        )
        print(
            f"  /metrics as the consumers left it: events received "
            f"{counters.get('events_received')}, applied {counters.get('events_applied')}, "
            f"duplicates {counters.get('events_duplicates')} (redeliveries after the kills "
            f"included); rejected by code {counters.get('rejected_by_code')}"
        )
        if self.args.kill_rebuilds or self.args.kill_repairs:
            print(
                f"  killed with kill -9 while they ran: rebuild_stats "
                f"{self.kills.count('rebuild_stats')} of {self.args.kill_rebuilds}, "
                f"reconcile_stats --repair {self.kills.count('reconcile_stats')} of "
                f"{self.args.kill_repairs} (the others finished first)"
            )
        for name, run in (
            ("reconcile_stats, live read model", self.reconciled),
            ("rebuild_stats after FLUSHALL", self.rebuilt),
            ("reconcile_stats after the rebuild", self.reconciled_again),
        ):
            print(f"  {name:<34} {run.seconds:5.1f}s as a process (Django start-up included); "
                  f"its own count {run.work}")  # fmt: skip

    def cleanup(self) -> None:
        """Nothing outlives the run, even one that failed half-way."""
        for process in getattr(self, "consumers", {}).values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for server in (getattr(self, "sqs", None), getattr(self, "redis", None)):
            if server is not None:
                server.stop()
        if self.database is not None:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            self.database.drop()


def cents(value: Decimal | int) -> int:
    return int(Decimal(value) * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=400.0, help="messages/s sent")
    parser.add_argument(
        "--redis-down", type=float, default=5.0, help="seconds Redis (or a primary) is stopped"
    )
    parser.add_argument("--sqs", choices=("fauxqs", "moto"), default="fauxqs")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument(
        "--cluster", action="store_true", help="a 3-primary Valkey cluster, REDIS_SHARDS shards"
    )
    parser.add_argument("--shards", type=int, default=8, help="REDIS_SHARDS with --cluster")
    parser.add_argument(
        "--node-timeout-ms",
        type=int,
        default=1000,
        help="cluster-node-timeout: how soon the others declare a stopped primary failed",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CHAOS_DATABASE_URL", ""),
        help="a PostgreSQL server (postgres://postgres@127.0.0.1:5432) to create the run's own "
        "database on, dropped afterwards (default $CHAOS_DATABASE_URL; empty: SQLite)",
    )
    parser.add_argument(
        "--kill-rebuilds",
        type=int,
        default=0,
        metavar="N",
        help="run rebuild_stats N times while consuming, each killed with kill -9 at a random "
        "point of its run",
    )
    parser.add_argument(
        "--kill-repairs",
        type=int,
        default=0,
        metavar="N",
        help="the same with reconcile_stats --repair --settle 0",
    )
    parser.add_argument(
        "--no-events", action="store_true", help="orders only: no refunds or cancellations"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for each wait")
    args = parser.parse_args(argv)
    chaos = Chaos(args)
    try:
        return chaos.run()
    finally:
        chaos.cleanup()


if __name__ == "__main__":
    sys.exit(main())
