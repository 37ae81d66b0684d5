"""The ``make run`` launcher: real child servers, a clean Ctrl-C, nothing left behind."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import honcho.manager
import pytest
import redis
from honcho.printer import Printer

from devtools import stack
from devtools.servers import RedisServer, free_port, port_is_open

BASE_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


# --- helpers --------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a live process, None when gone; a zombie counts as gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    state, ppid = fields[0], int(fields[1])
    return None if state in {"Z", "X"} else (ppid, state)


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _stat(pid) is not None}
        if alive:
            time.sleep(0.05)
    return alive


def stack_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment minus anything that would point the stack elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "REDIS_URL",
            "REDIS_HOST",
            "REDIS_PORT",
            "LOCALSTACK_URL",
            "WEB_PORT",
            "SECRET_KEY",
            # pytest-django exports the test settings; the stack runs the real ones.
            "DJANGO_SETTINGS_MODULE",
        }
    }
    env.update(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        LOG_DIR=str(tmp_path / "logs"),
        QUEUE_NAME="devstack-test",
        PYTHONUNBUFFERED="1",
    )
    return env


class OutputReader:
    """Collects a child's stdout lines in a thread, so waiting on a line has a deadline."""

    def __init__(self, stream: io.BufferedReader) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: io.BufferedReader) -> None:
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float, process: subprocess.Popen[bytes]) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if text in line:
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or process.poll() is not None:
                    raise AssertionError(f"no {text!r} in output:\n" + self.text)
                self._cond.wait(min(remaining, 0.2))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# --- the whole launcher ---------------------------------------------------------------------


