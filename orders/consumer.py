"""The ingestion loop: receive -> validate -> apply / record -> delete (contract §3).

A message is deleted only after its effect is committed: valid orders in Redis (one script
call per batch, idempotent per order_id), rejected ones in the database. When Redis, the
database or SQS fails, nothing of the batch in hand is deleted; the consumer logs one ERROR
per outage, stops polling (so messages are not burnt towards the DLQ), probes the dependency
with capped exponential backoff, and resumes by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue as stdlib_queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.db import Error as DjangoDatabaseError
from django.db import close_old_connections, connection

from orders.models import RejectedOrder, RejectionRecord
from orders.sqs import SQS_BATCH_LIMIT, OrderQueue, dating_attributes
from orders.validation import Order, Rejection, conflict_rejection, validate_message
from stats.store import AggregateStore, ApplyStatus, StoreCommandError, StoreUnavailableError

logger = logging.getLogger(__name__)

# What a later retry can cure: back off and probe. django.db.Error covers InterfaceError too.
# How long a graceful stop waits for a receive already under way to come back.
STOP_GRACE = 1.0

DEPENDENCY_ERRORS = (StoreUnavailableError, DjangoDatabaseError, BotoCoreError, ClientError)


class _Receiver:
    """One long-lived daemon thread that runs a poller's receives one at a time, on request.

    ``request`` starts the next receive and returns its future; the poller asks for at most
    one ahead, so a batch never waits in a queue behind another. A daemon thread, so a stop
    never waits for a long poll to return; reusing it saves a thread start per batch.
    """

    def __init__(self, receive: Callable[[], list[dict[str, Any]]]) -> None:
        self._receive = receive
        self._requests: stdlib_queue.SimpleQueue[Future[Any] | None] = stdlib_queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()

    def request(self) -> Future[list[dict[str, Any]]]:
        future: Future[list[dict[str, Any]]] = Future()
        self._requests.put(future)
        return future

    def _run(self) -> None:
        while (future := self._requests.get()) is not None:
            try:
                future.set_result(self._receive())
            except BaseException as exc:  # handed to whoever reads the result
                future.set_exception(exc)

    def close(self) -> None:
        self._requests.put(None)


class _VisibilityKeeper:
    """One daemon thread that extends the visibility of every batch in hand for too long.

    A batch is registered as soon as it is received; each ``interval`` seconds after that,
    until it is released, its messages get ``timeout`` more seconds. One thread serves all
    pollers instead of one thread started per batch.
    """

    def __init__(self, queue: OrderQueue, timeout: int) -> None:
        self.queue = queue
        self.timeout = timeout
        self.interval = max(timeout / 2, 0.5)
        self._batches: dict[str, tuple[list[str], float]] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def track(self, handles: list[str]) -> None:
        """From now until ``release``, keep ``handles`` invisible (a batch is keyed by its
        first receipt handle, unique to one receive)."""
        with self._changed:
            self._batches[handles[0]] = (handles, time.monotonic() + self.interval)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="visibility-keeper", daemon=True
                )
                self._thread.start()
            elif len(self._batches) == 1:
                self._changed.notify()

    def release(self, handles: Sequence[str]) -> None:
        with self._changed:
            self._batches.pop(handles[0], None)

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    now = time.monotonic()
                    if self._batches:
                        soonest = min(due for _, due in self._batches.values())
                        if soonest <= now:
                            break
                        self._changed.wait(soonest - now)
                    else:
                        self._changed.wait()
                due_now = []
                for key, (handles, due) in self._batches.items():
                    if due <= now:
                        due_now.append(handles)
                        self._batches[key] = (handles, now + self.interval)
            for handles in due_now:
                try:
                    self.queue.extend_visibility(handles, self.timeout)
                    logger.info("batch still in progress; extended visibility of %d", len(handles))
                except DEPENDENCY_ERRORS as exc:
                    logger.warning("could not extend visibility: %s", exc)
                except Exception:  # keep the thread alive for the other batches
                    logger.exception("could not extend visibility")


@dataclass
class Tally:
    """Counters shared by all polling threads of one process, for the periodic INFO line."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, received: int, applied: int, duplicates: int, rejected: int) -> None:
        with self.lock:
            self.received += received
            self.applied += applied
            self.duplicates += duplicates
            self.rejected += rejected

    def snapshot(self) -> tuple[int, int, int, int]:
        with self.lock:
            return self.received, self.applied, self.duplicates, self.rejected


