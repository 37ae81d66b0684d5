"""Stats API benchmark: req/s and p50/p99 per endpoint under gunicorn, next to a ceiling.

Run by hand: ``.venv/bin/python bench/api_bench.py [--seconds 5] [--rounds 3]``. It starts its
own Redis, fills 10,000 users over 366 days through the aggregate store, and serves two apps on
free ports with the web service's gunicorn command and environment from docker-compose.yml
(``DEBUG=false``, request log at INFO, gunicorn's access log, ``STATS_API_AUTH=none`` unless
set; ``WEB_CONCURRENCY`` and ``--gunicorn-arg`` change them as they would in compose):

- orderpipe itself (``orderpipe.wsgi``), and with ``--baseline DIR`` a second checkout of the
  project (an older commit) in the same run, so before and after share the same conditions;
- the ceiling (``bench/ceiling_app.py``): a bare WSGI app doing one ``HGETALL`` on the same
  Redis, i.e. what the HTTP server and one Redis round trip cost; and for each by-date range
  the days ceiling, the same app's ``/days``: that range's days from one Redis hash in one
  ``HMGET`` (one field per day, filled from the store) and the same JSON body by
  ``json.dumps`` (checked equal to orderpipe's before measuring).

Paths an app does not serve (a 404 at warm-up: ``/stats/top-products`` before it existed) are
left out for that app. After the tables, the issue's goals are printed as ratios taken within
each round: by-date over 366 days against the days ceiling, by-hour and top-products against
the simple ceiling next to top-spenders', and the five simple endpoints against
``--baseline``.

Load comes from wrk (``apt-get install wrk``): a C client costs the shared CPUs far less per
request than Python threads, which on this 2-core machine would measure the client. Each round
measures, per endpoint, the ceiling and then each app back to back; the table shows medians over
the rounds, and the ratios are taken within each round, so load from other processes on the
machine moves numerator and denominator together. ``--profile PATH`` instead profiles requests
to PATH through the WSGI app in process (pyinstrument). Then the by-date reads are timed
straight against Redis: the store's single HMGET next to the naive one HGETALL per day. Prints
numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import redis  # noqa: E402
import yaml  # noqa: E402

from devtools.servers import RedisServer, free_port, port_is_open  # noqa: E402
from orders.validation import Item, Order  # noqa: E402
from stats.store import AggregateStore  # noqa: E402
from tests.test_compose import interpolate  # noqa: E402

PREFIX = "bench"
NAIVE_PREFIX = "naive"
USERS = 10_000
FIRST_DAY = date(2024, 8, 1)
DAYS = 366
ORDERS = 60_000
PRODUCTS = 100
BATCH = 500
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
WEEK_END = FIRST_DAY + timedelta(days=6)
HOUR_DAY = date(2025, 3, 1)
BY_DATE_YEAR = f"/stats/by-date?start_date={FIRST_DAY}&end_date={LAST_DAY}"
# The five simple endpoints (issue 20: >= 0.9x of --baseline's figure in the same run).
SIMPLE = [
    "/stats/global",
    "/users/U00042/stats",
    "/stats/top-spenders?limit=10",
    "/stats/top-buyers?limit=100",
    "/metrics",
]
# Against the simple ceiling, at least as well as top-spenders (issue 20).
LIKE_TOP_SPENDERS = [f"/stats/by-hour?date={HOUR_DAY}", "/stats/top-products?limit=10"]
ENDPOINTS = [
    *SIMPLE,
    f"/stats/by-date?start_date={FIRST_DAY}&end_date={WEEK_END}",
    BY_DATE_YEAR,
    *LIKE_TOP_SPENDERS,
    "/health",
    "/metrics?format=prometheus",
]
DAYS_CEILING = "days ceiling"
CEILING_DAYS_KEY = f"{PREFIX}:ceiling:days"
# wrk's summary as one JSON line (latencies in microseconds).
WRK_SCRIPT = """
wrk.headers["Accept"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %.0f, "p99_us": %.0f, '
      .. '"errors": %d, "bad_status": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def fill(store: AggregateStore, client: redis.Redis) -> None:
    """Orders (one item each, of 100 products) through the real apply script, plus the per-day
    hashes a naive design keeps."""
    rng = random.Random(6)
    naive = client.pipeline(transaction=False)
    batch: list[Order] = []
    for n in range(ORDERS):
        user = f"U{rng.randrange(USERS):05d}" if n >= USERS else f"U{n:05d}"
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        when = datetime(day.year, day.month, day.day, rng.randrange(24), tzinfo=UTC)
        cents = rng.randrange(100, 50_000)
        price = Decimal(cents).scaleb(-2)
        product = f"P{rng.randrange(PRODUCTS):03d}"
        batch.append(Order(f"O{n}", user, cents, (Item(product, 1, price),), when, when))
        naive.hincrby(f"{NAIVE_PREFIX}:day:{day.isoformat()}", "orders", 1)
        naive.hincrby(f"{NAIVE_PREFIX}:day:{day.isoformat()}", "revenue", cents)
        if len(batch) == BATCH:
            store.apply_orders(batch)
            naive.execute()
            batch = []
    if batch:
        store.apply_orders(batch)
        naive.execute()


# Run by the baseline's own Python in its checkout: its store writes the same orders in the
# layout it reads (another version may lay the aggregates out otherwise and refuse ours).
BASELINE_FILL = """
import sys
sys.path[:0] = ["bench", "."]
import redis
import api_bench
from stats.store import AggregateStore
client = redis.Redis.from_url(sys.argv[1])
api_bench.fill(AggregateStore(client, prefix=api_bench.PREFIX), client)
"""


def fill_baseline(baseline: Path, redis_url: str) -> str:
    """The same orders written by the baseline's own code into database 1 of the same
    server; returns that database's URL for the baseline's app."""
    url = redis_url.rsplit("/", 1)[0] + "/1"
    subprocess.run(
        [str(baseline / ".venv" / "bin" / "python"), "-c", BASELINE_FILL, url],
        cwd=baseline,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        check=True,
    )
    return url


def fill_days_ceiling(store: AggregateStore, client: redis.Redis) -> None:
    """The days ceiling's hash: one field per day, ``orders:gross:refunded``, the store's own
    figures (so its body equals orderpipe's)."""
    client.hset(
        CEILING_DAYS_KEY,
        mapping={
            d.day.isoformat(): f"{d.total_orders}:{d.gross_revenue_cents}:{d.refunded_cents}"
            for d in store.by_date(FIRST_DAY, LAST_DAY)
            if d.total_orders or d.gross_revenue_cents or d.refunded_cents
        },
    )


def ceiling_path(path: str) -> str | None:
    """The days ceiling's path doing the same range as a by-date ``path`` (None otherwise)."""
    if not path.startswith("/stats/by-date?"):
        return None
    return "/days?" + path.partition("?")[2]


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


@dataclass(frozen=True)
class Run:
    """One wrk run against one path, with the CPU each side spent per request."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu_us: float  # the gunicorn master and its workers
    redis_cpu_us: float
    client_cpu_us: float  # wrk


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split()
        for child in children:
            pids += process_tree(int(child))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of live processes (``/proc/PID/stat``, clock ticks)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, path: str, seconds: int, threads: int, connections: int, script: Path,
    server_pid: int, redis_pid: int,
) -> Run:  # fmt: skip
    server = process_tree(server_pid)
    before = cpu_seconds(server), cpu_seconds([redis_pid])
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = cpu_seconds(server), cpu_seconds([redis_pid])
    summary = json.loads(out.strip().splitlines()[-1])
    n = max(summary["requests"], 1)
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    return Run(
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        requests=summary["requests"],
        errors=summary["errors"] + summary["bad_status"],
        server_cpu_us=(after[0] - before[0]) / n * 1e6,
        redis_cpu_us=(after[1] - before[1]) / n * 1e6,
        client_cpu_us=client / n * 1e6,
    )


def compose_web(shell: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The web service's command and environment from docker-compose.yml, as compose would
    interpolate them against ``shell`` (so WEB_CONCURRENCY, LOG_LEVEL, ... apply)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    web = compose["services"]["web"]
    command = [interpolate(arg, shell) for arg in web["command"]]
    environment = {key: interpolate(value, shell) for key, value in web["environment"].items()}
    return command, environment


class Gunicorn:
    """One gunicorn master serving ``module`` from ``cwd`` with the compose web command."""

    def __init__(
        self, name: str, cwd: Path, module: str, command: list[str], env: dict[str, str]
    ) -> None:
        self.name, self.cwd, self.port = name, cwd, free_port()
        binary = str(Path(sys.executable).parent / "gunicorn")
        args = [f"--bind=127.0.0.1:{self.port}" if a.startswith("--bind") else a for a in command]
        assert args[:2] == ["gunicorn", "orderpipe.wsgi"], args
        self.argv = [binary, module, *args[2:]]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, logs: Path) -> None:
        stdout: TextIO = open(logs / f"{self.name}.access.log", "w")  # noqa: SIM115
        stderr: TextIO = open(logs / f"{self.name}.console.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdout=stdout, stderr=stderr
        )
        deadline = time.time() + 30
        while not port_is_open(self.port):
            if time.time() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{self.name}: gunicorn did not start (see {stderr.name})")
            time.sleep(0.1)

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # raises on non-2xx
            return response.read()

    def measure(self, path: str, seconds: int, args: Any, script: Path, redis_pid: int) -> Run:
        assert self.process is not None
        return wrk(
            self.port, path, seconds, args.threads, args.connections, script,
            self.process.pid, redis_pid,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def served(app: Gunicorn, path: str) -> bool:
    """Whether ``app`` answers ``path`` (False on a 404; other errors are raised)."""
    try:
        app.get(path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def app_env(base: dict[str, str], redis_url: str, workdir: Path, name: str) -> dict[str, str]:
    """Compose's environment with this machine's Redis, a scratch database and log dir."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    return {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        **base,
        "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
        "PYTHONUNBUFFERED": "1",  # as in the Dockerfile
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"sqlite:///{workdir / f'{name}.sqlite3'}",
        "REDIS_URL": redis_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": port,
        "REDIS_KEY_PREFIX": PREFIX,
        "LOG_DIR": str(workdir / f"logs-{name}"),
    }


