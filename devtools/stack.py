"""``make run``: the whole local stack from PyPI wheels, in one terminal, stopped by one Ctrl-C.

Why a launcher and not just a Procfile: Redis and the SQS endpoint must be *ready* before the
web server and the consumer start, their ports are chosen at run time (a fixed port may be
taken), and they must outlive the consumer during shutdown so that its last batch can still be
committed and deleted. So this module starts them (``devtools.servers``: in their own sessions,
out of reach of the terminal's SIGINT), runs the migrations, then hands web, worker and feeder
to honcho's ``Manager`` for interleaved, prefixed logs. On Ctrl-C honcho sends its processes
SIGTERM; Redis and the SQS server are stopped last.

Run it as ``python -m devtools.stack`` (``make run``); ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import honcho.manager
from honcho.manager import Manager
from honcho.printer import Message, Printer

from devtools import servers
from devtools.servers import LOOPBACK, ServerProcess
from orderpipe.config import redact_url

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = BASE_DIR / ".localdata"
DEFAULT_WEB_PORT = 8000
PRINTER_NAME = "devstack"
FEEDER_DONE = "sample orders sent; the stack keeps running"


class StackError(Exception):
    """A problem the operator can fix; reported as one line, exit status 2."""


@dataclass
class Plan:
    """The commands honcho runs, and the ones left out because their command is missing."""

    processes: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def plan_processes(commands: set[str], options: argparse.Namespace, *, local_sqs: bool) -> Plan:
    """Only processes whose management command exists, so the stack runs while parts are built."""
    manage = f"{shlex.quote(sys.executable)} {shlex.quote(str(BASE_DIR / 'manage.py'))}"
    plan = Plan()
    # ``exec``: honcho runs each line through /bin/sh; without exec the shell, not Python, is
    # the process honcho watches, and it dies at SIGTERM while the consumer is still
    # committing its last batch (the launcher would then stop Redis under it).
    web = f"exec {manage} runserver {LOOPBACK}:{options.web_port}"
    plan.processes["web"] = web if options.reload else f"{web} --noreload"
    if "consume_orders" in commands:
        worker = f"exec {manage} consume_orders"
        if local_sqs:
            # A short long-poll against a local endpoint: an idle consumer notices Ctrl-C
            # within seconds instead of finishing a 20 s poll first.
            worker += f" --wait-time {options.wait_time}"
        plan.processes["worker"] = worker
    else:
        plan.missing.append("worker (consume_orders)")
    if local_sqs if options.feeder is None else options.feeder:
        if "populate_sqs" in commands:
            # No progress bar: honcho shows a line once it ends with a newline, and a bar
            # redraws itself with carriage returns (the worker logs its throughput anyway).
            feeder = f"{manage} populate_sqs --count {options.feed_count} --no-progress"
            feeder += f" --max-backlog {options.max_backlog}"
            plan.processes["feeder"] = then_idle(feeder, FEEDER_DONE)
        else:
            plan.missing.append("feeder (populate_sqs)")
    return plan


def then_idle(command: str, message: str) -> str:
    """``command``, and once it has succeeded ``message`` and idling: honcho stops the whole
    stack when any process exits, and a finite job (sending N orders) must not."""
    return f"{command} && echo {shlex.quote(message)} && exec tail -f /dev/null"


class StackManager(Manager):
    """honcho's Manager, where a signal that comes while the stack stops kills at once.

    honcho stops everything at the first SIGINT/SIGTERM (or when a process exits) by calling
    ``terminate``, and SIGKILLs what is left ``honcho.manager.KILL_WAIT`` seconds after the first
    process has exited; a second Ctrl-C it ignores. Here it means "kill now".
    """

    def terminate(self) -> None:
        # honcho calls this from its loop or its signal handler, in the main thread.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.kill())
        # honcho is unannotated; untyped_calls_exclude does not reach a call through super().
        super().terminate()  # type: ignore[no-untyped-call]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.stack",
        description="Run Redis, an SQS endpoint, the web server, the consumer and a feeder.",
    )
    add = parser.add_argument
    # fmt: off
    add("--web-port", type=int, help="default $WEB_PORT, else 8000 if free; 0: any free port")
    add("--redis-port", type=int, default=6380, help="default 6380 if free")
    add("--sqs-port", type=int, default=9324, help="default 9324 if free")
    add("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    add("--feed-count", type=int, default=100_000, help="orders the feeder sends")
    add("--max-backlog", type=int, default=200, help="feeder waits above this")
    feed = parser.add_mutually_exclusive_group()
    feed.add_argument("--feed", dest="feeder", action="store_true", default=None,
                      help="run the feeder even against real AWS SQS")
    feed.add_argument("--no-feed", dest="feeder", action="store_false",
                      help="do not send sample orders")
    add("--no-reload", dest="reload", action="store_false",
        help="runserver without the autoreloader")
    add("--kill-wait", type=float, default=25.0,
        help="seconds between SIGTERM and SIGKILL on Ctrl-C")
    add("--wait-time", type=int, default=5,
        help="consumer long-poll seconds against a local SQS endpoint (Ctrl-C latency)")
    # fmt: on
    args = parser.parse_args(argv)
    web_env = os.environ.get("WEB_PORT", "").strip()
    if args.web_port is None and web_env:
        if not web_env.isdigit():
            raise StackError(f"WEB_PORT={web_env!r} is not an integer.")
        args.web_port = int(web_env)
    args.data_dir = args.data_dir.resolve()
    return args


def read_settings() -> set[str]:
    """Set Django up (so a configuration error stops the launcher before anything starts);
    the management commands that exist."""
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import get_commands

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderpipe.settings")
    try:
        django.setup()  # also loads .env into the environment, as settings.py does
    except ImproperlyConfigured as exc:
        raise StackError(f"Configuration error: {exc}") from None
    return set(get_commands())


def choose_redis(options: argparse.Namespace, started: list[ServerProcess]) -> tuple[str, str]:
    """The Redis the environment names, used as it is (never flushed); else a Valkey of the
    stack's own. Which URL the environment names the settings decide (REDIS_URL, else
    REDIS_HOST and REDIS_PORT), as for every process of the stack. Returns (URL, banner line)."""
    from django.conf import settings

    if any(os.environ.get(name, "").strip() for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")):
        if not servers.redis_answers(settings.REDIS_URL):
            raise StackError(
                f"Redis at {redact_url(settings.REDIS_URL)} (from REDIS_URL/REDIS_HOST/REDIS_PORT)"
                " does not answer PING; start it, or unset those variables to get a local one."
            )
        return settings.REDIS_URL, f"{redact_url(settings.REDIS_URL)} (external, used as it is)"
    server = servers.RedisServer(
        port=servers.free_port(options.redis_port),
        data_dir=options.data_dir / "redis",
        log_path=options.data_dir / "logs" / "redis.log",
    )
    start(server, started)
    line = f"{server.url} (valkey, AOF appendfsync always, noeviction, in {server.data_dir}; "
    return server.url, f"{line}log {server.log_path})"


def choose_sqs(options: argparse.Namespace, started: list[ServerProcess]) -> tuple[str, str]:
    """LOCALSTACK_URL when set (empty: real AWS SQS), else a moto server of the stack's own.
    Returns (endpoint, "" for AWS; banner line)."""
    from django.conf import settings

    if "LOCALSTACK_URL" in os.environ:
        url = settings.LOCALSTACK_URL
        if not url:
            return "", f"real AWS SQS in {settings.AWS_REGION} (LOCALSTACK_URL is empty)"
        if not servers.http_answers(url, timeout=3):
            raise StackError(f"LOCALSTACK_URL={redact_url(url)} does not answer HTTP.")
        return url, f"{redact_url(url)} (external endpoint)"
    server = servers.MotoSQSServer(
        port=servers.free_port(options.sqs_port), log_path=options.data_dir / "logs" / "sqs.log"
    )
    start(server, started)
    return server.url, f"{server.url} (moto server, in memory; log {server.log_path})"


def start(server: ServerProcess, started: list[ServerProcess]) -> None:
    """Spawn without waiting (the migrations run meanwhile); it dies with the launcher."""
    server.die_with_parent = True
    started.append(server.start(wait=False))


def banner(web: str, redis_line: str, sqs_line: str, plan: Plan, elapsed: float) -> list[str]:
    lines = [
        f"ready in {elapsed:.1f}s: {', '.join(plan.processes)} running",
        f"  API root   {web}/",
        f"  Admin      {web}/admin/",
        f"  API docs   {web}/api/docs",
        f"  Redis      {redis_line}",
        f"  SQS        {sqs_line}",
    ]
    if plan.missing:
        lines.append(f"  not running yet (command missing): {', '.join(plan.missing)}")
    return [
        *lines,
        "  Create an admin user (another terminal):",
        "    DEBUG=true .venv/bin/python manage.py createsuperuser",
        "  Ctrl-C stops everything (twice: kill at once).",
    ]


def run(options: argparse.Namespace) -> int:
    started_at = time.monotonic()
    os.environ.setdefault("DEBUG", "true")
    commands = read_settings()
    if not options.web_port:  # None or 0
        options.web_port = servers.free_port(DEFAULT_WEB_PORT if options.web_port is None else None)
    elif not servers.port_is_free(options.web_port):
        raise StackError(f"web port {options.web_port} is in use; choose another with WEB_PORT")
    started: list[ServerProcess] = []
    try:
        (options.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        redis_url, redis_line = choose_redis(options, started)
        sqs_url, sqs_line = choose_sqs(options, started)
        env = {**os.environ, "REDIS_URL": redis_url, "LOCALSTACK_URL": sqs_url}
        env["PYTHONUNBUFFERED"] = "1"  # logs reach honcho line by line, not in 8 KiB lumps
        print(f"{PRINTER_NAME}: applying migrations", flush=True)
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        migrate = subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=BASE_DIR)
        if migrate.returncode != 0:
            raise StackError(f"migrate failed with status {migrate.returncode}")
        try:
            for server in started:
                server.wait_ready()
        except RuntimeError as exc:
            raise StackError(str(exc)) from None

        plan = plan_processes(commands, options, local_sqs=sqs_url != "")
        # honcho's grace between SIGTERM and SIGKILL: a module constant, loop() takes no argument.
        honcho.manager.KILL_WAIT = options.kill_wait
        printer = Printer(sys.stdout)
        manager = StackManager(printer)
        for name, command in plan.processes.items():
            manager.add_process(name, command, env=env, cwd=str(BASE_DIR))
        printer.width = max(printer.width, len(PRINTER_NAME))
        web = f"http://{LOOPBACK}:{options.web_port}"
        stopped = threading.Event()

        def announce() -> None:  # through honcho's queue, printed like a process's lines
            while not stopped.wait(0.1):
                if servers.port_is_open(options.web_port):
                    lines = banner(web, redis_line, sqs_line, plan, time.monotonic() - started_at)
                    now = dt.datetime.now()
                    manager.events.put(Message("line", "\n".join(lines), now, PRINTER_NAME, None))
                    return

        threading.Thread(target=announce, name="banner", daemon=True).start()
        try:
            manager.loop()
        finally:
            stopped.set()
        return 0 if manager.returncode in (130, 143) else int(manager.returncode or 0)
    finally:
        # Ignore further Ctrl-C while the servers shut down: a half-stopped Valkey is worse.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for server in reversed(started):
            if server.process is not None:
                print(
                    f"{PRINTER_NAME}: stopping {server.name} (pid {server.process.pid})", flush=True
                )
            server.stop()
        print(f"{PRINTER_NAME}: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except StackError as exc:
        print(f"{PRINTER_NAME}: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
