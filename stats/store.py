"""The aggregate store: every Redis key orderpipe uses, the apply script, and all reads.

Nobody else builds Redis keys. Money is integer cents in Redis (HINCRBY, exact); it becomes
a ``Decimal`` only on the way out (``cents_to_decimal``). Key layout under ``<prefix>``:

==============================  ======  ==============================================
key                             type    content
==============================  ======  ==============================================
``<p>:user:<user_id>``          hash    orders, spend (cents), first, last (epoch ms)
``<p>:global``                  hash    orders, revenue (cents), users
``<p>:rank:spend``              zset    user_id scored by -spend (cents)
``<p>:rank:orders``             zset    user_id scored by -order count
``<p>:days``                    hash    ``YYYY-MM-DD:orders``, ``YYYY-MM-DD:revenue`` (cents)
``<p>:seen:<order_id>``         string  payload fingerprint; expires after ORDER_DEDUP_TTL
``<p>:rejected:<message_id>``   string  "1": this rejected message is counted; same expiry
``<p>:consumers``               hash    consumer id (host:pid) -> last sign of life (ms)
``<p>:ingest``                  hash    received, applied, duplicates, rejected,
                                        ``rejected:<code>``, last_batch_ms, heartbeat_ms
==============================  ======  ==============================================

All days live in one hash so that any date range is a single HMGET, and rankings use
negated scores so that one ZRANGE returns the highest first with ties by user_id ascending.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis
from django.conf import settings

if TYPE_CHECKING:
    from orders.validation import Order

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
APPLY_SCRIPT = (Path(__file__).parent / "lua" / "apply_orders.lua").read_text()
COUNT_REJECTIONS_SCRIPT = (Path(__file__).parent / "lua" / "count_rejections.lua").read_text()

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailableError(Exception):
    """Redis cannot serve right now: unreachable, timing out, loading, read-only (failover).

    Transient: callers back off and retry (the consumer) or answer 503 (the API).
    """


class StoreCommandError(StoreUnavailableError):
    """Redis refused a command (e.g. ``SET NX GET`` on Redis < 7, a Cluster refusing keys built
    inside the script, WRONGTYPE). Retrying cannot help: the consumer stops loudly instead of
    cycling every message towards the dead-letter queue. The API still answers 503."""


# Errors a later retry can cure; every other RedisError is a StoreCommandError.
_TRANSIENT = (
    redis.ConnectionError,  # includes BusyLoadingError (a restart replaying its AOF)
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a failover in progress
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,  # a replica that lost its master
)
# Refusals Redis lifts by itself that redis-py raises as plain ResponseErrors, recognised by
# their error code: BUSY (another client's script is running long), MISCONF (writes refused
# until a failed background save succeeds).
_TRANSIENT_CODES = ("BUSY ", "MISCONF ")


def _is_transient(exc: redis.RedisError) -> bool:
    return isinstance(exc, _TRANSIENT) or str(exc).startswith(_TRANSIENT_CODES)


def _unavailable_on_redis_error(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            kind = StoreUnavailableError if _is_transient(exc) else StoreCommandError
            raise kind(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def cents_to_decimal(cents: int) -> Decimal:
    """Exact money value for output: 29999 -> Decimal('299.99')."""
    return Decimal(cents).scaleb(-2)


def _ms_to_datetime(value: bytes | str | None) -> datetime | None:
    if value is None:
        return None
    return EPOCH + timedelta(milliseconds=int(value))


def _int(value: bytes | str | None) -> int:
    return int(value) if value is not None else 0


def _score_to_int(value: bytes | str | float) -> int:
    # Scores come back as text such as b"-1.5e+15"; Decimal reads any form of it exactly.
    if isinstance(value, bytes):
        value = value.decode()
    return int(Decimal(str(value)))


class ApplyStatus(enum.IntEnum):
    DUPLICATE = 0
    APPLIED = 1
    CONFLICT = 2


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


def days_between(start: date, end: date) -> Iterator[date]:
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


class AggregateStore:
    """Reads and writes the aggregates of one key prefix in one Redis.

    ``client`` is a redis-py client (django-redis's pooled one in the app, fakeredis or a
    test server in tests); ``clock`` returns epoch seconds and is swappable in tests.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "orderpipe",
        dedup_ttl: int = 15 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.dedup_ttl = dedup_ttl
        self.clock = clock
        # Set by a consumer: its batches and heartbeats also stamp <p>:consumers[consumer_id].
        self.consumer_id = ""
        # redis-py's Script runs EVALSHA and reloads the script after a Redis restart.
        self._apply = client.register_script(APPLY_SCRIPT)
        self._count_rejections = client.register_script(COUNT_REJECTIONS_SCRIPT)

    # --- keys ------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- writes ----------------------------------------------------------------------------
    @_unavailable_on_redis_error
    def apply_orders(
        self, orders: Sequence[Order], received: int | None = None
    ) -> list[ApplyStatus]:
        """Apply a batch in one atomic script call; returns one status per order, in order.

        ``received`` is the number of SQS messages the batch came from (defaults to the
        number of orders) and feeds the ingestion counters in the same atomic step.
        """
        args: list[Any] = [
            self.prefix,
            self.dedup_ttl,
            self._now_ms(),
            len(orders) if received is None else received,
            self.consumer_id,
        ]
        for order in orders:
            args += [
                order.order_id,
                order.user_id,
                order.value_cents,
                (order.occurred_at - EPOCH) // _MILLISECOND,
                order.day.isoformat(),
                order.fingerprint,
            ]
        return [ApplyStatus(int(s)) for s in self._apply(args=args)]

    @_unavailable_on_redis_error
    def record_received(self, received: int) -> None:
        """Count a batch that held no valid order (apply_orders counts the rest); it is a
        batch all the same, so ``last_batch_ms`` moves and the consumer does not look stale."""
        if received:
            pipe = self.client.pipeline(transaction=True)
            pipe.hincrby(self.key("ingest"), "received", received)
            now = self._now_ms()
            pipe.hset(self.key("ingest"), mapping={"last_batch_ms": now, "heartbeat_ms": now})
            self._beat(pipe, now)
            pipe.execute()

    @_unavailable_on_redis_error
    def record_rejections(self, rejections: Mapping[str, Sequence[str]]) -> int:
        """Count rejected messages (SQS message id -> reason codes) and their codes, each
        message once however often it is handed in; one script call. Returns how many
        were counted now."""
        if not rejections:
            return 0
        args: list[Any] = [self.prefix, self.dedup_ttl]
        for message_id, codes in rejections.items():
            args += [message_id, ",".join(codes)]
        return int(self._count_rejections(args=args))

    @_unavailable_on_redis_error
    def heartbeat(self) -> None:
        """A sign of life from an idle consumer (every batch stamps it as well)."""
        now = self._now_ms()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key("ingest"), "heartbeat_ms", now)
        self._beat(pipe, now)
        pipe.execute()

    def _beat(self, pipe: Any, now: int) -> None:
        if self.consumer_id:
            pipe.hset(self.key("consumers"), self.consumer_id, now)

    @_unavailable_on_redis_error
    def forget_consumer(self) -> None:
        """A consumer that stops cleanly leaves the list; a crashed one stays, and goes stale."""
        if self.consumer_id:
            self.client.hdel(self.key("consumers"), self.consumer_id)

    @_unavailable_on_redis_error
    def consumers(self) -> dict[str, datetime]:
        """Every consumer's last sign of life, oldest first."""
        beats = {
            name.decode(): _ms_to_datetime(value)
            for name, value in self.client.hgetall(self.key("consumers")).items()
        }
        return dict(sorted(beats.items(), key=lambda item: item[1]))

    # --- reads (each one round trip) -------------------------------------------------------
    @_unavailable_on_redis_error
    def ping(self) -> float:
        """Round-trip latency to Redis in milliseconds."""
        started = time.perf_counter()
        self.client.ping()
        return (time.perf_counter() - started) * 1000

    @_unavailable_on_redis_error
    def user_stats(self, user_id: str) -> UserStats | None:
        orders, spend, first, last = self.client.hmget(
            self.key("user", user_id), "orders", "spend", "first", "last"
        )
        if orders is None:
            return None
        return UserStats(
            user_id=user_id,
            order_count=int(orders),
            total_spend_cents=_int(spend),
            first_order_at=_ms_to_datetime(first),
            last_order_at=_ms_to_datetime(last),
        )

    @_unavailable_on_redis_error
    def global_stats(self) -> GlobalStats:
        orders, revenue, users = self.client.hmget(self.key("global"), "orders", "revenue", "users")
        return GlobalStats(_int(orders), _int(revenue), _int(users))

    def _ranking(self, name: str, limit: int) -> list[Ranked]:
        rows = self.client.zrange(
            self.key("rank", name), 0, limit - 1, withscores=True, score_cast_func=_score_to_int
        )
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
        """Every day from start to end inclusive (zeros included) with one HMGET."""
        days = list(days_between(start, end))
        fields: list[str] = []
        for day in days:
            iso = day.isoformat()
            fields += [f"{iso}:orders", f"{iso}:revenue"]
        values = self.client.hmget(self.key("days"), fields)
        return [
            DayStats(day, _int(values[2 * i]), _int(values[2 * i + 1]))
            for i, day in enumerate(days)
        ]

    @_unavailable_on_redis_error
    def ingestion(self) -> IngestionStats:
        return _ingestion_from_hash(self.client.hgetall(self.key("ingest")))

    @_unavailable_on_redis_error
    def overview(self) -> tuple[GlobalStats, IngestionStats]:
        """Global totals and ingestion counters read together for /metrics.

        One pipelined round trip (MULTI), so a scrape never pairs totals from one batch with
        counters from the next.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(self.key("global"), "orders", "revenue", "users")
        pipe.hgetall(self.key("ingest"))
        (orders, revenue, users), ingest = pipe.execute()
        return GlobalStats(_int(orders), _int(revenue), _int(users)), _ingestion_from_hash(ingest)


def _ingestion_from_hash(hash_: Mapping[bytes, bytes]) -> IngestionStats:
    raw = {k.decode(): v.decode() for k, v in hash_.items()}
    by_code = {
        name.split(":", 1)[1]: int(value)
        for name, value in raw.items()
        if name.startswith("rejected:")
    }
    return IngestionStats(
        received=_int(raw.get("received")),
        applied=_int(raw.get("applied")),
        duplicates=_int(raw.get("duplicates")),
        rejected=_int(raw.get("rejected")),
        rejected_by_code=dict(sorted(by_code.items())),
        last_batch_at=_ms_to_datetime(raw.get("last_batch_ms")),
        heartbeat_at=_ms_to_datetime(raw.get("heartbeat_ms")),
    )


def redis_client() -> redis.Redis:
    """The app's one raw Redis client, from django-redis's shared connection pool."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def get_store() -> AggregateStore:
    return AggregateStore(
        redis_client(), prefix=settings.REDIS_KEY_PREFIX, dedup_ttl=settings.ORDER_DEDUP_TTL
    )
