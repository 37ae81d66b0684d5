"""``make run``: the whole local stack from PyPI wheels, in one terminal, stopped by one Ctrl-C.

Why a launcher and not just a Procfile: Redis and the SQS endpoint must be *ready* before the
web server and the consumer start, their ports must be chosen at run time (a fixed port may be
taken), and they must outlive the consumer during shutdown so that its last batch can still be
committed and deleted. So this module starts them itself (in their own sessions, out of reach
of the terminal's SIGINT), runs the migrations, then hands the Django processes to honcho for
interleaved, prefixed logs. On Ctrl-C honcho's processes get SIGTERM first; Redis and the SQS
server are stopped last.

Run it as ``python -m orderpipe.devstack`` (``make run``); ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from honcho.manager import SIGNALS, Manager
from honcho.printer import Message, Printer
from honcho.process import Process

from orderpipe.config import redact_url
from orderpipe.devservers import free_port, port_is_open, valkey_binary

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = BASE_DIR / ".localdata"
PREFERRED_REDIS_PORT = 6380
PREFERRED_SQS_PORT = 9324
DEFAULT_WEB_PORT = 8000
LOOPBACK = "127.0.0.1"
PRINTER_NAME = "devstack"


class StackError(Exception):
    """A problem the operator can fix; reported as one line, exit status 2."""


# --- ports ----------------------------------------------------------------------------------


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could bind ``host:port`` now (servers set SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None) -> int:
    """The preferred port when free (stable URLs across restarts), else any free one."""
    if preferred and port_is_free(preferred):
        return preferred
    return free_port()


# --- child services (Redis, SQS endpoint) ---------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child if the launcher dies (even kill -9)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    """A server process this launcher started and must stop."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout: float = 10.0

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (Valkey then fsyncs its AOF and exits), SIGKILL after ``stop_timeout``."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _spawn(name: str, argv: list[str], log_path: Path, url: str) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=BASE_DIR,
            # Own session: the terminal's Ctrl-C must not stop Redis/SQS before the consumer
            # has committed its last batch; the launcher stops them last.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return Service(name=name, url=url, process=process, log_path=log_path)


