"""The ingestion loop: receive -> commit (``orders.commit``) -> delete.

A message is deleted only after its effect is committed (ledger and Redis for a valid order,
the database for a rejected one). When a dependency fails (``orders.outages``), the batch in
hand stays in hand: its visibility is kept, no new batch is received, and that same batch is
retried after a growing backoff, so a failing dependency never raises a message's receive
count. Errors that retrying cannot cure stop the consumer loudly instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from django.db import close_old_connections, connection

from orders import ledger, outages, sqs
from orders.commit import BatchCommitter, BatchResult
from orders.consumer_threads import Deleter, Receiver, Tally, VisibilityKeeper, delete_committed
from orders.models import RejectionRecord
from orders.outages import Dependency
from orders.sqs import SQS_BATCH_LIMIT, OrderQueue
from stats.store import AggregateStore, RebuildInProgressError

logger = logging.getLogger(__name__)

# How long a graceful stop waits for a receive that is under way: one that finds messages
# returns at once, one still waiting after this is an empty long poll holding nothing.
STOP_GRACE = 1.0

# Pollers of one consume_orders process unless --threads says otherwise; the benchmarks read
# it too, so what they measure by default is what the command runs. Two: a poller spends most
# of a batch waiting for the ledger's commit and Redis's durable write, and a second one's
# batch uses those waits (ingest_bench, 2 ms SQS round trips: the mixed stream went from
# 0.55-0.69x the raw drain to 0.95x; docs/benchmarks.md).
DEFAULT_POLLERS = 2


class Consumer:
    """Consumes one queue into one store. ``process_batch`` is one unit of work.

    Tests call ``process_batch`` (or ``run_worker``) directly; ``run`` loops pollers until
    ``stop`` is set. Two events: ``stop`` ends receiving (a signal, the ``--max-messages``
    budget, ``--until-empty``), and the batches in hand are still seen through, retried through
    an outage; ``interrupted`` (a signal, a fatal error: ``request_stop``) also gives up on a
    batch that cannot commit. The clocks (``clock``, ``now``) are attributes and every wait is
    an event's ``wait``, so tests can swap them instead of sleeping through real backoffs.
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
        record_rejections: Callable[[Sequence[RejectionRecord]], object] | None = None,
        stop: threading.Event | None = None,
        interrupted: threading.Event | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.batch_size = max(1, min(batch_size, SQS_BATCH_LIMIT))
        self.wait_time = wait_time
        self.visibility_timeout = visibility_timeout
        self.max_messages = max_messages
        self.until_empty = until_empty
        self.log_interval = log_interval
        self.committer = BatchCommitter(store, queue.name, record_rejections)
        self.stop = stop or threading.Event()
        self.interrupted = interrupted or threading.Event()
        self.clock: Callable[[], float] = time.monotonic
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.tally = Tally()
        self.outages = outages.Outages(max_delay=max_backoff)
        self._budget_lock = threading.Lock()
        self._budget = threading.Condition(self._budget_lock)
        self._claimed = 0  # messages received or asked for by receives under way
        self._claims_open = 0  # receives under way that hold part of the budget
        self._in_hand = 0  # batches received and not yet seen through, across pollers
        self.deleter: Deleter | None = None  # run() deletes in the background
        # The process's one receive ahead (run_worker), and how many pollers wait for a batch.
        self._ahead_lock = threading.Lock()
        self._ahead: Future[list[dict[str, Any]]] | None = None
        self._waiting = 0
        self._keeper = VisibilityKeeper(queue, visibility_timeout, sqs.is_transient)
        self.failure: BaseException | None = None  # set when the consumer stopped on an error
        # Each consumer process reports its own heartbeat, so one dead consumer among several
        # shows up in pipeline_status.
        self.store.consumer_id = self.store.consumer_id or f"{socket.gethostname()}:{os.getpid()}"

    # --- receiving, within the --max-messages budget ---------------------------------------
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
            self.outages.recovered((Dependency.SQS, Dependency.REDIS), self.clock())
            return messages
        self.outages.recovered((Dependency.SQS,), self.clock())
        # In hand from this moment (also while it waits behind the batch being handled):
        # its visibility is kept and a graceful stop waits for it.
        with self._budget_lock:
            self._in_hand += 1
        self._keeper.track([m["ReceiptHandle"] for m in messages])
        return messages

    # --- one unit of work ------------------------------------------------------------------
    def handle_batch(self, messages: Sequence[dict[str, Any]]) -> BatchResult:
        """Commit a received batch and delete it; then it is no longer in hand.

        Raises on a failure with nothing deleted and the batch still in hand (its visibility
        kept): the caller retries it (``see_through``) or lets it go (``let_go``).
        """
        result = self.committer.commit(messages, self.now())
        self.outages.recovered(
            (Dependency.REDIS, Dependency.DATABASE, Dependency.REBUILD), self.clock()
        )
        self.tally.add(
            result.received, result.applied, result.duplicates, result.rejected,
            result.events_applied, result.events_duplicates, result.events_waiting,
        )  # fmt: skip
        handles = [m["ReceiptHandle"] for m in messages]
        if self.deleter is not None:
            self.deleter.submit(handles)  # committed: deleting can overlap the next batch
        else:
            delete_committed(self.queue, handles)
        self.let_go(messages)
        return result

    def let_go(self, messages: Sequence[dict[str, Any]]) -> None:
        """The batch is no longer in hand: deleted, or left for SQS to redeliver."""
        self._keeper.release([m["ReceiptHandle"] for m in messages])
        with self._budget_lock:
            self._in_hand -= 1

    def process_batch(self) -> BatchResult:
        """Receive one batch and handle it once; ``received == 0`` means the queue had nothing.

        On a failure the batch is let go (SQS redelivers it after the visibility timeout) and
        the error raised; ``run`` instead keeps a failed batch and retries it.
        """
        messages = self.receive_batch()
        if not messages:
            return BatchResult(0, 0, 0, 0)
        try:
            return self.handle_batch(messages)
        except BaseException:
            self.let_go(messages)
            raise

    def request_stop(self) -> None:
        """A signal: stop receiving, and do not wait out an outage with a batch in hand."""
        self.interrupted.set()
        self.stop.set()

    def see_through(self, messages: Sequence[dict[str, Any]]) -> BatchResult | None:
        """Handle a batch, retrying that same batch after each transient failure until it
        commits; None when the consumer was interrupted first or stopped on an error (the
        batch is then let go)."""
        try:
            result = self.outages.retry(
                lambda: self.handle_batch(messages), self.interrupted, self.clock, self._probe
            )
        except Exception as exc:  # waiting cannot cure it, or a bug (in a probe, say)
            self.let_go(messages)
            self._fail_on(exc, outages.classify(exc))
            return None
        if result is None:
            logger.warning(
                "stopping with a batch of %d not committed; SQS redelivers it", len(messages)
            )
            self.let_go(messages)
        return result

    def _probe(self, dependency: Dependency) -> None:
        """A cheap stand-in for the real work, able to fail the way the work would."""
        if dependency is Dependency.REDIS:
            self.store.heartbeat()  # a write: a read-only replica answers PING
        elif dependency is Dependency.REBUILD:
            if self.store.rebuild_in_progress():
                raise RebuildInProgressError("still rebuilding")
        elif dependency is Dependency.DATABASE:
            close_old_connections()  # the failed connection, before a new one is opened
            ledger.probe_write()  # a read-only server accepts connections, refuses this
        else:
            self.queue.depth()

    def _fail_on(self, exc: BaseException, failure: outages.Failure | None) -> None:
        if failure is None:
            why = "unexpected error; stopping"
        elif failure.dependency is Dependency.REDIS:
            why = ("Redis refused a command; stopping rather than cycling every message "
                   "towards the dead-letter queue")  # fmt: skip
        elif failure.dependency is Dependency.SQS and sqs.is_missing_queue(exc):
            why = f"the queue {self.queue.name} no longer exists; stopping"
        else:
            why = (
                f"{failure.dependency} refused the work for a reason waiting cannot cure; stopping"
            )
        logger.error("%s: %s", why, exc, exc_info=failure is None)
        self.failure = exc
        self.request_stop()

    # --- the loop --------------------------------------------------------------------------
    def _queue_is_empty(self) -> bool:
        depth = self.queue.depth()
        return depth.visible + depth.in_flight + depth.delayed == 0

    def run_worker(self) -> None:
        """One polling thread: loop batches until stopped, the budget is spent or (with
        ``until_empty``) the queue reports empty.

        A poller that starts on a batch receives the next one in the background, so SQS
        latency and processing overlap, but only when no other poller is waiting for a batch
        and none is received ahead yet: the process holds at most one batch that no poller
        works on, and a free poller takes it before it receives for itself. So at a low rate
        a message waits for no batch in progress (an idle poller's receive takes it), and on
        a full queue the next batch is there when a poller is free. While a batch keeps
        failing, the batch received ahead waits in hand too (another poller takes it, and
        fails the same way); on a graceful stop the batch received ahead is handled as well.
        """
        receiver = Receiver(self.receive_batch)
        try:
            while not self.stop.is_set():
                messages = self._next_batch(receiver)
                if messages is None:
                    continue
                if not messages:
                    if self.until_empty and self._empty_or_failed():
                        self.stop.set()
                    continue
                if not self.stop.is_set():
                    self._receive_ahead(receiver)
                self.see_through(messages)
            self._finish_ahead(self._take_ahead())
        except Exception as exc:  # a poller that dies silently would hold its budget for ever
            self._fail_on(exc, None)
        finally:
            receiver.close()
            connection.close()

    def _take_ahead(self) -> Future[list[dict[str, Any]]] | None:
        with self._ahead_lock:
            ahead, self._ahead = self._ahead, None
            return ahead

    def _next_batch(self, receiver: Receiver) -> list[dict[str, Any]] | None:
        """The batch received ahead, else one received now; None when the receive failed."""
        with self._ahead_lock:
            future, self._ahead = self._ahead or receiver.request(), None
            self._waiting += 1
        try:
            return future.result()
        except Exception as exc:
            self._receive_failed(exc)
            return None
        finally:
            with self._ahead_lock:
                self._waiting -= 1

    def _receive_ahead(self, receiver: Receiver) -> None:
        """Start receiving the next batch, unless a poller already waits for one (its
        receive takes the next messages) or one is received ahead already."""
        with self._ahead_lock:
            if self._ahead is None and self._waiting == 0:
                self._ahead = receiver.request()

    def _receive_failed(self, exc: BaseException) -> None:
        failure = outages.classify(exc)
        if failure is None or not failure.transient:
            self._fail_on(exc, failure)
        else:
            self.outages.wait_out(failure.dependency, exc, self.stop, self.clock, self._probe)

    def _empty_or_failed(self) -> bool:
        try:
            return self._queue_is_empty()
        except Exception as exc:
            self._receive_failed(exc)
            return False

    def _finish_ahead(self, ahead: Future[list[dict[str, Any]]] | None) -> None:
        """On stop, a receive that already came back is in hand: handle it (or, if that
        fails, leave it for SQS to redeliver). A receive still long-polling holds nothing."""
        if ahead is None:
            return
        try:
            messages = ahead.result(timeout=STOP_GRACE)
        except Exception:  # timed out, or the receive failed: nothing in hand
            return
        if not messages:
            return
        if self.failure is not None:
            self.let_go(messages)
            return
        try:
            self.handle_batch(messages)
        except Exception as exc:  # its messages reappear after the visibility timeout
            self.let_go(messages)
            logger.warning("batch received before the stop was not committed: %s", exc)

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
            with contextlib.suppress(Exception):
                self.store.forget_consumer()
        self._log_throughput(max(self.clock() - last_time, 1e-9), last)

    @property
    def batches_in_hand(self) -> int:
        with self._budget_lock:
            return self._in_hand

    def _log_throughput(self, elapsed: float, previous: tuple[int, ...]) -> None:
        current = self.tally.snapshot()
        received, applied, duplicates, rejected, *events = (
            c - p for c, p in zip(current, previous, strict=True)
        )
        if received or applied or rejected or any(events):
            applied_events, duplicate_events, waiting = events
            logger.info(
                "throughput %.1f msg/s: received=%d applied=%d duplicates=%d rejected=%d%s",
                received / elapsed,
                received,
                applied,
                duplicates,
                rejected,
                (
                    f" events_applied={applied_events} events_duplicates={duplicate_events} "
                    f"events_waiting={waiting}"
                )
                if any(events)
                else "",
            )
