"""The aggregate store: every Redis key orderpipe uses, its scripts, and all reads.

Nobody else builds Redis keys. Money is integer cents in Redis (HINCRBY, exact); it becomes a
``Decimal`` only on the way out (``cents_to_decimal``). Redis is a read model: the ledger
(``orders.ledger``) is the record of truth and ``rebuild_stats`` derives everything below
from it again.

Shards and hash tags. A user's aggregates live in shard ``crc32(user_id) mod REDIS_SHARDS``
and every key of shard ``s`` of ``N`` carries the tag ``T = {<prefix>:<N>:<s>}``, so one
script call per shard touches one hash slot (Redis Cluster, ElastiCache Serverless), and two
layouts (another ``N``) never share a key while a rebuild moves the aggregates between them.
With one shard on a single node (the default) ``T`` is plain ``<prefix>``: the key names of
earlier versions.

Generations. Aggregates live under a generation ``G`` (``T:g<G>:…``; generation 0 has no
segment); ``rebuild_stats`` fills a fresh one and then switches ``T:gen`` to it, so a reader
never sees a half-built state. Writers and readers check the generation they use.

====================================  ======  ===========================================
key                                   type    content
====================================  ======  ===========================================
``T[:gG]:user:<user_id>``             hash    orders, spend (cents), first, last (epoch ms)
``T[:gG]:global``                     hash    orders, revenue (cents), users (this shard's)
``T[:gG]:rank:spend``                 zset    user_id scored by -spend (cents)
``T[:gG]:rank:orders``                zset    user_id scored by -order count
``T[:gG]:days``                       hash    ``YYYY-MM-DD:orders``, ``YYYY-MM-DD:revenue``
``T:seen:<order_id>``                 string  fingerprint: applied; expires after the TTL
``T:rejected:<message_id>``           string  "1": this rejected message is counted
``T:ingest``                          hash    received, applied, duplicates, rejected,
                                              ``rejected:<code>``, last_batch_ms, heartbeat_ms
``T:gen``                             string  the shard's live generation (absent = 0)
``T:lock``                            string  a rebuild's token while it runs (expires)
``<prefix>:consumers``                hash    consumer id (host:pid) -> last sign of life (ms)
``<prefix>:layout``                   string  the shard count the aggregates are laid out for
``<prefix>:reconcile``                string  JSON: when the last reconcile ran, what it found
====================================  ======  ===========================================

All days of a shard live in one hash so that any date range is one HMGET per shard, and
rankings use negated scores so that one ZRANGE returns the highest first with ties by user_id
ascending; merged shards keep both rules. Reads are one pipelined round trip (per node).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis
from django.conf import settings
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from orderpipe.timeutils import epoch_ms

if TYPE_CHECKING:
    from orders.validation import Order

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LUA = Path(__file__).parents[1] / "lua"
APPLY_SCRIPT = (_LUA / "apply_batch.lua").read_text()
APPLY_SHA = hashlib.sha1(APPLY_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
RELEASE_LOCK_SCRIPT = (_LUA / "release_lock.lua").read_text()
# The script needs SET … NX GET semantics and #! flags: Redis / Valkey 7.0 or newer.
MIN_REDIS_VERSION = (7, 0)
# An order without a mark is applied only if it was first recorded this far inside the marks'
# TTL (at most a quarter of it): the margin covers clock differences between consumer hosts.
CLOCK_MARGIN = timedelta(hours=1)

# Keys outside every shard: ``AggregateStore.shared_key(name)``.
SHARED_KEYS = ("consumers", "layout", "reconcile")
# The value of a retired layout's lock (see ``AggregateStore.retire``).
RETIRED = "retired:"
# (prefix, shards) -> each shard's live generation as this process last saw it.
_GENERATIONS: dict[tuple[str, int], list[int]] = {}
# prefix -> (monotonic time, every primary's INFO) for ``servers(max_age=…)``.
_SERVERS: dict[str, tuple[float, list[ServerInfo]]] = {}

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailableError(Exception):
    """Redis cannot serve right now and will again by itself (see ``_TRANSIENT``).

    Callers back off and retry the same work (the consumer) or answer 503 (the API).
    """


class RebuildInProgressError(StoreUnavailableError):
    """``rebuild_stats`` holds the lock: writers keep their batch and try again shortly."""


class StoreCommandError(StoreUnavailableError):
    """Redis refused a command for a reason that retrying cannot cure (see ``_PERMANENT``):
    the consumer stops loudly instead of cycling every message towards the dead-letter queue.
    The API still answers 503."""


# --- What Redis says, and what it means (issue 11 §2) ---------------------------------------
# Refusals that end by themselves: the consumer keeps its batch, backs off and retries it.
_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # unreachable, reset, pool exhausted; BusyLoadingError = LOADING
    redis.TimeoutError,  # no answer within REDIS_SOCKET_TIMEOUT
    redis.exceptions.ReadOnlyError,  # READONLY: a replica, e.g. an old primary in a failover
    redis.exceptions.TryAgainError,  # TRYAGAIN: multi-key command during a slot migration
    redis.exceptions.ClusterDownError,  # CLUSTERDOWN (and MASTERDOWN, its subclass)
    redis.exceptions.ClusterError,  # "TTL exhausted": redirections (TRYAGAIN) that did not end
    redis.exceptions.OutOfMemoryError,  # OOM under noeviction: lifts when memory is freed
    redis.exceptions.SlotNotCoveredError,  # cluster: a slot's primary is gone, not yet replaced
)
# redis-py's cluster client, when it (re)builds its slot map and no node it knows answers.
_CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"
# Plain ResponseErrors recognised by their code (a pipeline prefixes the reply with
# "Command # N (…) of pipeline caused error: ").
_TRANSIENT_CODES = re.compile(
    r"(?:^|caused error: )(?:"
    r"BUSY"  # another client's script runs long; ends with it (or SCRIPT KILL)
    r"|MISCONF"  # writes refused until a failed background save succeeds
    r"|NOREPLICAS"  # fewer replicas than min-replicas-to-write are connected
    r"|LOADING"  # a restart replaying its data
    r") "
)
# Never retried, although some are ConnectionErrors: they need an operator.
_PERMANENT: tuple[type[BaseException], ...] = (
    redis.AuthenticationError,  # wrong password
    redis.exceptions.AuthorizationError,  # the user may not run this
    redis.exceptions.NoPermissionError,  # NOPERM: ACL forbids a command or key
)
# Everything else (WRONGTYPE, CROSSSLOT, an unknown command on an old server, a script
# error) is permanent too.


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, RedisClusterException) and str(exc).startswith(_CLUSTER_UNREACHABLE):
        return True
    return isinstance(exc, _TRANSIENT) or _TRANSIENT_CODES.search(str(exc)) is not None


def _unavailable_on_redis_error(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.RedisError, RedisClusterException) as exc:
            kind = StoreUnavailableError if _is_transient(exc) else StoreCommandError
            raise kind(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def cents_to_decimal(cents: int) -> Decimal:
    """Exact money value for output: 29999 -> Decimal('299.99')."""
    return Decimal(cents).scaleb(-2)


def _ms_to_datetime(value: bytes | str | int | None) -> datetime | None:
    if value is None:
        return None
    return EPOCH + timedelta(milliseconds=int(value))


def _int(value: bytes | str | None) -> int:
    return int(value) if value is not None else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _score_to_int(value: bytes | str | float) -> int:
    # Scores come back as text such as b"-1.5e+15"; Decimal reads any form of it exactly.
    if isinstance(value, bytes):
        value = value.decode()
    return int(Decimal(str(value)))


class ApplyStatus(enum.IntEnum):
    DUPLICATE = 0
    APPLIED = 1
    CONFLICT = 2  # the mark holds another payload's fingerprint (one applied before the ledger)
    BEFORE_WINDOW = 3  # no mark, first recorded before the marks' window: never applied again


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    order_count: int
    total_spend_cents: int
    first_order_at: datetime | None
    last_order_at: datetime | None


@dataclass(frozen=True, slots=True)
class GlobalStats:
    total_orders: int
    total_revenue_cents: int
    unique_users: int


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int
    user_id: str
    value: int  # cents for spenders, orders for buyers


@dataclass(frozen=True, slots=True)
class DayStats:
    day: date
    total_orders: int
    total_revenue_cents: int


@dataclass(frozen=True, slots=True)
class IngestionStats:
    received: int
    applied: int
    duplicates: int
    rejected: int
    rejected_by_code: dict[str, int]
    last_batch_at: datetime | None
    heartbeat_at: datetime | None


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One Redis primary as ``pipeline_status`` and ``/health`` show it."""

    node: str
    reachable: bool
    version: str | None = None  # as the server names itself: "valkey 9.1.2", "redis 7.0.15"
    redis_version: str | None = None  # the Redis version it is compatible with
    eviction_policy: str | None = None
    error: str | None = None

    def problems(self) -> list[str]:
        """Why orderpipe must not write to this server (empty when it may)."""
        if not self.reachable:
            return []  # an outage, not a misconfiguration
        found = []
        if self.redis_version and _version_tuple(self.redis_version) < MIN_REDIS_VERSION:
            found.append(
                f"Redis {self.node} is version {self.redis_version}; orderpipe needs 7.0 or newer "
                "(its scripts use SET … NX GET and #! flags)"
            )
        if self.eviction_policy not in (None, "noeviction"):
            found.append(
                f"Redis {self.node} has maxmemory-policy {self.eviction_policy}: it would evict "
                "idempotency marks (a redelivery counted twice) or aggregates (money lost). "
                "Set it to noeviction (redis.conf `maxmemory-policy noeviction`, "
                "`CONFIG SET maxmemory-policy noeviction`, or the parameter group of a "
                "managed service)"
            )
        return found


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class BatchApplied:
    statuses: list[ApplyStatus]  # one per order, in order
    rejections_counted: int


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order on its way to Redis: ``first_recorded_at`` is when the ledger first saw it
    (None: just now), which decides what a missing mark means."""

    order: Order
    first_recorded_at: datetime | None = None


def days_between(start: date, end: date) -> Iterator[date]:
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


def shard_of(value: str, shards: int) -> int:
    """The shard of a user (or of a rejected message): stable across processes and versions."""
    if shards == 1:
        return 0
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % shards


@dataclass(slots=True)
class _ShardWork:
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)  # positions in the caller's list
    rejects: list[str] = field(default_factory=list)
    received: int = 0


class AggregateStore:
    """Reads and writes the aggregates of one key prefix in one Redis (node or cluster).

    ``client`` is a redis-py client (django-redis's pooled one in the app, a ``RedisCluster``
    with ``REDIS_CLUSTER``, fakeredis or a test server in tests); ``clock`` returns epoch
    seconds and is swappable in tests.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        prefix: str = "orderpipe",
        dedup_ttl: int = 15 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        shards: int = 1,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.client = client
        self.prefix = prefix
        self.dedup_ttl = dedup_ttl
        self.clock = clock
        self.shards = shards
        self.cluster = isinstance(client, RedisCluster)
        # One node and one shard: the key names of earlier versions, no hash tag.
        self._tags = (
            [prefix]
            if shards == 1 and not self.cluster
            else [f"{{{prefix}:{shards}:{s}}}" for s in range(shards)]
        )
        self._generation_key = (prefix, shards)
        # Set by a consumer: its batches and heartbeats also stamp <p>:consumers[consumer_id].
        self.consumer_id = ""
        # redis-py's Script runs EVALSHA and reloads the script after a Redis restart (the
        # apply script is run by ``_eval``, which reloads it on the one node that lost it).
        self._release = client.register_script(RELEASE_LOCK_SCRIPT)

    # --- keys ------------------------------------------------------------------------------
    def key(self, *parts: str, shard: int = 0) -> str:
        """A per-shard key that is not part of a generation (marks, ingest, gen, lock)."""
        return ":".join((self._tags[shard], *parts))

    def aggregate_key(self, *parts: str, shard: int = 0, generation: int | None = None) -> str:
        """A key of a generation's aggregates (the live generation unless given)."""
        gen = self.generations()[shard] if generation is None else generation
        base = self._tags[shard] if gen == 0 else f"{self._tags[shard]}:g{gen}"
        return ":".join((base, *parts))

    def shared_key(self, *parts: str) -> str:
        """A key outside every shard (read and written without scripts)."""
        return ":".join((self.prefix, *parts))

    def shard_of(self, value: str) -> int:
        return shard_of(value, self.shards)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- generations -----------------------------------------------------------------------
    def generations(self) -> list[int]:
        """Each shard's live generation as this process last saw it.

        Never read on its own: every read pipeline carries a GET of the generation and every
        script checks it, so a switch by ``rebuild_stats`` is noticed on the next call at no
        extra round trip (a first guess of 0 is corrected the same way).
        """
        return _GENERATIONS.setdefault(self._generation_key, [0] * self.shards)

    def _saw_generation(self, shard: int, generation: int) -> None:
        self.generations()[shard] = generation

    def _read(self, shards: Sequence[int], build: Callable[[Any], None]) -> list[Any]:
        """Run ``build``'s commands in one pipelined round trip together with a check of the
        generation of ``shards``; when a rebuild switched it meanwhile, read again."""
        for _attempt in range(3):
            generations = self.generations()
            pipe = self.client.pipeline(transaction=False)
            for shard in shards:
                pipe.get(self.key("gen", shard=shard))
            build(pipe)
            results = pipe.execute()
            seen = [_int(value) for value in results[: len(shards)]]
            if all(seen[i] == generations[s] for i, s in enumerate(shards)):
                break
            for i, shard in enumerate(shards):
                self._saw_generation(shard, seen[i])
        return results[len(shards) :]

    # --- writes ----------------------------------------------------------------------------
    @_unavailable_on_redis_error
    def apply_batch(
        self,
        orders: Sequence[PendingOrder],
        rejections: Mapping[str, Sequence[str]] | None = None,
        received: int | None = None,
    ) -> BatchApplied:
        """Apply a batch: one atomic script call per shard it touches.

        ``rejections`` maps the SQS message id of each rejected message to its reason codes
        (each message is counted once however often it comes); ``received`` is the number of
        SQS messages the batch came from (default: orders + rejections). Every order's
        aggregates change together or not at all; with several shards the batch as a whole
        is not atomic (a failure may leave some shards applied: retrying the batch is safe,
        the marks make those orders duplicates).
        """
        rejections = rejections or {}
        if not orders and not rejections and not received:
            return BatchApplied([], 0)
        statuses: list[ApplyStatus] = [ApplyStatus.DUPLICATE] * len(orders)
        counted = 0
        pending = self._plan(orders, rejections, received)
        for _attempt in range(3):
            moved = []
            for shard, reply in zip(pending, self._run_scripts(pending.values()), strict=True):
                code = int(reply[0])
                if code == 1:
                    raise RebuildInProgressError("a rebuild of the aggregates is in progress")
                if code == 3:
                    raise StoreCommandError(
                        f"these aggregates were moved to another shard layout ({_text(reply[1])}"
                        f"); this process has REDIS_SHARDS={self.shards}: restart it with the "
                        "new setting"
                    )
                if code == 2:  # a rebuild switched this shard's generation meanwhile
                    self._saw_generation(shard, _int(reply[1]))
                    moved.append(shard)
                    continue
                for position, status in zip(pending[shard].orders, reply[1:-1], strict=True):
                    statuses[position] = ApplyStatus(int(status))
                counted += int(reply[-1])
            if not moved:
                return BatchApplied(statuses, counted)
            replanned = self._plan(orders, rejections, received)
            pending = {shard: replanned[shard] for shard in moved}
        raise StoreUnavailableError("the aggregates' generation keeps moving; retrying later")

    def _plan(
        self,
        orders: Sequence[PendingOrder],
        rejections: Mapping[str, Sequence[str]],
        received: int | None,
    ) -> dict[int, _ShardWork]:
        generations = self.generations()
        now = self._now_ms()
        oldest = 0
        if self.dedup_ttl > 0:
            ttl_ms = self.dedup_ttl * 1000
            oldest = now - ttl_ms + min(CLOCK_MARGIN // timedelta(milliseconds=1), ttl_ms // 4)
        work: dict[int, _ShardWork] = {}
        for position, pending in enumerate(orders):
            order = pending.order
            s = self.shard_of(order.user_id)
            shard = work.setdefault(s, _ShardWork())
            shard.orders.append(position)
            shard.received += 1
            shard.keys += [
                self.aggregate_key("user", order.user_id, shard=s, generation=generations[s]),
                self.key("seen", order.order_id, shard=s),
            ]
            first = pending.first_recorded_at
            shard.args += [
                order.user_id,
                order.value_cents,
                epoch_ms(order.occurred_at),
                order.day.isoformat(),
                order.fingerprint,
                getattr(order, "legacy_fingerprint", order.fingerprint),
                epoch_ms(first) if first is not None else 0,
            ]
        for message_id in rejections:
            shard = work.setdefault(self.shard_of(message_id), _ShardWork())
            shard.received += 1
            shard.rejects.append(message_id)
        if received is not None and received != len(orders) + len(rejections):
            # Not one message per order and reject (tests, benchmarks): count it on one shard.
            for shard in work.values():
                shard.received = 0
            work.setdefault(next(iter(work), 0), _ShardWork()).received = received
        for s, shard in work.items():
            gen = generations[s]
            head = [
                self.key("gen", shard=s),
                self.key("lock", shard=s),
                self.aggregate_key("global", shard=s, generation=gen),
                self.aggregate_key("days", shard=s, generation=gen),
                self.aggregate_key("rank", "spend", shard=s, generation=gen),
                self.aggregate_key("rank", "orders", shard=s, generation=gen),
                self.key("ingest", shard=s),
            ]
            shard.keys = (
                head + shard.keys + [self.key("rejected", m, shard=s) for m in shard.rejects]
            )
            shard.args = [
                gen, self.dedup_ttl, now, shard.received, oldest, len(shard.orders),
                *shard.args, *(",".join(rejections[m]) for m in shard.rejects),
            ]  # fmt: skip
        return work

    def _run_scripts(self, work: Iterable[_ShardWork]) -> list[Any]:
        """One script call per shard, together with this consumer's heartbeat, in one
        pipelined round trip (on a cluster one per node, sent to all nodes at once)."""
        calls = list(work)
        if len(calls) == 1 and not self.consumer_id:
            return [self._eval(calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            # EVALSHA through execute_command: redis-py's cluster pipeline refuses pipe.evalsha.
            # Naming the node saves the COMMAND GETKEYS round trip it would make to route it
            # (measured: 1.07 -> 0.64 ms of CPU per batch on 8 shards); on a redirect redis-py
            # routes the retry itself.
            node = (
                {"target_nodes": self.client.get_node_from_key(call.keys[0])}
                if self.cluster
                else {}
            )
            pipe.execute_command(
                "EVALSHA", APPLY_SHA, len(call.keys), *call.keys, *call.args, **node
            )
        if self.consumer_id:
            pipe.hset(self.shared_key("consumers"), self.consumer_id, self._now_ms())
        results = pipe.execute(raise_on_error=False)
        for i, call in enumerate(calls):
            if isinstance(results[i], redis.exceptions.NoScriptError):
                results[i] = self._eval(call)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results[: len(calls)]

    def _eval(self, call: _ShardWork) -> Any:
        """EVALSHA; when the server lost the script (a restart), load it there and run again.

        On a cluster the script is loaded on the one primary that owns the call's slot: a
        reload on every primary (what redis-py does) would fail while another one is down.
        """
        args = (APPLY_SHA, len(call.keys), *call.keys, *call.args)
        try:
            return self.client.evalsha(*args)
        except redis.exceptions.NoScriptError:
            if self.cluster:
                node = self.client.get_node_from_key(call.keys[0])
                self.client.execute_command("SCRIPT LOAD", APPLY_SCRIPT, target_nodes=node)
            else:
                self.client.script_load(APPLY_SCRIPT)
            return self.client.evalsha(*args)

    def apply_orders(
        self, orders: Sequence[Order], received: int | None = None
    ) -> list[ApplyStatus]:
        """Apply orders recorded just now (tests, benchmarks); see ``apply_batch``."""
        return self.apply_batch([PendingOrder(o) for o in orders], received=received).statuses

    def record_rejections(self, rejections: Mapping[str, Sequence[str]]) -> int:
        """Count rejected messages (SQS message id -> reason codes) once each; see
        ``apply_batch``. Returns how many were counted now."""
        return self.apply_batch([], rejections, received=0).rejections_counted

    @_unavailable_on_redis_error
    def heartbeat(self) -> None:
        """A sign of life from an idle consumer (every batch stamps its shards as well).

        A write, so it doubles as the consumer's Redis probe: a read-only replica answers
        PING but refuses this.
        """
        now = self._now_ms()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key("ingest"), "heartbeat_ms", now)
        if self.consumer_id:
            pipe.hset(self.shared_key("consumers"), self.consumer_id, now)
        pipe.execute()

    @_unavailable_on_redis_error
    def forget_consumer(self) -> None:
        """A consumer that stops cleanly leaves the list; a crashed one stays, and goes stale."""
        if self.consumer_id:
            self.client.hdel(self.shared_key("consumers"), self.consumer_id)

    @_unavailable_on_redis_error
    def consumers(self) -> dict[str, datetime]:
        """Every consumer's last sign of life, oldest first."""
        beats = {
            name.decode(): _ms_to_datetime(value)
            for name, value in self.client.hgetall(self.shared_key("consumers")).items()
        }
        return dict(sorted(beats.items(), key=lambda item: item[1]))

    # --- the server ------------------------------------------------------------------------
    @_unavailable_on_redis_error
    def ping(self) -> float:
        """Round-trip latency to Redis in milliseconds."""
        started = time.perf_counter()
        self.client.ping()
        return (time.perf_counter() - started) * 1000

    def servers(self, max_age: float = 0.0) -> list[ServerInfo]:
        """Version and eviction policy of every primary, from INFO (managed services often
        disable CONFIG); an unreachable one is reported, not raised.

        ``max_age`` > 0 reuses this process's last answer for that many seconds (/metrics
        shows configuration, which does not change between two scrapes).
        """
        if max_age > 0:
            cached = _SERVERS.get(self.prefix)
            now = time.monotonic()
            if cached is None or now - cached[0] > max_age:
                cached = _SERVERS[self.prefix] = (now, self.servers())
            return cached[1]
        if not self.cluster:
            return [self._server_info(self.client, _node_name(self.client))]
        client: RedisCluster = self.client  # type: ignore[assignment]
        return [
            self._server_info(client, node.name, target=node) for node in client.get_primaries()
        ]

    @staticmethod
    def _server_info(client: Any, name: str, target: Any = None) -> ServerInfo:
        try:
            if target is None:
                info = client.info("server") | client.info("memory")
            else:
                info = client.info("server", target_nodes=target) | client.info(
                    "memory", target_nodes=target
                )
        except (redis.RedisError, RedisClusterException) as exc:
            # A server that answers but refuses INFO (an ACL, a renamed command) is reachable;
            # what it did not tell stays unknown.
            reachable = not isinstance(
                exc, redis.ConnectionError | redis.TimeoutError | RedisClusterException
            ) or isinstance(exc, _PERMANENT)
            return ServerInfo(name, reachable=reachable, error=f"{type(exc).__name__}: {exc}")
        redis_version = str(info["redis_version"]) if "redis_version" in info else None
        if "valkey_version" in info:  # Valkey also reports the Redis version it matches
            version = f"valkey {info['valkey_version']}"
        else:
            version = f"redis {redis_version}" if redis_version else None
        policy = info.get("maxmemory_policy")
        return ServerInfo(
            name,
            reachable=True,
            version=version,
            redis_version=redis_version,
            eviction_policy=str(policy) if policy is not None else None,
        )

    # --- the layout (how many shards the aggregates are written for) ------------------------
    @_unavailable_on_redis_error
    def recorded_layout(self) -> int | None:
        value = self.client.get(self.shared_key("layout"))
        return int(value) if value is not None else None

    @_unavailable_on_redis_error
    def claim_layout(self) -> int:
        """Record this store's shard count when none is recorded; returns the recorded one.

        A consumer started with another ``REDIS_SHARDS`` than the aggregates were built for
        must not write beside them (``rebuild_stats`` moves them to a new layout).
        """
        self.client.set(self.shared_key("layout"), self.shards, nx=True)
        return _int(self.client.get(self.shared_key("layout")))

    # --- reads (each one round trip) -------------------------------------------------------
    @_unavailable_on_redis_error
    def user_stats(self, user_id: str) -> UserStats | None:
        shard = self.shard_of(user_id)
        (row,) = self._read(
            [shard],
            lambda pipe: pipe.hmget(
                self.aggregate_key("user", user_id, shard=shard), "orders", "spend", "first", "last"
            ),
        )
        return _user_from_row(user_id, row)

    def _all(self) -> range:
        return range(self.shards)

    def _queue_globals(self, pipe: Any) -> None:
        for shard in self._all():
            pipe.hmget(self.aggregate_key("global", shard=shard), "orders", "revenue", "users")

    def _sum_globals(self, rows: Iterable[Sequence[Any]]) -> GlobalStats:
        orders = revenue = users = 0
        for o, r, u in rows:
            orders, revenue, users = orders + _int(o), revenue + _int(r), users + _int(u)
        return GlobalStats(orders, revenue, users)

    @_unavailable_on_redis_error
    def global_stats(self) -> GlobalStats:
        return self._sum_globals(self._read(self._all(), self._queue_globals))

    def _ranking(self, name: str, limit: int) -> list[Ranked]:
        def build(pipe: Any) -> None:
            for shard in self._all():
                pipe.zrange(
                    self.aggregate_key("rank", name, shard=shard),
                    0,
                    limit - 1,
                    withscores=True,
                    score_cast_func=_score_to_int,
                )

        # Each shard's top N, merged the way one ZRANGE orders: score, then member bytes.
        rows = sorted(
            (row for shard_rows in self._read(self._all(), build) for row in shard_rows),
            key=lambda row: (row[1], row[0]),
        )[:limit]
        return [
            Ranked(rank=i, user_id=member.decode(), value=-score)
            for i, (member, score) in enumerate(rows, start=1)
        ]

    @_unavailable_on_redis_error
    def top_spenders(self, limit: int) -> list[Ranked]:
        return self._ranking("spend", limit)

    @_unavailable_on_redis_error
    def top_buyers(self, limit: int) -> list[Ranked]:
        return self._ranking("orders", limit)

    @_unavailable_on_redis_error
    def by_date(self, start: date, end: date) -> list[DayStats]:
        """Every day from start to end inclusive (zeros included): one HMGET per shard."""
        days = list(days_between(start, end))
        fields: list[str] = []
        for day in days:
            iso = day.isoformat()
            fields += [f"{iso}:orders", f"{iso}:revenue"]

        def build(pipe: Any) -> None:
            for shard in self._all():
                pipe.hmget(self.aggregate_key("days", shard=shard), fields)

        per_shard = self._read(self._all(), build)
        if len(per_shard) == 1:
            values = [_int(v) for v in per_shard[0]]
        else:
            values = [sum(_int(v) for v in column) for column in zip(*per_shard, strict=True)]
        return [DayStats(day, values[2 * i], values[2 * i + 1]) for i, day in enumerate(days)]

    def _queue_ingest(self, pipe: Any) -> None:
        for shard in self._all():
            pipe.hgetall(self.key("ingest", shard=shard))

    @_unavailable_on_redis_error
    def ingestion(self) -> IngestionStats:
        pipe = self.client.pipeline(transaction=False)
        self._queue_ingest(pipe)
        return _ingestion_from_hashes(pipe.execute())

    @_unavailable_on_redis_error
    def overview(self) -> tuple[GlobalStats, IngestionStats]:
        """Global totals and ingestion counters read together for /metrics, in one round trip
        (on one shard of one node a MULTI, so a scrape never pairs totals from one batch with
        counters from the next)."""

        def build(pipe: Any) -> None:
            self._queue_globals(pipe)
            self._queue_ingest(pipe)

        results = self._read(self._all(), build)
        n = self.shards
        return self._sum_globals(results[:n]), _ingestion_from_hashes(results[n:])

    # --- rebuild and reconcile (rebuild_stats, reconcile_stats) -----------------------------
    @_unavailable_on_redis_error
    def acquire_rebuild_lock(self, token: str, ttl_ms: int) -> bool:
        """Hold every shard's lock (consumers then keep their batches); False when another
        rebuild holds one. A layout retired by an earlier rebuild is taken over."""
        taken = []
        for shard in self._all():
            key = self.key("lock", shard=shard)
            if not self.client.set(key, token, nx=True, px=ttl_ms):
                held = self.client.get(key)
                if held is None or not _text(held).startswith(RETIRED):
                    self._release_locks(token, taken)
                    return False
                self.client.set(key, token, px=ttl_ms)
            taken.append(shard)
        return True

    @_unavailable_on_redis_error
    def retire(self, successor_shards: int) -> None:
        """This layout's aggregates moved elsewhere: a lock that never expires tells consumers
        still configured for it to stop instead of writing beside the new layout."""
        for shard in self._all():
            self.client.set(self.key("lock", shard=shard), f"{RETIRED}{successor_shards}")

    @_unavailable_on_redis_error
    def live_generations(self) -> list[int]:
        """Each shard's live generation, read now (rebuild_stats)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.get(self.key("gen", shard=shard))
        found = [_int(value) for value in pipe.execute()]
        _GENERATIONS[self._generation_key] = list(found)
        return found

    @_unavailable_on_redis_error
    def marks_exist(self, orders: Sequence[Any]) -> list[bool]:
        """Whether each order (order_id, user_id) has its idempotency mark: one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for order in orders:
            pipe.exists(self.key("seen", order.order_id, shard=self.shard_of(order.user_id)))
        return [bool(n) for n in pipe.execute()] if orders else []

    @_unavailable_on_redis_error
    def add_ingestion(self, counters: IngestionStats) -> None:
        """Carry ingestion counters over to this layout (a rebuild into another shard count)."""
        pipe = self.client.pipeline(transaction=False)
        key = self.key("ingest")
        for name in ("received", "applied", "duplicates", "rejected"):
            pipe.hincrby(key, name, getattr(counters, name))
        for code, count in counters.rejected_by_code.items():
            pipe.hincrby(key, f"rejected:{code}", count)
        for name, when in (("last_batch_ms", counters.last_batch_at),
                           ("heartbeat_ms", counters.heartbeat_at)):  # fmt: skip
            if when is not None:
                pipe.hset(key, name, epoch_ms(when))
        pipe.execute()

    @_unavailable_on_redis_error
    def refresh_rebuild_lock(self, token: str, ttl_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.set(self.key("lock", shard=shard), token, xx=True, px=ttl_ms)
        pipe.execute()

    @_unavailable_on_redis_error
    def release_rebuild_lock(self, token: str) -> None:
        self._release_locks(token, self._all())

    def _release_locks(self, token: str, shards: Iterable[int]) -> None:
        for shard in shards:
            self._release(keys=[self.key("lock", shard=shard)], args=[token])

    @_unavailable_on_redis_error
    def rebuild_in_progress(self) -> bool:
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.exists(self.key("lock", shard=shard))
        return any(pipe.execute())

    def writer(self, generation: int | None, chunk: int = 5_000) -> GenerationWriter:
        """Pipelined writes into ``generation`` (None: each shard's live one, for a repair)."""
        return GenerationWriter(self, generation, chunk)

    @_unavailable_on_redis_error
    def switch_generation(self, generation: int) -> None:
        """Make ``generation`` live on every shard: one MULTI on a single node (all shards at
        once); on a cluster one command per shard (each shard switches atomically)."""
        pipe = self.client.pipeline(transaction=not self.cluster)
        for shard in self._all():
            pipe.set(self.key("gen", shard=shard), generation)
        pipe.set(self.shared_key("layout"), self.shards)
        pipe.execute()
        _GENERATIONS[self._generation_key] = [generation] * self.shards

    @_unavailable_on_redis_error
    def drop_generation(self, generation: int, batch: int = 1_000) -> int:
        """Remove a generation's aggregates (after a switch); returns how many keys went."""
        removed = 0
        for shard in self._all():
            fixed = [
                self.aggregate_key(*parts, shard=shard, generation=generation)
                for parts in (("global",), ("days",), ("rank", "spend"), ("rank", "orders"))
            ]
            removed += int(self.client.unlink(*fixed))
            head = self.aggregate_key("user", "", shard=shard, generation=generation)
            removed += self._unlink_matching(_glob_escape(head) + "*", batch)
        return removed

    @_unavailable_on_redis_error
    def drop_shard_keys(self, batch: int = 1_000) -> int:
        """Remove every key of this layout's shards (after a rebuild moved the aggregates to
        another shard count): aggregates, marks, counters, generations. The keys outside the
        shards (consumers, layout, reconcile) stay, also where a one-shard layout's tag is
        the bare prefix they share."""
        shared = {self.shared_key(name).encode() for name in SHARED_KEYS}
        return sum(
            self._unlink_matching(_glob_escape(self._tags[shard]) + ":*", batch, keep=shared)
            for shard in self._all()
        )

    def _unlink_matching(self, pattern: str, batch: int, keep: set[bytes] = frozenset()) -> int:
        """UNLINK every key SCAN finds for ``pattern`` (but ``keep``), ``batch`` per trip."""
        removed = 0
        keys: list[bytes] = []
        for key in self._scan(pattern):
            if key in keep:
                continue
            keys.append(key)
            if len(keys) >= batch:
                removed += self._unlink(keys)
                keys = []
        return removed + self._unlink(keys)

    def _scan(self, pattern: str) -> Iterator[bytes]:
        if self.cluster:
            client: RedisCluster = self.client  # type: ignore[assignment]
            yield from client.scan_iter(
                match=pattern, count=1000, target_nodes=RedisCluster.PRIMARIES
            )
        else:
            yield from self.client.scan_iter(match=pattern, count=1000)

    def _unlink(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.unlink(key)
        return sum(int(n) for n in pipe.execute())

    @_unavailable_on_redis_error
    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserStats]:
        """Many users in one pipelined round trip (reconcile_stats)."""
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hmget(
                self.aggregate_key("user", user_id, shard=self.shard_of(user_id)),
                "orders", "spend", "first", "last",
            )  # fmt: skip
        rows = zip(user_ids, pipe.execute(), strict=True)
        return {u: user for u, row in rows if (user := _user_from_row(u, row)) is not None}

    @_unavailable_on_redis_error
    def scan_user_ids(self) -> Iterator[str]:
        """Every user that has a hash in the live generation (reconcile: users the ledger
        does not know)."""
        for shard in self._all():
            head = self.aggregate_key("user", "", shard=shard)
            for key in self._scan(_glob_escape(head) + "*"):
                yield key.decode()[len(head) :]

    @_unavailable_on_redis_error
    def ranking_entries(self, name: str) -> Iterator[tuple[str, int]]:
        """Every (user_id, value) of a ranking, shard by shard (reconcile)."""
        for shard in self._all():
            key = self.aggregate_key("rank", name, shard=shard)
            for member, score in self.client.zscan_iter(key, count=1000):
                yield member.decode(), -_score_to_int(score)

    @_unavailable_on_redis_error
    def all_days(self) -> dict[date, tuple[int, int]]:
        """Every day bucket (orders, revenue) summed over the shards (reconcile)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.hgetall(self.aggregate_key("days", shard=shard))
        totals: dict[date, list[int]] = {}
        for hash_ in pipe.execute():
            for name, value in hash_.items():
                iso, kind = name.decode().rsplit(":", 1)
                bucket = totals.setdefault(date.fromisoformat(iso), [0, 0])
                bucket[0 if kind == "orders" else 1] += int(value)
        return {day: (o, r) for day, (o, r) in sorted(totals.items())}

    @_unavailable_on_redis_error
    def save_reconcile_report(self, report: Mapping[str, Any]) -> None:
        self.client.set(self.shared_key("reconcile"), json.dumps(report, sort_keys=True))

    @_unavailable_on_redis_error
    def reconcile_report(self) -> dict[str, Any] | None:
        raw = self.client.get(self.shared_key("reconcile"))
        return json.loads(raw) if raw else None


class GenerationWriter:
    """Writes derived aggregates into one generation with pipelined commands, ``chunk``
    commands per round trip (rebuild_stats, reconcile_stats --repair). Nothing is live until
    ``AggregateStore.switch_generation`` (a repair writes into the live generation)."""

    def __init__(self, store: AggregateStore, generation: int | None, chunk: int) -> None:
        self.store = store
        self.generation = generation
        self.chunk = chunk
        self._pipe = store.client.pipeline(transaction=False)
        self._queued = 0
        self._globals = [[0, 0, 0] for _ in range(store.shards)]

    def _key(self, *parts: str, shard: int) -> str:
        return self.store.aggregate_key(*parts, shard=shard, generation=self.generation)

    def _queued_one(self, n: int = 1) -> None:
        self._queued += n
        if self._queued >= self.chunk:
            self.flush()

    @_unavailable_on_redis_error
    def flush(self) -> None:
        if self._queued:
            self._pipe.execute()
            self._queued = 0

    def user(
        self, user_id: str, orders: int, spend_cents: int, first_ms: int, last_ms: int
    ) -> None:
        shard = self.store.shard_of(user_id)
        key = self._key("user", user_id, shard=shard)
        self._pipe.delete(key)
        self._pipe.hset(
            key,
            mapping={"orders": orders, "spend": spend_cents, "first": first_ms, "last": last_ms},
        )
        self._pipe.zadd(self._key("rank", "spend", shard=shard), {user_id: -spend_cents})
        self._pipe.zadd(self._key("rank", "orders", shard=shard), {user_id: -orders})
        totals = self._globals[shard]
        totals[0] += orders
        totals[1] += spend_cents
        totals[2] += 1
        self._queued_one(4)

    def remove_user(self, user_id: str) -> None:
        """A user Redis has and the ledger does not (repair)."""
        shard = self.store.shard_of(user_id)
        self._pipe.delete(self._key("user", user_id, shard=shard))
        self._pipe.zrem(self._key("rank", "spend", shard=shard), user_id)
        self._pipe.zrem(self._key("rank", "orders", shard=shard), user_id)
        self._queued_one(3)

    def day(self, shard: int, day: date, orders: int, revenue_cents: int) -> None:
        iso = day.isoformat()
        self._pipe.hset(
            self._key("days", shard=shard),
            mapping={f"{iso}:orders": orders, f"{iso}:revenue": revenue_cents},
        )
        self._queued_one()

    def replace_days(self, shard: int, days: Sequence[tuple[date, int, int]]) -> None:
        """A shard's whole days hash (repair): (day, orders, revenue cents) each."""
        key = self._key("days", shard=shard)
        self._pipe.delete(key)
        self._queued_one()
        for day, orders, revenue in days:
            self.day(shard, day, orders, revenue)

    def globals_from_users(self) -> None:
        """The global hashes, summed from the users written."""
        for shard, (orders, revenue, users) in enumerate(self._globals):
            self.set_globals(shard, orders, revenue, users)

    def set_globals(self, shard: int, orders: int, revenue: int, users: int) -> None:
        key = self._key("global", shard=shard)
        self._pipe.delete(key)
        self._pipe.hset(key, mapping={"orders": orders, "revenue": revenue, "users": users})
        self._queued_one(2)

    def mark(self, order: Any) -> None:
        """A recorded order's idempotency mark (``order_id``, ``user_id``, ``fingerprint``,
        ``received_at``), expiring when a mark written at its first recording would; never
        replaces one that is there."""
        key = self.store.key("seen", order.order_id, shard=self.store.shard_of(order.user_id))
        ttl = self.store.dedup_ttl
        if ttl > 0:
            expires = epoch_ms(order.received_at + timedelta(seconds=ttl))
            self._pipe.set(key, order.fingerprint, nx=True, pxat=expires)
        else:
            self._pipe.set(key, order.fingerprint, nx=True)
        self._queued_one()

    def close(self) -> None:
        self.flush()


def _user_from_row(user_id: str, row: Sequence[Any]) -> UserStats | None:
    """A user hash read as ``HMGET orders spend first last``; None when there is none."""
    orders, spend, first, last = row
    if orders is None:
        return None
    return UserStats(
        user_id=user_id,
        order_count=int(orders),
        total_spend_cents=_int(spend),
        first_order_at=_ms_to_datetime(first),
        last_order_at=_ms_to_datetime(last),
    )


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def _node_name(client: Any) -> str:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _ingestion_from_hashes(hashes: Iterable[Mapping[bytes, bytes]]) -> IngestionStats:
    counters: dict[str, int] = {}
    latest: dict[str, int] = {}
    for hash_ in hashes:
        for key, value in hash_.items():
            name = key.decode()
            if name.endswith("_ms"):
                latest[name] = max(latest.get(name, 0), int(value))
            else:
                counters[name] = counters.get(name, 0) + int(value)
    by_code = {
        name.split(":", 1)[1]: value
        for name, value in counters.items()
        if name.startswith("rejected:")
    }
    return IngestionStats(
        received=counters.get("received", 0),
        applied=counters.get("applied", 0),
        duplicates=counters.get("duplicates", 0),
        rejected=counters.get("rejected", 0),
        rejected_by_code=dict(sorted(by_code.items())),
        last_batch_at=_ms_to_datetime(latest.get("last_batch_ms")),
        heartbeat_at=_ms_to_datetime(latest.get("heartbeat_ms")),
    )


def redis_client() -> redis.Redis:
    """The app's one raw Redis client, from django-redis's shared connection pool."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def get_store() -> AggregateStore:
    """The app's store. A cluster client finds its nodes when it is built: a node that does not
    answer then is an outage (``StoreUnavailableError``), as it would be later."""
    try:
        client = redis_client()
    except (redis.RedisError, RedisClusterException) as exc:
        kind = StoreUnavailableError if _is_transient(exc) else StoreCommandError
        raise kind(f"{type(exc).__name__}: {exc}") from exc
    return AggregateStore(
        client,
        prefix=settings.REDIS_KEY_PREFIX,
        dedup_ttl=settings.ORDER_DEDUP_TTL,
        shards=getattr(settings, "REDIS_SHARDS", 1),
    )