def _stop_stale_redis(redis_dir: Path) -> None:
    """A launcher killed hard may leave its Valkey behind; two servers on one AOF corrupt it."""
    pidfile = redis_dir / "valkey.pid"
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"valkey-server" not in cmdline:
        return
    print(f"stopping a leftover valkey-server (pid {pid}) that uses {redis_dir}", flush=True)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def start_redis(data_dir: Path, port: int) -> Service:
    """Valkey with AOF (fsync before every reply) under ``data_dir/redis``: restarts keep stats."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    _stop_stale_redis(redis_dir)
    argv = [
        valkey_binary(),
        "--port", str(port),
        "--bind", LOOPBACK,
        "--dir", str(redis_dir),
        "--appendonly", "yes",
        "--appendfsync", "always",
        # Never evict: an evicted mark would count a redelivery twice (consume_orders refuses
        # any other policy).
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--daemonize", "no",
        "--pidfile", str(redis_dir / "valkey.pid"),
    ]  # fmt: skip
    return _spawn("redis", argv, data_dir / "logs" / "redis.log", f"redis://{LOOPBACK}:{port}/0")


def start_sqs(data_dir: Path, port: int) -> Service:
    """moto's SQS server (in memory). Its request log is noisy, so it goes to a file."""
    moto = Path(sys.executable).with_name("moto_server")
    argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    argv += ["-H", LOOPBACK, "-p", str(port)]
    return _spawn("sqs", argv, data_dir / "logs" / "sqs.log", f"http://{LOOPBACK}:{port}")


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """Any HTTP response (even 404) means the server is up."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - local URL we built
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(service: Service, probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        if service.process.poll() is not None:
            raise StackError(
                f"{service.name} exited with status {service.process.returncode}; "
                f"last lines of {service.log_path}:\n{service.log_tail()}"
            )
        time.sleep(0.05)
    raise StackError(f"{service.name} did not answer within {timeout:.0f}s ({service.url})")


# --- what to run ----------------------------------------------------------------------------


@dataclass
class Options:
    web_port: int
    web_port_explicit: bool
    redis_port: int | None
    sqs_port: int | None
    data_dir: Path
    feed_count: int
    max_backlog: int
    feeder: bool | None  # None: only against a local SQS endpoint
    reload: bool
    kill_wait: float
    wait_time: int | None = 5


@dataclass
class Plan:
    """The Django processes honcho runs, and the ones left out because their command is missing."""

    processes: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    may_exit: set[str] = field(default_factory=set)


def plan_processes(commands: Mapping[str, set[str]], options: Options, *, local_sqs: bool) -> Plan:
    """Only processes whose management command exists, so the stack runs while parts are built."""
    # ``exec``: honcho runs each line through /bin/sh; without exec the shell, not Python, is
    # the process honcho watches, and it dies at SIGTERM while the consumer is still
    # committing its last batch (the launcher would then stop Redis under it).
    python = "exec " + shlex.quote(sys.executable)
    manage = shlex.quote(str(BASE_DIR / "manage.py"))
    plan = Plan()
    web = f"{python} {manage} runserver {LOOPBACK}:{options.web_port}"
    plan.processes["web"] = web if options.reload else f"{web} --noreload"
    if "consume_orders" in commands:
        worker = f"{python} {manage} consume_orders"
        if (
            local_sqs
            and options.wait_time is not None
            and "--wait-time" in commands["consume_orders"]
        ):
            # A short long-poll against a local endpoint: an idle consumer notices Ctrl-C
            # within seconds instead of finishing a 20 s poll first.
            worker += f" --wait-time {options.wait_time}"
        plan.processes["worker"] = worker
    else:
        plan.missing.append("worker (consume_orders)")
    feeder_wanted = local_sqs if options.feeder is None else options.feeder
    if feeder_wanted:
        if "populate_sqs" in commands:
            plan.processes["feeder"] = (
                f"{python} {manage} populate_sqs --count {options.feed_count} "
                f"--max-backlog {options.max_backlog}"
            )
            # Sending N orders is a finite job: when it is done the stack keeps running.
            plan.may_exit.add("feeder")
        else:
            plan.missing.append("feeder (populate_sqs)")
    return plan


# --- honcho, with a finite feeder, a bounded shutdown and a readiness banner ------------------


class LineProcess(Process):
    """honcho's Process, but a carriage return also ends a line.

    Progress bars (tqdm in ``populate_sqs``) redraw with ``\\r`` and no newline; honcho reads by
    newline, so the bar would show only when the feeder exits.
    """

    def run(self, events: object = None, ignore_signals: bool = False) -> None:
        self._events = events
        self._child = self._child_ctor(self.cmd, env=self.env, cwd=self.cwd)
        self._send_message({"pid": self._child.pid}, type="start")
        if ignore_signals:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fd = self._child.stdout.fileno()
        pending = b""
        while chunk := os.read(fd, 65536):
            *lines, pending = (
                (pending + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            )
            for line in lines:
                if line.strip() and not self.quiet:
                    self._send_message(line + b"\n")
        if pending.strip() and not self.quiet:
            self._send_message(pending + b"\n")
        self._child.stdout.close()
        self._child.wait()
        self._send_message({"returncode": self._child.returncode}, type="stop")


class StackManager(Manager):
    """honcho's Manager with three changes the local stack needs.

    - processes in ``may_exit`` may finish with status 0 without stopping the stack;
    - the SIGTERM -> SIGKILL grace period starts at Ctrl-C (honcho waits for a first exit,
      forever if none comes) and lasts ``kill_wait`` seconds, long enough for the consumer to
      commit its batch; a second Ctrl-C kills at once;
    - ``on_tick`` runs every 0.1 s until the stack stops (used for the "ready" banner).
    """

    def __init__(
        self,
        printer: Printer,
        *,
        may_exit: set[str],
        kill_wait: float,
        on_tick: Callable[[StackManager], None] | None = None,
    ) -> None:
        super().__init__(printer)
        self._printer.width = max(self._printer.width, len(PRINTER_NAME))
        self.may_exit = may_exit
        self.kill_wait = kill_wait
        self.on_tick = on_tick
        self.finished: set[str] = set()
        self._process_ctor = LineProcess

    def say(self, text: str) -> None:
        self._printer.write(
            Message(
                type="line",
                data=text + "\n",
                time=self._clock.now(),
                name=PRINTER_NAME,
                colour=None,
            )
        )

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = SIGNALS[signum]["name"]
        if self._terminating:
            self._system_print(f"{name} received again: killing everything now\n")
            self.kill()
            return
        self._system_print(f"{name} received: stopping (again to kill at once)\n")
        self.returncode = SIGNALS[signum]["rc"]
        self.terminate()

    def _killall(self, force: bool = False) -> None:
        for name, proc in self._processes.items():
            if "returncode" in proc or proc.get("pid") is None:
                continue  # not started yet: signalled as soon as its start event arrives
            signame = "SIGKILL" if force else "SIGTERM"
            self._system_print(f"sending {signame} to {name} (pid {proc['pid']})\n")
            if force:
                self._procmgr.kill(proc["pid"])
            else:
                self._procmgr.terminate(proc["pid"])

    def _handle(self, msg: Message) -> None:
        if msg.type == "line":
            self._printer.write(msg)
        elif msg.type == "start":
            self._processes[msg.name]["pid"] = msg.data["pid"]
            self._system_print(f"{msg.name} started (pid={msg.data['pid']})\n")
            if self._terminating:
                self._procmgr.terminate(msg.data["pid"])
        elif msg.type == "stop":
            rc = msg.data["returncode"]
            self._processes[msg.name]["returncode"] = rc
            if msg.name in self.may_exit and rc == 0 and not self._terminating:
                self.finished.add(msg.name)
                self._system_print(f"{msg.name} finished (rc=0); the stack keeps running\n")
                return
            self._system_print(f"{msg.name} stopped (rc={rc})\n")
            if self.returncode is None:
                self.returncode = rc

    def sweep(self, grace: float = 3.0) -> None:
        """Stop what is left in the process groups once their leaders have exited.

        honcho watches one process per line; a grandchild (runserver's reloader child, a shell's
        background job) could outlive it. Each line runs in its own session, so its process
        group is exactly what it started.
        """
        groups = [p["pid"] for p in self._processes.values() if p.get("pid")]

        def alive() -> list[int]:
            left = []
            for pgid in groups:
                try:
                    os.killpg(pgid, 0)
                except (ProcessLookupError, PermissionError):
                    continue
                left.append(pgid)
            return left

        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = alive()
            if not left:
                return
            for pgid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + grace
            while alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def loop(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._start()
        exit_start: dt.datetime | None = None
        killed = False
        while True:
            try:
                self._handle(self.events.get(timeout=0.1))
                continue_draining = True
            except queue.Empty:
                continue_draining = False
            if self._all_started() and self._all_stopped() and not continue_draining:
                break
            failed = any(
                "returncode" in p and name not in self.finished
                for name, p in self._processes.items()
            )
            if failed and not self._terminating:
                self.terminate()  # one process died: take the others down (honcho's rule)
            if self._terminating and exit_start is None:
                exit_start = self._clock.now()
            if exit_start is not None and not killed:
                if self._clock.now() - exit_start > dt.timedelta(seconds=self.kill_wait):
                    self.kill()
                    killed = True
            elif self.on_tick is not None:
                self.on_tick(self)


# --- the command ----------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return name in os.environ


def explicit_redis_url(environ: Mapping[str, str]) -> str | None:
    """The Redis the operator pointed at (same precedence as settings), or None."""
    if environ.get("REDIS_URL", "").strip():
        return environ["REDIS_URL"].strip()
    if environ.get("REDIS_HOST", "").strip() or environ.get("REDIS_PORT", "").strip():
        host = environ.get("REDIS_HOST", "").strip() or "localhost"
        port = environ.get("REDIS_PORT", "").strip() or "6379"
        return f"redis://{host}:{port}/0"
    return None


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m orderpipe.devstack",
        description="Run Redis, an SQS endpoint, the web server, the consumer and a feeder.",
    )
    web_env = os.environ.get("WEB_PORT", "").strip()
    parser.add_argument("--web-port", type=int, default=None, help="default $WEB_PORT or 8000")
    parser.add_argument("--redis-port", type=int, default=None, help="default 6380 if free")
    parser.add_argument("--sqs-port", type=int, default=None, help="default 9324 if free")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--feed-count", type=int, default=100_000, help="orders the feeder sends")
    parser.add_argument("--max-backlog", type=int, default=200, help="feeder waits above this")
    feed = parser.add_mutually_exclusive_group()
    feed.add_argument(
        "--feed",
        dest="feeder",
        action="store_true",
        default=None,
        help="run the feeder even against real AWS SQS",
    )
    feed.add_argument(
        "--no-feed", dest="feeder", action="store_false", help="do not send sample orders"
    )
    parser.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        help="runserver without the autoreloader",
    )
    parser.add_argument(
        "--kill-wait",
        type=float,
        default=25.0,
        help="seconds between SIGTERM and SIGKILL on Ctrl-C",
    )
    parser.add_argument(
        "--wait-time",
        type=int,
        default=5,
        help="consumer long-poll seconds against a local SQS endpoint (Ctrl-C latency)",
    )
    args = parser.parse_args(argv)
    if args.web_port is not None:
        web_port, explicit = args.web_port, True
    elif web_env:
        try:
            web_port, explicit = int(web_env), True
        except ValueError:
            raise StackError(f"WEB_PORT={web_env!r} is not an integer.") from None
    else:
        web_port, explicit = DEFAULT_WEB_PORT, False
    return Options(
        web_port=web_port,
        web_port_explicit=explicit,
        redis_port=args.redis_port,
        sqs_port=args.sqs_port,
        data_dir=args.data_dir.resolve(),
        feed_count=args.feed_count,
        max_backlog=args.max_backlog,
        feeder=args.feeder,
        reload=args.reload,
        kill_wait=args.kill_wait,
        wait_time=args.wait_time,
    )


STACK_COMMANDS = ("consume_orders", "populate_sqs")


def django_commands() -> dict[str, set[str]]:
    """Commands that exist and import, each with its option strings (stack commands only).

    Imports the settings, so configuration errors surface here, before anything starts. A
    command that exists but cannot be imported (being written) is left out rather than taking
    the running pieces down with it.
    """
    import django
    from django.core.management import get_commands, load_command_class

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderpipe.settings")
    django.setup()
    available: dict[str, set[str]] = {}
    for name, app in get_commands().items():
        if name not in STACK_COMMANDS:
            available[name] = set()
            continue
        try:
            command = load_command_class(app, name)
            parser = command.create_parser("manage.py", name)
        except Exception as exc:  # any import-time failure: report it, run the rest
            print(f"{PRINTER_NAME}: leaving out {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            available[name] = set(parser._option_string_actions)
    return available


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
        lines.append(
            f"  not running yet (command missing or not importable): {', '.join(plan.missing)}"
        )
    lines += [
        "  Create an admin user (another terminal):",
        "    DEBUG=true .venv/bin/python manage.py createsuperuser",
        "  Ctrl-C stops everything (twice: kill at once).",
    ]
    return lines


def run(options: Options) -> int:
    started_at = time.monotonic()
    env_file = BASE_DIR / ".env"
    if env_file.is_file():
        import environ

        environ.Env.read_env(str(env_file))  # never overrides the real environment
    os.environ.setdefault("DEBUG", "true")
    from django.core.exceptions import ImproperlyConfigured

    try:
        commands = django_commands()
    except ImproperlyConfigured as exc:
        raise StackError(f"Configuration error: {exc}") from None

    if options.web_port_explicit and not port_is_free(options.web_port):
        raise StackError(f"web port {options.web_port} is in use; choose another with WEB_PORT")
    web_port = options.web_port if options.web_port_explicit else pick_port(options.web_port)
    options.web_port = web_port

    services: list[Service] = []
    child_env = dict(os.environ)
    try:
        # Redis: an explicitly configured server that answers, else our own Valkey.
        redis_url = explicit_redis_url(os.environ)
        redis_service: Service | None = None
        if redis_url is not None:
            if not redis_answers(redis_url):
                raise StackError(
                    f"Redis at {redact_url(redis_url)} (from REDIS_URL/REDIS_HOST/REDIS_PORT) "
                    "does not answer PING; start it, or unset those variables to get a local one."
                )
            redis_line = f"{redact_url(redis_url)} (external, used as it is)"
        else:
            port = pick_port(options.redis_port or PREFERRED_REDIS_PORT)
            redis_service = start_redis(options.data_dir, port)
            services.append(redis_service)
            redis_url = redis_service.url
            redis_line = (
                f"{redis_url} (valkey, AOF appendfsync always, noeviction, in "
                f"{options.data_dir / 'redis'}; "
                f"log {redis_service.log_path})"
            )

        # SQS: LOCALSTACK_URL when set (empty = real AWS), else a moto server.
        sqs_service: Service | None = None
        local_sqs = True
        if "LOCALSTACK_URL" in os.environ:
            sqs_url = os.environ["LOCALSTACK_URL"].strip()
            if sqs_url:
                if not http_answers(sqs_url, timeout=3):
                    raise StackError(f"LOCALSTACK_URL={redact_url(sqs_url)} does not answer HTTP.")
                sqs_line = f"{redact_url(sqs_url)} (external endpoint)"
            else:
                local_sqs = False
                region = os.environ.get("AWS_REGION", "us-east-1")
                sqs_line = f"real AWS SQS in {region} (LOCALSTACK_URL is empty)"
        else:
            sqs_service = start_sqs(options.data_dir, pick_port(options.sqs_port or 9324))
            services.append(sqs_service)
            sqs_url = sqs_service.url
            sqs_line = f"{sqs_url} (moto server, in memory; log {sqs_service.log_path})"

        child_env.update(
            REDIS_URL=redis_url,
            LOCALSTACK_URL=sqs_url,
            PYTHONUNBUFFERED="1",  # logs reach honcho line by line, not in 8 KiB lumps
        )
        child_env.setdefault("TQDM_MININTERVAL", "5")  # a progress line every 5 s, not 10/s

        print(f"{PRINTER_NAME}: applying migrations", flush=True)
        migrate = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), "migrate", "--noinput", "-v", "1"],
            env=child_env,
            cwd=BASE_DIR,
            check=False,
        )
        if migrate.returncode != 0:
            raise StackError(f"migrate failed with status {migrate.returncode}")
        if redis_service is not None:
            wait_until(redis_service, lambda: redis_answers(redis_url, timeout=0.5))
        if sqs_service is not None:
            wait_until(sqs_service, lambda: http_answers(sqs_url, timeout=0.5))

        plan = plan_processes(commands, options, local_sqs=local_sqs)
        web = f"http://{LOOPBACK}:{web_port}"
        ready = False

        def announce(manager: StackManager) -> None:
            nonlocal ready
            if not ready and port_is_open(web_port):
                ready = True
                elapsed = time.monotonic() - started_at
                for line in banner(web, redis_line, sqs_line, plan, elapsed):
                    manager.say(line)

        manager = StackManager(
            Printer(sys.stdout),
            may_exit=plan.may_exit,
            kill_wait=options.kill_wait,
            on_tick=announce,
        )
        for name, command in plan.processes.items():
            manager.add_process(name, command, env=child_env, cwd=str(BASE_DIR))
        manager.loop()
        manager.sweep()
        interrupted = manager.returncode in (130, 143)
        return 0 if interrupted else int(manager.returncode or 0)
    finally:
        # Ignore further Ctrl-C while the servers shut down: a half-stopped Valkey is worse.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for service in reversed(services):
            print(
                f"{PRINTER_NAME}: stopping {service.name} (pid {service.process.pid})", flush=True
            )
            service.stop()
        print(f"{PRINTER_NAME}: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except StackError as exc:
        print(f"{PRINTER_NAME}: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