def median_run(runs: list[Run]) -> Run:
    def med(attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    return Run(
        rps=med("rps"),
        p50_ms=med("p50_ms"),
        p99_ms=med("p99_ms"),
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        server_cpu_us=med("server_cpu_us"),
        redis_cpu_us=med("redis_cpu_us"),
        client_cpu_us=med("client_cpu_us"),
    )


def short(path: str) -> str:
    if path.startswith("/stats/by-date"):
        days = (LAST_DAY - FIRST_DAY).days + 1 if str(LAST_DAY) in path else 7
        return f"`/stats/by-date` {days} days"
    return f"`{path}`"


def cpu_cell(run: Run) -> str:
    return f"{run.server_cpu_us:.0f} / {run.redis_cpu_us:.0f} / {run.client_cpu_us:.0f}"


def print_table(results: dict[str, dict[str, list[Run]]], apps: list[str]) -> None:
    """Markdown: the ceiling, then each app with its req/s and p99 as multiples of the
    ceiling's (median of the per-round ratios), "-" where an app does not serve the path; then
    the CPU each side spent per request."""
    head = "| endpoint | ceiling req/s | ceiling p50 / p99 ms |"
    rule = "|---|---:|---:|"
    for name in apps:
        head += f" {name} req/s (x ceiling) | {name} p50 / p99 ms (p99 x ceiling) |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for path, by_target in results.items():
        ceiling = by_target["ceiling"]
        c = median_run(ceiling)
        row = f"| {short(path)} | {c.rps:,.0f} | {c.p50_ms:.2f} / {c.p99_ms:.2f} |"
        for name in apps:
            runs = by_target.get(name, [])
            if not runs:
                row += " - | - |"
                continue
            m = median_run(runs)
            rps_x = statistics.median(r.rps / b.rps for r, b in zip(runs, ceiling, strict=True))
            p99_x = statistics.median(
                r.p99_ms / b.p99_ms for r, b in zip(runs, ceiling, strict=True)
            )
            errors = f" ({m.errors} errors)" if m.errors else ""
            row += (
                f" {m.rps:,.0f} ({rps_x:.2f}x){errors} |"
                f" {m.p50_ms:.2f} / {m.p99_ms:.2f} ({p99_x:.1f}x) |"
            )
        print(row)

    print("\nCPU µs per request, gunicorn (master + workers) / Redis / wrk (medians):\n")
    print(
        "| endpoint | ceiling |"
        + "".join(f" {name} | {name} gunicorn x ceiling |" for name in apps)
    )
    print("|---|---:|" + "---:|---:|" * len(apps))
    for path, by_target in results.items():
        c = median_run(by_target["ceiling"])
        row = f"| {short(path)} | {cpu_cell(c)} |"
        for name in apps:
            if not by_target.get(name):
                row += " - | - |"
                continue
            m = median_run(by_target[name])
            row += f" {cpu_cell(m)} | {m.server_cpu_us / c.server_cpu_us:.2f}x |"
        print(row)


def print_days_ceiling(results: dict[str, dict[str, list[Run]]]) -> None:
    """The by-date ranges against the days ceiling (the same body, bare)."""
    print("\nby-date against the days ceiling (one HMGET, json.dumps), same rounds:\n")
    print("| endpoint | days ceiling req/s | p50 / p99 ms | CPU µs gunicorn / Redis / wrk |"
          + "".join(f" {n} x days ceiling |" for n in ("orderpipe", "before")))  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for path, by_target in results.items():
        if not by_target.get(DAYS_CEILING):
            continue
        d = median_run(by_target[DAYS_CEILING])
        row = f"| {short(path)} | {d.rps:,.0f} | {d.p50_ms:.2f} / {d.p99_ms:.2f} | {cpu_cell(d)} |"
        for name in ("orderpipe", "before"):
            runs = by_target.get(name)
            row += f" {ratio(runs, by_target[DAYS_CEILING]):.2f}x |" if runs else " - |"
        print(row)


def ratio(runs: list[Run], against: list[Run]) -> float:
    """The median over the rounds of each round's req/s ratio (same round, same load)."""
    return statistics.median(r.rps / b.rps for r, b in zip(runs, against, strict=True))


def print_goals(results: dict[str, dict[str, list[Run]]], apps: list[str]) -> None:
    """Issue 20's speed goals, each as a ratio of req/s taken within each round."""
    print("\nGoals (issue 20), req/s ratios, median of the per-round ratios:\n")
    print("| goal | endpoint | figure | target | met |")
    print("|---|---|---:|---:|---|")

    def line(goal: str, path: str, figure: float, target: float) -> None:
        met = "yes" if figure >= target else "**no**"
        print(f"| {goal} | {short(path)} | {figure:.2f}x | {target:.2f}x | {met} |")

    year = results.get(BY_DATE_YEAR, {})
    if year.get("orderpipe") and year.get(DAYS_CEILING):
        line("x the days ceiling", BY_DATE_YEAR, ratio(year["orderpipe"], year[DAYS_CEILING]), 0.8)
    spenders = results.get("/stats/top-spenders?limit=10", {})
    if spenders.get("orderpipe"):
        bar = ratio(spenders["orderpipe"], spenders["ceiling"])
        for path in LIKE_TOP_SPENDERS:
            runs = results.get(path, {})
            if runs.get("orderpipe"):
                figure = ratio(runs["orderpipe"], runs["ceiling"])
                line("x ceiling, >= top-spenders'", path, figure, bar)
    if "before" in apps:
        for path in SIMPLE:
            runs = results.get(path, {})
            if runs.get("orderpipe") and runs.get("before"):
                line("x --baseline", path, ratio(runs["orderpipe"], runs["before"]), 0.9)


def profile(path: str, requests: int, top: int, env: dict[str, str]) -> None:
    """Requests to ``path`` through orderpipe's WSGI app in this process (no HTTP server): the
    time per request without a profiler, then the ``top`` functions by inclusive time from a
    pyinstrument profile, in µs per request (the request log goes to a file)."""
    from wsgiref.util import setup_testing_defaults

    from pyinstrument import Profiler

    os.environ.update(env)
    log = open(Path(env["LOG_DIR"]).with_suffix(".console.log"), "w")  # noqa: SIM115
    os.dup2(log.fileno(), 2)  # the console log handler writes to stderr
    import django

    django.setup(set_prefix=False)
    from orderpipe.wsgi import application

    url_path, _, query = path.partition("?")

    def one() -> None:
        environ: dict[str, Any] = {
            "PATH_INFO": url_path,
            "QUERY_STRING": query,
            "HTTP_ACCEPT": "application/json",
            "SERVER_NAME": "127.0.0.1",
        }
        setup_testing_defaults(environ)
        status: list[str] = []
        result = application(environ, lambda s, h, *a: status.append(s))
        body = b"".join(result)
        result.close()  # as a WSGI server does: Django's request_finished handlers run here
        if not status[0].startswith("200"):
            raise SystemExit(f"{path}: {status[0]} {body[:200]!r}")

    for _ in range(200):
        one()
    walls, cpus = [], []
    for _ in range(3):  # the best of three: other processes only ever add time
        began, began_cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            one()
        walls.append((time.perf_counter() - began) / requests * 1e6)
        cpus.append((time.process_time() - began_cpu) / requests * 1e6)
    per_request = min(walls)
    print(
        f"{path}: {per_request:.0f} µs per request in process, {min(cpus):.0f} µs of it CPU "
        f"(best of 3 x {requests} requests)\n"
    )
    profiler = Profiler(interval=0.0001)
    with profiler:
        for _ in range(requests):
            one()
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return
    # Inclusive time per function (a recursive call counted once), in µs per request.
    totals: dict[str, float] = {}

    def walk(frame: Any, seen: frozenset[str]) -> None:
        name = f"{frame.function}  {frame.file_path_short}:{frame.line_no}"
        if name not in seen:
            totals[name] = totals.get(name, 0.0) + frame.time
        for child in frame.children:
            walk(child, seen | {name})

    walk(root, frozenset())
    print(f"inclusive µs per request: each function's share of the profile x {per_request:.0f} µs")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{seconds / root.time * per_request:9.1f}  {name}")


def store_reads(server_url: str, client: redis.Redis, store: AggregateStore, args: Any) -> None:
    print("\nby-date straight against Redis (no HTTP), Python client threads:")
    print(f"{'read':<44} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'requests':>8}")
    for label, start, end in (("7 days", FIRST_DAY, WEEK_END), ("366 days", FIRST_DAY, LAST_DAY)):
        assert_same = naive_by_date(client, start, end)
        days = store.by_date(start, end)
        one = (sum(d.total_orders for d in days), sum(d.total_revenue_cents for d in days))
        if one != assert_same:
            print(f"  mismatch {label}: store {one} naive {assert_same}")

        def store_worker(start: date = start, end: date = end) -> Callable[[], None]:
            own = AggregateStore(redis.Redis.from_url(server_url), prefix=PREFIX)
            return lambda: own.by_date(start, end)

        def naive_worker(start: date = start, end: date = end) -> Callable[[], None]:
            own = redis.Redis.from_url(server_url)
            return lambda: naive_by_date(own, start, end)

        report(
            f"store.by_date {label} (1 HMGET)",
            *run_load(store_worker, args.clients, args.seconds),
        )
        report(
            f"naive {label} ({(end - start).days + 1} HGETALLs)",
            *run_load(naive_worker, args.clients, args.seconds),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--clients", type=int, default=8, help="threads of the Redis-only reads")
    parser.add_argument("--only", action="append", default=[], help="endpoints containing this")
    parser.add_argument("--baseline", type=Path, help="another checkout, served in the same run")
    parser.add_argument(
        "--gunicorn-arg", action="append", default=[], help="appended to compose's command"
    )
    parser.add_argument("--profile", metavar="PATH", help="profile PATH in process instead")
    parser.add_argument("--profile-requests", type=int, default=3000)
    parser.add_argument("--profile-top", type=int, default=60)
    parser.add_argument("--skip-store-reads", action="store_true")
    args = parser.parse_args()
    if args.profile is None and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="orderpipe-api-bench-"))
    server = RedisServer(data_dir=workdir / "redis", appendonly=False)
    server.start()
    servers: list[Gunicorn] = []
    try:
        client = redis.Redis.from_url(server.url)
        store = AggregateStore(client, prefix=PREFIX)
        began = time.perf_counter()
        fill(store, client)
        fill_days_ceiling(store, client)
        g = store.global_stats()
        print(
            f"filled {g.total_orders} orders, {g.unique_users} users, {DAYS} days "
            f"in {time.perf_counter() - began:.1f}s (Redis {server.url})"
        )
        # The reads themselves, without an authentication query per request: the APIs open
        # (compose's default is token) unless STATS_API_AUTH is set in the shell.
        command, compose_env = compose_web({"STATS_API_AUTH": "none", **os.environ})
        command += args.gunicorn_arg
        if args.profile:
            profile(
                args.profile,
                args.profile_requests,
                args.profile_top,
                app_env(compose_env, server.url, workdir, "profile"),
            )
            return

        ceiling_env = {
            **app_env(compose_env, server.url, workdir, "ceiling"),
            "CEILING_REDIS_URL": server.url,
            "CEILING_KEY": store.aggregate_key("global"),
            "CEILING_DAYS_KEY": CEILING_DAYS_KEY,
        }
        ceiling = Gunicorn("ceiling", ROOT, "bench.ceiling_app:application", command, ceiling_env)
        apps = [
            Gunicorn(
                "orderpipe", ROOT, "orderpipe.wsgi", command,
                app_env(compose_env, server.url, workdir, "orderpipe"),
            )
        ]  # fmt: skip
        if args.baseline:
            before_url = fill_baseline(args.baseline.resolve(), server.url)
            apps.append(
                Gunicorn(
                    "before", args.baseline.resolve(), "orderpipe.wsgi", command,
                    app_env(compose_env, before_url, workdir, "before"),
                )
            )  # fmt: skip
        servers = [ceiling, *apps]
        for s in servers:
            s.start(workdir)
        endpoints = [e for e in ENDPOINTS if not args.only or any(o in e for o in args.only)]
        script = workdir / "summary.lua"
        assert server.process is not None
        redis_pid = server.process.pid
        script.write_text(WRK_SCRIPT)
        # Which target serves which path (a 404 leaves the path out for that app; any other
        # non-2xx fails loudly), by-date's days ceiling checked equal to orderpipe; then every
        # worker warms up.
        targets: dict[str, dict[str, tuple[Gunicorn, str]]] = {p: {} for p in endpoints}
        for path in endpoints:
            targets[path]["ceiling"] = (ceiling, path)
            days_path = ceiling_path(path)
            if days_path:
                targets[path][DAYS_CEILING] = (ceiling, days_path)
                mine = json.loads(apps[0].get(path))
                if json.loads(ceiling.get(days_path)) != mine:
                    raise SystemExit(f"the days ceiling's body differs from orderpipe's: {path}")
            for app in apps:
                if served(app, path):
                    targets[path][app.name] = (app, path)
                else:
                    print(f"{app.name} does not serve {path} (404): left out", file=sys.stderr)
        for by_target in targets.values():
            for s, path in by_target.values():
                s.measure(path, 1, args, script, redis_pid)

        print(
            f"\n{' '.join(command)} (compose's web command; apps on free ports)\n"
            f"wrk -t{args.threads} -c{args.connections}, {args.seconds}s per endpoint and app, "
            f"median of {args.rounds} rounds; {os.cpu_count()} CPUs shared by wrk, Redis and "
            "all workers\n"
        )
        results: dict[str, dict[str, list[Run]]] = {
            p: {name: [] for name in by_target} for p, by_target in targets.items()
        }
        for round_ in range(args.rounds):
            for path, by_target in targets.items():
                for name, (s, target_path) in by_target.items():
                    results[path][name].append(
                        s.measure(target_path, args.seconds, args, script, redis_pid)
                    )
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        print_table(results, [a.name for a in apps])
        print_days_ceiling(results)
        print_goals(results, [a.name for a in apps])
        print(f"\nlogs in {workdir}")
        for s in servers:
            s.stop()
        servers = []
        if not args.skip_store_reads:
            store_reads(server.url, client, store, args)
    finally:
        for s in servers:
            s.stop()
        server.stop()


if __name__ == "__main__":
    main()