@dataclass(frozen=True)
class BatchResult:
    received: int
    applied: int
    duplicates: int
    rejected: int


class Deleter:
    """Deletes committed messages on its own thread while the poller receives the next batch.

    Deleting is the last step and its failure is harmless (a redelivery is a duplicate the
    idempotency marks absorb), so it need not hold up the next receive. ``close`` drains
    what is pending before the process exits.
    """

    def __init__(self, queue: OrderQueue) -> None:
        self.queue = queue
        self._pending: stdlib_queue.Queue[list[str] | None] = stdlib_queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="deleter", daemon=True)
        self._thread.start()

    def submit(self, handles: list[str]) -> None:
        self._pending.put(handles)

    def _run(self) -> None:
        while (handles := self._pending.get()) is not None:
            try:
                failed = self.queue.delete(handles)
            except DEPENDENCY_ERRORS as exc:
                failed = len(handles)
                logger.warning("delete failed (%s)", exc)
            except Exception:  # a dead deleter would block submit() and close() for ever
                failed = len(handles)
                logger.exception("delete failed unexpectedly")
            if failed:
                logger.warning("%d deletions failed; SQS will redeliver (harmless)", failed)

    def close(self, timeout: float = 30.0) -> None:
        self._pending.put(None)
        self._thread.join(timeout)


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
    of a probe or of a batch, doubles the wait (capped) and logs nothing new.
    """

    def __init__(self, first_delay: float = 0.5, max_delay: float = 30.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._down: dict[str, _Outage] = {}
        self._lock = threading.Lock()

    def failed(self, name: str, exc: BaseException, now: float) -> float:
        """Note a failure of ``name``; returns how long to wait before trying it again."""
        with self._lock:
            outage = self._down.get(name)
            if outage is not None:
                outage.delay = min(outage.delay * 2, self.max_delay)
                return outage.delay
            outage = self._down[name] = _Outage(now, min(self.first_delay, self.max_delay))
        logger.error(
            "%s unavailable (%s); nothing of the batch in hand is deleted, backing off",
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
            logger.info("%s is back after %.1fs; resuming", name, now - since)


def _dependency_name(exc: BaseException) -> str:
    if isinstance(exc, StoreUnavailableError):
        return "Redis"
    if isinstance(exc, DjangoDatabaseError):
        return "database"
    return "SQS"


def validate_batch(
    messages: Sequence[dict[str, Any]], received_at: datetime
) -> tuple[list[tuple[dict[str, Any], Order]], list[tuple[dict[str, Any], Rejection]]]:
    """Split received messages into valid orders and rejections, each beside its message."""
    orders: list[tuple[dict[str, Any], Order]] = []
    rejected: list[tuple[dict[str, Any], Rejection]] = []
    for message in messages:
        outcome = validate_message(
            message.get("Body", ""), dating_attributes(message), received_at=received_at
        )
        if isinstance(outcome, Order):
            orders.append((message, outcome))
        else:
            rejected.append((message, outcome))
    return orders, rejected


class Consumer:
    """Consumes one queue into one store. ``process_batch`` is one unit of work.

    Tests call ``process_batch`` directly; ``run`` loops it until ``stop`` is set. The clocks
    (``clock``, ``now``) are attributes and every wait is ``stop.wait``, so tests can swap
    them instead of sleeping through real backoff delays.
    """

    def __init__(
        self,
        queue: OrderQueue,
        store: AggregateStore,
        *,
        batch_size: int = SQS_BATCH_LIMIT,
        wait_time: int = 20,
        visibility_timeout: int = 30,
        max_messages: int | None = None,
        until_empty: bool = False,
        max_backoff: float = 30.0,
        log_interval: float = 10.0,
        record_rejections: Callable[[Sequence[RejectionRecord]], list[str]] | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.batch_size = max(1, min(batch_size, SQS_BATCH_LIMIT))
        self.wait_time = wait_time
        self.visibility_timeout = visibility_timeout
        self.max_messages = max_messages
        self.until_empty = until_empty
        self.log_interval = log_interval
        self.record_rejections = record_rejections or RejectedOrder.objects.record_many
        self.stop = threading.Event()
        self.clock: Callable[[], float] = time.monotonic
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.tally = Tally()
        self.outages = Outages(max_delay=max_backoff)
        self._budget_lock = threading.Lock()
        self._budget = threading.Condition(self._budget_lock)
        self._claimed = 0  # messages received or asked for by receives under way
        self._claims_open = 0  # receives under way that hold part of the budget
        self._in_hand = 0  # batches received and not yet seen through, across pollers
        self.deleter: Deleter | None = None  # run() deletes in the background
        self._keeper = _VisibilityKeeper(queue, visibility_timeout)
        self.failure: BaseException | None = None  # set when the consumer stopped on an error
        # Each consumer process reports its own heartbeat, so one dead consumer among several
        # shows up in pipeline_status.
        self.store.consumer_id = self.store.consumer_id or f"{socket.gethostname()}:{os.getpid()}"

    # --- one unit of work ------------------------------------------------------------------
    def _claim(self) -> int:
        """How many messages this receive may take, honouring --max-messages across threads.

        0 means the budget is spent for good. While receives under way hold the rest of it,
        wait: a receive often gets fewer messages than it asked for and hands the rest back.
        """
        with self._budget:
            if self.max_messages is None:
                return self.batch_size
            while True:
                allowed = min(self.batch_size, self.max_messages - self._claimed)
                if allowed > 0:
                    self._claimed += allowed
                    self._claims_open += 1
                    return allowed
                if self._claims_open == 0 or self.stop.is_set():
                    return 0
                self._budget.wait(0.5)

    def _settle(self, claimed: int, received: int) -> None:
        """A receive that claimed ``claimed`` messages got ``received``: hand back the rest."""
        if self.max_messages is None:
            return
        with self._budget:
            self._claimed -= claimed - received
            self._claims_open -= 1
            self._budget.notify_all()

    def receive_batch(self) -> list[dict[str, Any]]:
        """One ReceiveMessage within the --max-messages budget; beats the heartbeat when idle."""
        wanted = self._claim()
        if wanted == 0:
            self.stop.set()
            return []
        try:
            messages = self.queue.receive(
                max_messages=wanted,
                wait_time=self.wait_time,
                visibility_timeout=self.visibility_timeout,
            )
        except BaseException:
            self._settle(wanted, 0)
            raise
        self._settle(wanted, len(messages))
        if not messages:
            self.store.heartbeat()  # a write: Redis is not merely answering, it accepts work
            self.outages.recovered(("SQS", "Redis"), self.clock())
            return messages
        self.outages.recovered(("SQS",), self.clock())
        # In hand from this moment (also while it waits behind the batch being handled):
        # its visibility is kept and a graceful stop waits for it.
        with self._budget_lock:
            self._in_hand += 1
        self._keeper.track([m["ReceiptHandle"] for m in messages])
        return messages

    def handle_batch(self, messages: Sequence[dict[str, Any]]) -> BatchResult:
        """See received messages through to deletion. Raises on a dependency failure, having
        deleted nothing of the batch."""
        try:
            result = self._handle(messages)
        finally:
            self._let_go(messages)
        # Every batch reaches Redis; one with a rejection reached the database too.
        used = ("Redis", "database") if result.rejected else ("Redis",)
        self.outages.recovered(used, self.clock())
        self.tally.add(result.received, result.applied, result.duplicates, result.rejected)
        return result

    def _let_go(self, messages: Sequence[dict[str, Any]]) -> None:
        """The batch is no longer in hand: handled, or left for SQS to redeliver."""
        self._keeper.release([m["ReceiptHandle"] for m in messages])
        with self._budget_lock:
            self._in_hand -= 1

    def process_batch(self) -> BatchResult:
        """Receive one batch and handle it; ``received == 0`` means the queue had nothing."""
        messages = self.receive_batch()
        if not messages:
            return BatchResult(0, 0, 0, 0)
        return self.handle_batch(messages)

    def _handle(self, messages: Sequence[dict[str, Any]]) -> BatchResult:
        received_at = self.now()
        orders, rejected = validate_batch(messages, received_at)

        applied = duplicates = 0
        if orders:
            statuses = self.store.apply_orders([o for _, o in orders], received=len(messages))
            for (message, order), status in zip(orders, statuses, strict=True):
                if status is ApplyStatus.APPLIED:
                    applied += 1
                elif status is ApplyStatus.DUPLICATE:
                    duplicates += 1
                else:
                    rejected.append((message, conflict_rejection(order)))
        else:
            self.store.record_received(len(messages))

        if rejected:
            # Long-lived threads see no request cycle: drop a connection that is past
            # CONN_MAX_AGE or fails its health check instead of failing the batch on it
            # (never inside a caller's transaction, which closing would break).
            if not connection.in_atomic_block:
                close_old_connections()
            records = [
                RejectionRecord(
                    message_id=message["MessageId"],
                    body=message.get("Body", ""),
                    rejection=rejection,
                    queue_name=self.queue.name,
                    receive_count=int(
                        message.get("Attributes", {}).get("ApproximateReceiveCount", 1)
                    ),
                    received_at=received_at,
                )
                for message, rejection in rejected
            ]
            self.record_rejections(records)  # one row per message id, however often
            # Counted by message id in Redis, not by "new row": the row may be from an
            # attempt whose count never reached Redis, or from another consumer's.
            self.store.record_rejections(
                {message["MessageId"]: rejection.codes for message, rejection in rejected}
            )

        handles = [m["ReceiptHandle"] for m in messages]
        if self.deleter is not None:
            # Committed: deleting can overlap the next batch (run() drains it before exit).
            self.deleter.submit(handles)
        else:
            # Committed already: a redelivery is a duplicate the marks absorb.
            try:
                failed = self.queue.delete(handles)
            except DEPENDENCY_ERRORS as exc:
                failed = len(handles)
                logger.warning("delete failed after the commit (%s)", exc)
            if failed:
                logger.warning(
                    "%d of %d deletions failed; SQS will redeliver them (harmless)",
                    failed,
                    len(messages),
                )
        return BatchResult(len(messages), applied, duplicates, len(rejected))

    # --- the loop --------------------------------------------------------------------------
    def _wait_for_dependencies(self, failure: BaseException) -> None:
        """Back off until the failed dependency answers a probe, then let real work try again
        (the outage ends when that work succeeds; see ``Outages``)."""
        name = _dependency_name(failure)
        delay = self.outages.failed(name, failure, self.clock())
        while not self.stop.is_set():
            self.stop.wait(delay)
            if self.stop.is_set():
                return
            try:
                self._probe(name)
            except DEPENDENCY_ERRORS as exc:
                delay = self.outages.failed(name, exc, self.clock())
                continue
            return

    def _probe(self, name: str) -> None:
        if name == "Redis":
            self.store.heartbeat()  # a write: a read-only replica answers PING
        elif name == "database":
            close_old_connections()
            connection.ensure_connection()
        else:
            self.queue.depth()

    def _queue_is_empty(self) -> bool:
        depth = self.queue.depth()
        return depth.visible + depth.in_flight + depth.delayed == 0

    def run_worker(self) -> None:
        """One polling thread: loop batches until stopped, the budget is spent or (with
        ``until_empty``) the queue reports empty.

        The next receive runs in the background while a batch is handled, so SQS latency
        and processing overlap. At most one receive is ahead: during an outage its batch
        waits in hand (no further receives) and is handled once the dependency is back; on
        a graceful stop it is handled too. An error that retrying cannot cure (a Redis
        command refused, a bug) stops the whole consumer loudly (``self.failure``).
        """
        pending: Future[list[dict[str, Any]]] | None = None
        receiver = _Receiver(self.receive_batch)
        try:
            while not self.stop.is_set():
                try:
                    if pending is None:
                        pending = receiver.request()
                    try:
                        messages = pending.result()
                    finally:
                        pending = None
                    if not messages:
                        if self.until_empty and self._queue_is_empty():
                            self.stop.set()
                        continue
                    if not self.stop.is_set():
                        pending = receiver.request()
                    self.handle_batch(messages)
                except StoreCommandError as exc:
                    self._fail(exc, "Redis refused a command; stopping rather than cycling every "
                                    "message towards the dead-letter queue")  # fmt: skip
                except DEPENDENCY_ERRORS as exc:
                    if isinstance(exc, DjangoDatabaseError):
                        close_old_connections()
                    self._wait_for_dependencies(exc)
                except Exception as exc:
                    self._fail(exc, "unexpected error; stopping")
            self._finish_prefetched(pending)
        finally:
            receiver.close()
            connection.close()

    def _finish_prefetched(self, pending: Future[list[dict[str, Any]]] | None) -> None:
        """On stop, a receive that already came back is in hand: handle it (or, if that
        fails, leave it for SQS to redeliver). A receive still long-polling holds nothing."""
        if pending is None:
            return
        try:
            # A receive that finds messages returns at once; one still waiting after the
            # grace is an empty long poll, and a stop does not wait out its 20 s.
            pending.result(timeout=STOP_GRACE)
        except Exception:  # timed out, or the receive failed: nothing in hand
            return
        messages = pending.result()
        if not messages:
            return
        if self.failure is not None:
            self._let_go(messages)
            return
        try:
            self.handle_batch(messages)
        except Exception as exc:  # its messages reappear after the visibility timeout
            logger.warning("batch received before the stop was not committed: %s", exc)

    def _fail(self, exc: BaseException, why: str) -> None:
        logger.error("%s: %s", why, exc, exc_info=exc)
        self.failure = exc
        self.stop.set()

    def run(self, threads: int = 1) -> None:
        """Run ``threads`` pollers until stopped; logs throughput every ``log_interval``."""
        workers = [
            threading.Thread(target=self.run_worker, name=f"poller-{i}", daemon=True)
            for i in range(threads)
        ]
        self.deleter = Deleter(self.queue)
        for worker in workers:
            worker.start()
        last_time, last = self.clock(), self.tally.snapshot()
        stop_seen: float | None = None
        try:
            while any(w.is_alive() for w in workers):
                for worker in workers:
                    worker.join(timeout=0.1)
                if self.stop.is_set():
                    stop_seen = self.clock() if stop_seen is None else stop_seen
                    if not self.batches_in_hand and self.clock() - stop_seen > STOP_GRACE:
                        # Pollers still inside a long poll hold no batch: leaving them is
                        # safe (what such a poll receives becomes visible again after the
                        # visibility timeout), and a stop need not wait 20 s for them.
                        break
                now = self.clock()
                if now - last_time >= self.log_interval:
                    self._log_throughput(now - last_time, last)
                    last_time, last = now, self.tally.snapshot()
        finally:
            self.deleter.close()
            self.deleter = None
            with contextlib.suppress(*DEPENDENCY_ERRORS):
                self.store.forget_consumer()
        self._log_throughput(max(self.clock() - last_time, 1e-9), last)

    @property
    def batches_in_hand(self) -> int:
        with self._budget_lock:
            return self._in_hand

    def _log_throughput(self, elapsed: float, previous: tuple[int, int, int, int]) -> None:
        current = self.tally.snapshot()
        received, applied, duplicates, rejected = (
            c - p for c, p in zip(current, previous, strict=True)
        )
        if received or applied or rejected:
            logger.info(
                "throughput %.1f msg/s: received=%d applied=%d duplicates=%d rejected=%d",
                received / elapsed,
                received,
                applied,
                duplicates,
                rejected,
            )