@pytest.mark.integration
def test_stack_starts_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    web_port, redis_port, sqs_port = free_port(), free_port(), free_port()
    argv = [
        sys.executable, "-m", "devtools.stack",
        "--data-dir", str(tmp_path / "localdata"),
        "--web-port", str(web_port),
        "--redis-port", str(redis_port),
        "--sqs-port", str(sqs_port),
        "--feed-count", "20",
        "--max-backlog", "10",
        "--kill-wait", "15",
    ]  # fmt: skip
    # Own session, so the SIGINT below reaches the launcher's whole process group exactly
    # as a terminal's Ctrl-C would, and nothing else.
    process = subprocess.Popen(
        argv,
        cwd=BASE_DIR,
        env=stack_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    reader = OutputReader(process.stdout)  # type: ignore[arg-type]
    children: set[int] = set()
    try:
        reader.wait_for("ready in", timeout=90, process=process)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/admin/login/", timeout=10) as r:
            assert r.status == 200
        client = redis.Redis(port=redis_port, socket_timeout=5, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{sqs_port}/moto-api/", timeout=10):
            pass

        # A feeder that has sent its orders must not stop the stack.
        reader.wait_for(stack.FEEDER_DONE, timeout=60, process=process)
        time.sleep(1)
        assert process.poll() is None
        assert "sending SIGTERM" not in reader.text and "feeder stopped" not in reader.text

        children = descendants(process.pid)
        commands = " | ".join(cmdline(pid) for pid in children)
        assert "valkey-server" in commands
        assert "moto.server" in commands
        assert "runserver" in commands
        assert "http://127.0.0.1:" in reader.text and "createsuperuser" in reader.text

        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, reader.text
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        leftovers = wait_gone(children | descendants(process.pid))
        for pid in leftovers:  # never leave them to the next test, but fail loudly
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, {pid: cmdline(pid) for pid in leftovers}
    for port in (web_port, redis_port, sqs_port):
        assert not port_is_open(port), f"port {port} still answers"
    assert "devstack: stopped" in reader.text
    # Redis and SQS outlive the consumer, so that its last batch can commit and be deleted.
    text = reader.text
    assert text.index("worker stopped (rc=0)") < text.index("devstack: stopping moto")
    assert text.index("devstack: stopping moto") < text.index("devstack: stopping redis")
    assert "SIGKILL" not in reader.text, "a process had to be killed: " + reader.text


def run_launcher(env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    """The launcher run to completion (for the cases where it refuses to start)."""
    return subprocess.run(
        [sys.executable, "-m", "devtools.stack", "--data-dir", str(data_dir)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variables", "shown"),
    [
        pytest.param({"REDIS_URL": "redis://:secret@127.0.0.1:{port}/0"},
                     "redis://:***@127.0.0.1:{port}/0", id="url"),
        pytest.param({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "{port}"},
                     "redis://127.0.0.1:{port}/0", id="host-and-port"),
        pytest.param({"REDIS_URL": "redis://127.0.0.1:{port}/2", "REDIS_HOST": "elsewhere"},
                     "redis://127.0.0.1:{port}/2", id="url-over-host"),
    ],
)  # fmt: skip
def test_unreachable_explicit_redis_is_a_clear_error(
    tmp_path: Path, variables: dict[str, str], shown: str
) -> None:
    """The Redis the settings name (REDIS_URL, else REDIS_HOST and REDIS_PORT) is the one
    checked, shown without its password; nothing starts."""
    env = stack_env(tmp_path)
    port = free_port()  # nothing listens there
    env.update({name: value.format(port=port) for name, value in variables.items()})
    result = run_launcher(env, tmp_path)
    assert result.returncode == 2
    assert f"Redis at {shown.format(port=port)} (from" in result.stderr
    assert "does not answer PING" in result.stderr
    assert "secret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "redis").exists()  # started nothing


def test_bad_setting_stops_the_launcher_before_anything_starts(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    env["DEBUG"] = "maybe"
    result = run_launcher(env, tmp_path)
    assert result.returncode == 2
    assert "DEBUG='maybe' is not a boolean" in result.stderr
    assert "Traceback" not in result.stderr


# --- pieces ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_local_redis_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(port=port, data_dir=tmp_path / "redis").start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set("devstack:test", "kept")
    finally:
        server.stop()

    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("devstack:test") == b"kept"
    finally:
        server.stop()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()


@pytest.mark.integration
def test_a_leftover_valkey_on_the_data_dir_is_stopped_before_a_new_one_starts(
    tmp_path: Path,
) -> None:
    """A launcher killed hard leaves its Valkey running; two servers on one AOF corrupt it."""
    leftover = RedisServer(port=free_port(), data_dir=tmp_path / "redis").start()
    with redis.Redis.from_url(leftover.url) as client:
        client.set("devstack:test", "kept")
    pid = leftover.process.pid

    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis").start()
    try:
        assert leftover.process.wait(timeout=10) == 0  # stopped with SIGTERM: AOF flushed
        with redis.Redis.from_url(server.url) as client:
            assert client.get("devstack:test") == b"kept"
    finally:
        server.stop()
        leftover.stop()
    assert _stat(pid) is None


@pytest.mark.integration
def test_the_launchers_servers_die_with_it_even_after_kill_9(tmp_path: Path) -> None:
    """A launcher killed hard must not leave Redis and SQS running on their ports."""
    code = (
        "import sys; from devtools.servers import MotoSQSServer, RedisServer\n"
        f"servers = [RedisServer(data_dir={str(tmp_path)!r}), MotoSQSServer()]\n"
        "for server in servers:\n"
        "    server.die_with_parent = True\n"
        "    server.start()\n"
        "print(*(server.process.pid for server in servers), flush=True)\n"
        "sys.stdin.read()\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", code], cwd=BASE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    pids = {int(pid) for pid in starter.stdout.readline().split()}  # type: ignore[union-attr]
    assert len(pids) == 2 and all(_stat(pid) for pid in pids)

    starter.kill()
    starter.wait()

    leftovers = wait_gone(pids)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, {pid: cmdline(pid) for pid in leftovers}


def run_manager(
    processes: dict[str, str], signals_after: tuple[float, ...] = ()
) -> tuple[stack.StackManager, str, float]:
    """``processes`` under ``StackManager`` in this process; SIGINT to ourselves at each of
    ``signals_after`` (seconds from the start), as a terminal's Ctrl-C would."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    output = io.StringIO()
    manager = stack.StackManager(Printer(output))
    for name, command in processes.items():
        manager.add_process(name, command)

    def interrupt() -> None:
        for delay in signals_after:
            time.sleep(delay)
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    try:
        manager.loop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return manager, output.getvalue(), time.monotonic() - started


def test_a_finished_job_keeps_the_stack_running_a_crash_stops_it_the_stubborn_are_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(honcho.manager, "KILL_WAIT", 0.5)
    manager, output, elapsed = run_manager(
        {
            "job": stack.then_idle("echo job-done", "job idles"),
            "crash": "sleep 1; exit 3",
            "stubborn": "trap '' TERM; sleep 60",
        }
    )
    assert elapsed < 15
    assert "job-done" in output and "job idles" in output
    assert manager.returncode == 3  # the crash, not the finished job, stopped the stack
    assert "SIGKILL" in output


def test_a_second_ctrl_c_kills_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(honcho.manager, "KILL_WAIT", 60)
    manager, output, elapsed = run_manager(
        {"web": "sleep 60", "stubborn": "trap '' TERM; sleep 60"}, signals_after=(1.5, 1.0)
    )
    assert elapsed < 15  # not the 60 s grace
    assert manager.returncode == 130
    assert "sending SIGTERM to stubborn" in output
    assert "sending SIGKILL to stubborn" in output
