"""What the consumer does when Redis, the database or SQS fails.

Every error the loop sees is sorted here into one of two kinds. A *transient* one (a
dependency down or refusing work for a while) keeps the batch in hand: nothing is deleted,
no new batch is received, the batch is retried after a growing backoff, so an outage costs
no receives and pushes nothing towards the dead-letter queue. A *permanent* one (wrong
credentials, a missing queue, a key of the wrong type, a Redis too old) stops the consumer
with exit 1, because retrying would only cycle every message into the dead-letter queue.
Start-up waits for a dependency that is not up yet with the same backoff and the same log
lines (``Outages.retry``).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from django.db import DatabaseError, InterfaceError, InternalError, OperationalError

from orders import sqs
from stats.store import RebuildInProgressError, StoreCommandError, StoreUnavailableError

logger = logging.getLogger("orders.consumer")

T = TypeVar("T")


class Dependency(enum.Enum):
    """What a failure comes from; the value is how log lines name it."""

    REDIS = "Redis"
    DATABASE = "database"
    SQS = "SQS"
    REBUILD = "rebuild"  # rebuild_stats holds the aggregates: not a failure, a short wait

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Failure:
    dependency: Dependency
    transient: bool


def classify(exc: BaseException) -> Failure | None:
    """Which dependency ``exc`` comes from and whether waiting cures it; None for a bug."""
    if isinstance(exc, RebuildInProgressError):
        return Failure(Dependency.REBUILD, True)
    if isinstance(exc, StoreCommandError):
        return Failure(Dependency.REDIS, False)
    if isinstance(exc, StoreUnavailableError):
        return Failure(Dependency.REDIS, True)
    if isinstance(exc, DatabaseError | InterfaceError):
        # Connection lost, server shutting down, read-only after a failover, "database is
        # locked" (SQLite), serialization failure: transient. A missing table (migrations not
        # run), a missing privilege or a bad value: permanent.
        return Failure(
            Dependency.DATABASE, isinstance(exc, OperationalError | InterfaceError | InternalError)
        )
    if isinstance(exc, BotoCoreError | ClientError):
        return Failure(Dependency.SQS, sqs.is_transient(exc))
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
    of a probe or of the retried work, doubles the wait (capped) and logs nothing new.
    """

    def __init__(self, first_delay: float = 0.5, max_delay: float = 30.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._down: dict[Dependency, _Outage] = {}
        self._lock = threading.Lock()

    def _limits(self, dependency: Dependency) -> tuple[float, float]:
        if dependency is Dependency.REBUILD:  # a rebuild lasts seconds: look again soon
            return min(0.2, self.max_delay), min(1.0, self.max_delay)
        return min(self.first_delay, self.max_delay), self.max_delay

    def failed(self, dependency: Dependency, exc: BaseException, now: float) -> float:
        """Note a failure of ``dependency``; returns how long to wait before trying again."""
        first, cap = self._limits(dependency)
        with self._lock:
            outage = self._down.get(dependency)
            if outage is not None:
                outage.delay = min(outage.delay * 2, cap)
                return outage.delay
            outage = self._down[dependency] = _Outage(now, first)
        if dependency is Dependency.REBUILD:
            logger.info(
                "a rebuild of the aggregates is running; waiting for it (a batch in hand stays "
                "in hand)"
            )
        else:
            logger.error(
                "%s unavailable (%s); backing off (a batch in hand stays in hand: nothing "
                "deleted, nothing new received)",
                dependency,
                exc,
            )
        return outage.delay

    def recovered(self, dependencies: Iterable[Dependency], now: float) -> None:
        """Work that used ``dependencies`` has just succeeded: their outages, if any, are over."""
        if not self._down:  # the usual case, checked without the lock
            return
        with self._lock:
            ended = [(d, self._down.pop(d).since) for d in dependencies if d in self._down]
        for dependency, since in ended:
            if dependency is Dependency.REBUILD:
                logger.info("rebuild finished after %.1fs; resuming", now - since)
            else:
                logger.info("%s is back after %.1fs; resuming", dependency, now - since)

    def wait_out(
        self,
        dependency: Dependency,
        exc: BaseException,
        cancel: threading.Event,
        clock: Callable[[], float],
        probe: Callable[[Dependency], object] | None = None,
    ) -> None:
        """Note the failure, then wait until ``probe(dependency)`` passes, the wait growing
        with each failed probe; without a probe, wait once. Returns early when ``cancel`` is
        set. A probe's error that is no dependency's failure (a bug) is raised."""
        delay = self.failed(dependency, exc, clock())
        while not cancel.wait(delay):
            if probe is None:
                return
            try:
                probe(dependency)
            except Exception as again:
                if classify(again) is None:
                    raise
                delay = self.failed(dependency, again, clock())
                continue
            return

    def retry(
        self,
        work: Callable[[], T],
        cancel: threading.Event,
        clock: Callable[[], float],
        probe: Callable[[Dependency], object] | None = None,
    ) -> T | None:
        """``work()``'s result, each transient failure waited out (``wait_out``) and the work
        tried again, until it succeeds: that success ends the outages it went through. None
        when ``cancel`` is set first. A failure waiting cannot cure, or an error that is no
        dependency's failure, is raised at once."""
        failed: set[Dependency] = set()
        while True:
            try:
                result = work()
            except Exception as exc:
                failure = classify(exc)
                if failure is None or not failure.transient:
                    raise
                failed.add(failure.dependency)
                self.wait_out(failure.dependency, exc, cancel, clock, probe)
                if cancel.is_set():
                    return None
                continue
            self.recovered(failed, clock())
            return result
