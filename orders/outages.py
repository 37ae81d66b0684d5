"""What the consumer does when Redis, the database or SQS fails (contract §3).

Every error the loop sees is sorted here into one of two kinds. A *transient* one (a
dependency down or refusing work for a while) keeps the batch in hand: nothing is deleted,
no new batch is received, the batch is retried after a growing backoff, so an outage costs
no receives and pushes nothing towards the dead-letter queue. A *permanent* one (wrong
credentials, a missing queue, a key of the wrong type, a Redis too old) stops the consumer
with exit 1, because retrying would only cycle every message into the dead-letter queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from django.db import DatabaseError, InterfaceError, InternalError, OperationalError

from orders import sqs
from stats.store import RebuildInProgressError, StoreCommandError, StoreUnavailableError

logger = logging.getLogger("orders.consumer")

REDIS = "Redis"
DATABASE = "database"
SQS = "SQS"
REBUILD = "rebuild"  # rebuild_stats holds the aggregates: not a failure, a short wait


@dataclass(frozen=True, slots=True)
class Failure:
    dependency: str
    transient: bool


def classify(exc: BaseException) -> Failure | None:
    """Which dependency ``exc`` comes from and whether waiting cures it; None for a bug."""
    if isinstance(exc, RebuildInProgressError):
        return Failure(REBUILD, True)
    if isinstance(exc, StoreCommandError):
        return Failure(REDIS, False)
    if isinstance(exc, StoreUnavailableError):
        return Failure(REDIS, True)
    if isinstance(exc, DatabaseError | InterfaceError):
        # Connection lost, server shutting down, read-only after a failover, "database is
        # locked" (SQLite), serialization failure: transient. A missing table (migrations not
        # run), a missing privilege or a bad value: permanent.
        return Failure(DATABASE, isinstance(exc, OperationalError | InterfaceError | InternalError))
    if isinstance(exc, BotoCoreError | ClientError):
        return Failure(SQS, sqs.is_transient(exc))
    return None


@dataclass
class _Outage:
    since: float
    delay: float


class Outages:
    """Which dependencies are down: one ERROR when an outage starts, one INFO when it ends,
    and a backoff that keeps growing in between.

    A dependency that answers a probe has not necessarily recovered: Redis can answer while
    refusing writes (a replica during a failover), a database can accept connections and
    refuse INSERTs. So only real work that used it ends an outage; until then each failure,
    of a probe or of the retried batch, doubles the wait (capped) and logs nothing new.
    """

    def __init__(self, first_delay: float = 0.5, max_delay: float = 30.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._down: dict[str, _Outage] = {}
        self._lock = threading.Lock()

    def _limits(self, name: str) -> tuple[float, float]:
        if name == REBUILD:  # a rebuild lasts seconds: look again soon
            return min(0.2, self.max_delay), min(1.0, self.max_delay)
        return min(self.first_delay, self.max_delay), self.max_delay

    def failed(self, name: str, exc: BaseException, now: float) -> float:
        """Note a failure of ``name``; returns how long to wait before trying it again."""
        first, cap = self._limits(name)
        with self._lock:
            outage = self._down.get(name)
            if outage is not None:
                outage.delay = min(outage.delay * 2, cap)
                return outage.delay
            outage = self._down[name] = _Outage(now, first)
        if name == REBUILD:
            logger.info("a rebuild of the aggregates is running; keeping the batch in hand")
        else:
            logger.error(
                "%s unavailable (%s); keeping the batch in hand (nothing deleted, nothing new "
                "received), backing off",
                name,
                exc,
            )
        return outage.delay

    def recovered(self, names: Iterable[str], now: float) -> None:
        """Work that used ``names`` has just succeeded: their outages, if any, are over."""
        if not self._down:  # the usual case, checked without the lock
            return
        with self._lock:
            ended = [(name, self._down.pop(name).since) for name in names if name in self._down]
        for name, since in ended:
            if name == REBUILD:
                logger.info("rebuild finished after %.1fs; resuming", now - since)
            else:
                logger.info("%s is back after %.1fs; resuming", name, now - since)
