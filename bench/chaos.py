"""Chaos run (``make chaos``): prove contract §3 under crashes and outages, against an oracle.

    .venv/bin/python bench/chaos.py [--orders 10000] [--seed 7] [--sqs fauxqs|moto]

Starts a real Redis (Valkey, AOF with appendfsync always, data on disk) and a local SQS
server (fauxqs, or moto with the producer keeping the backlog short) as separate processes,
then runs two ``consume_orders`` processes while it:

* sends the orders (10% invalid, 5% exact duplicates, then 1% conflicting re-sends of an
  earlier order_id and the poison bodies once the originals are in);
* kills -9 one consumer three times at random moments and restarts it;
* stops Redis for ~5 s and starts it again on the same data;
* kills -9 Redis once (appendfsync always: an acknowledged write is on disk) and restarts it;
* finally sends SIGTERM to both consumers (they must exit 0).

Then every aggregate the API serves (per user, global, top-N, every day) is compared with an
oracle computed from what was sent. Prints expected vs got and
``lost=0 double_counted=0 mismatched_users=0``; exits 1 on any difference. Bounded in time:
every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="orderpipe-chaos-"))
        self.today = date.today()

    # --- setup ------------------------------------------------------------------------------
    def start_servers(self) -> None:
        from orderpipe.devservers import FauxqsSQSServer, MotoSQSServer, RedisServer

        self.redis = RedisServer(
            data_dir=self.workdir / "redis",
            appendfsync=self.args.appendfsync,
            log_path=self.workdir / "redis.log",
        ).start()
        self.sqs = None
        if self.args.sqs == "fauxqs":
            try:
                self.sqs = FauxqsSQSServer(log_path=self.workdir / "sqs.log").start()
            except Exception as exc:
                log(f"fauxqs unavailable ({exc}); falling back to moto with a short backlog")
        if self.sqs is None:
            self.sqs = MotoSQSServer(log_path=self.workdir / "sqs.log").start()
        self.max_backlog = 10**9 if isinstance(self.sqs, FauxqsSQSServer) else 200
        log(f"redis {self.redis.url} (appendfsync {self.args.appendfsync}), sqs {self.sqs.url} "
            f"({self.sqs.name}), workdir {self.workdir}")  # fmt: skip

        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
            "DEBUG": "true",
            "SECRET_KEY": "chaos-run-local-only",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'chaos.sqlite3'}",
            "REDIS_URL": self.redis.url,
            "REDIS_KEY_PREFIX": "chaos",
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

        generator = SampleGenerator(
            seed=self.args.seed, users=self.args.users, days=30, invalid_ratio=0.10,
            duplicate_ratio=0.05, conflict_ratio=0.01, today=self.today,
        )  # fmt: skip
        self.messages = generator.messages(self.args.orders)
        # A conflict's effect depends on which version is applied first; sending conflicts
        # after the originals are in makes "first wins" deterministic for the oracle.
        self.first_wave = [m for m in self.messages if m.kind != "conflict"]
        self.second_wave = [m.body for m in self.messages if m.kind == "conflict"]
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
        log_file = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "consume_orders", "--wait-time", "1",
             "--max-backoff", "1", "--log-interval", "5", "--threads", "2"],
            env=self.env, stdout=log_file, stderr=subprocess.STDOUT, cwd=BASE_DIR,
        )  # fmt: skip

    def run(self) -> int:
        self.start_servers()
        self.build_messages()
        import redis

        from stats.store import AggregateStore

        consumers = self.consumers = {"a": self.start_consumer("a"), "b": self.start_consumer("b")}
        first = [m.body for m in self.first_wave]
        duration = len(first) / self.args.rate
        sender = threading.Thread(target=self.send, args=(first, self.args.rate), daemon=True)
        started = time.monotonic()
        sender.start()
        log(f"sending {len(first)} messages over ~{duration:.0f}s; two consumers running")

        events: list[tuple[float, str]] = [
            (self.rng.uniform(0.1, 0.9) * duration, "kill -9 consumer a") for _ in range(3)
        ]
        events.append((self.rng.uniform(0.2, 0.5) * duration, "stop redis"))
        events.append((self.rng.uniform(0.6, 0.9) * duration, "kill -9 redis"))
        for at, what in sorted(events):
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            log(what)
            if what == "kill -9 consumer a":
                consumers["a"].send_signal(signal.SIGKILL)
                consumers["a"].wait(10)
                time.sleep(self.rng.uniform(0.2, 1.5))
                consumers["a"] = self.start_consumer("a")
                log("consumer a restarted")
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

        store = AggregateStore(redis.Redis.from_url(self.redis.url), prefix="chaos")
        expected_first = sum(1 for m in self.first_wave if m.kind == "valid")

        def drained() -> bool:
            depth = self.queue.depth()
            return depth.visible + depth.in_flight + depth.delayed == 0

        wait_until(drained, self.args.timeout, "the first wave to drain")
        log(f"first wave drained ({store.global_stats().total_orders}/{expected_first} orders); "
            f"sending {len(self.second_wave)} conflicts and poison bodies")  # fmt: skip
        self.queue.send_bodies(self.second_wave)
        wait_until(drained, self.args.timeout, "the second wave to drain")

        log("SIGTERM to both consumers")
        codes = {}
        for name, process in consumers.items():
            process.send_signal(signal.SIGTERM)
            codes[name] = process.wait(60)
        log(f"consumer exit codes {codes}")
        dlq = self.queue.depth().dlq_visible or 0
        return self.compare(codes, dlq)

    # --- the verdict ----------------------------------------------------------------------------
    def compare(self, exit_codes: dict[str, int], dlq: int) -> int:
        import logging

        from django.test import Client

        from orders.models import RejectedOrder
        from orders.samples import expected_totals

        expected = expected_totals(self.messages)
        client = Client(HTTP_HOST="localhost")
        logging.getLogger("orderpipe.requests").setLevel(logging.WARNING)  # one line per GET

        def get(path: str) -> dict | list:
            response = client.get(path, HTTP_ACCEPT="application/json")
            if response.status_code not in (200, 404):
                raise RuntimeError(f"GET {path} -> {response.status_code}: {response.content!r}")
            return json.loads(response.content, parse_float=Decimal)

        def cents(value: Decimal | int) -> int:
            return int(Decimal(value) * 100)

        lost = double = 0
        mismatched: list[str] = []
        for user_id, want in sorted(expected.users.items()):
            got = get(f"/users/{user_id}/stats")
            got_count = got.get("order_count", 0)
            got_spend = cents(got.get("total_spend", 0))
            lost += max(0, want.order_count - got_count)
            double += max(0, got_count - want.order_count)
            if (got_count, got_spend) != (want.order_count, want.total_spend_cents):
                mismatched.append(user_id)

        glob = get("/stats/global")
        rows = [
            ("total_orders", expected.total_orders, glob["total_orders"]),
            ("total_revenue (cents)", expected.total_revenue_cents, cents(glob["total_revenue"])),
            ("unique_users", len(expected.users), glob.get("unique_users")),
        ]
        top_n = 10
        by_spend = sorted(expected.users.items(), key=lambda kv: (-kv[1].total_spend_cents, kv[0]))
        by_count = sorted(expected.users.items(), key=lambda kv: (-kv[1].order_count, kv[0]))
        spenders = get(f"/stats/top-spenders?limit={top_n}")
        buyers = get(f"/stats/top-buyers?limit={top_n}")
        rows.append((
            f"top-{top_n} spenders",
            [(u, t.total_spend_cents) for u, t in by_spend[:top_n]],
            [(e["user_id"], cents(e["total_spend"])) for e in spenders],
        ))  # fmt: skip
        rows.append((
            f"top-{top_n} buyers",
            [(u, t.order_count) for u, t in by_count[:top_n]],
            [(e["user_id"], e["order_count"]) for e in buyers],
        ))  # fmt: skip
        start = self.today - timedelta(days=40)
        by_date = get(f"/stats/by-date?start_date={start}&end_date={self.today}")
        day_diffs = [
            d["date"]
            for d in by_date["days"]
            if (d["total_orders"], cents(d["total_revenue"]))
            != (
                (expected.days[date.fromisoformat(d["date"])].order_count,
                 expected.days[date.fromisoformat(d["date"])].revenue_cents)
                if date.fromisoformat(d["date"]) in expected.days else (0, 0)
            )
        ]  # fmt: skip
        rows.append((f"days differing (of {len(by_date['days'])})", 0, len(day_diffs)))
        want_rejected = sum(1 for m in self.messages if m.kind in ("invalid", "conflict"))
        want_rejected += len(self.poison)
        rows.append(("RejectedOrder rows", want_rejected, RejectedOrder.objects.count()))
        ingestion = get("/metrics")["ingestion"]
        rows.append(("rejected counter (/metrics)", want_rejected, ingestion["rejected"]))
        rows.append(("messages in DLQ", 0, dlq))
        rows.append(("consumer exit codes", {"a": 0, "b": 0}, exit_codes))

        width = max(len(r[0]) for r in rows)
        print(f"\n{'aggregate'.ljust(width)}  {'expected':>22}  {'got':>22}  ok")
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
        print(f"\nlost={lost} double_counted={double} mismatched_users={len(mismatched)}")
        if mismatched:
            print(f"mismatched users (first 10): {mismatched[:10]}")
        failed |= bool(lost or double or mismatched)
        print("CHAOS RUN " + ("FAILED" if failed else "PASSED") + f" (logs in {self.workdir})")
        return 1 if failed else 0

    def cleanup(self) -> None:
        """Nothing outlives the run, even one that failed half-way."""
        for process in getattr(self, "consumers", {}).values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for server in (getattr(self, "sqs", None), getattr(self, "redis", None)):
            if server is not None:
                server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=400.0, help="messages/s sent")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis is stopped")
    parser.add_argument("--sqs", choices=("fauxqs", "moto"), default="fauxqs")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for each wait")
    args = parser.parse_args(argv)
    chaos = Chaos(args)
    try:
        return chaos.run()
    finally:
        chaos.cleanup()


if __name__ == "__main__":
    sys.exit(main())
