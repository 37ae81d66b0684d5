"""The consumer's helper threads: receive ahead, keep batches invisible, delete behind.

None of them knows what an order is. The loop (``orders.consumer``) hands them receipt
handles; they hide SQS round trips behind the work on the batch in hand.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from orders.sqs import OrderQueue

logger = logging.getLogger("orders.consumer")


class Receiver:
    """One long-lived daemon thread that runs a poller's receives one at a time, on request.

    ``request`` starts the next receive and returns its future; the pollers of a process ask
    for at most one ahead between them (``Consumer.run_worker``), so a batch never waits in a
    queue behind another. A daemon thread, so a stop
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


class ExtendsVisibility(Protocol):
    """What ``VisibilityKeeper`` needs of a queue: ``OrderQueue.extend_visibility``."""

    def extend_visibility(
        self, receipt_handles: Sequence[str], timeout: int, /
    ) -> Sequence[Mapping[str, object]]: ...


class VisibilityKeeper:
    """One daemon thread that extends the visibility of every batch in hand for too long.

    A batch is registered as soon as it is received; each ``interval`` seconds after that,
    until it is released, its messages get ``timeout`` more seconds. That is what keeps a
    batch whose dependency is down in hand for as long as the outage lasts (up to SQS's own
    12-hour limit per message). One thread serves all pollers.
    """

    def __init__(
        self,
        queue: ExtendsVisibility,
        timeout: int,
        is_transient: Callable[[BaseException], bool],
    ) -> None:
        self.queue = queue
        self.timeout = timeout
        self.interval = max(timeout / 2, 0.5)
        self._is_transient = is_transient
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

    def _due(self) -> list[list[str]]:
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
            return due_now

    def _run(self) -> None:
        while True:
            for handles in self._due():
                try:
                    self._extend(handles)
                except Exception as exc:  # keep the thread alive for the other batches
                    if self._is_transient(exc):
                        logger.warning("could not extend visibility: %s", exc)
                    else:
                        logger.exception("could not extend visibility")

    def _extend(self, handles: list[str]) -> None:
        failed = self.queue.extend_visibility(handles, self.timeout)
        for entry in failed:
            # E.g. a message past SQS's 12-hour visibility limit: it becomes visible again and
            # may be received elsewhere (harmless: its order is applied once however often).
            logger.warning(
                "SQS refused to extend the visibility of a message in hand: %s %s",
                entry.get("Code", "?"),
                entry.get("Message", ""),
            )
        if len(failed) < len(handles):
            logger.info(
                "batch still in hand; extended visibility of %d", len(handles) - len(failed)
            )


class Deleter:
    """Deletes committed messages on its own thread while the poller receives the next batch.

    Deleting is the last step and its failure is harmless (a redelivery is a duplicate the
    ledger and the idempotency marks absorb), so it need not hold up the next receive.
    ``close`` drains what is pending before the process exits.
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
            delete_committed(self.queue, handles)

    def close(self, timeout: float = 30.0) -> None:
        self._pending.put(None)
        self._thread.join(timeout)


def delete_committed(queue: OrderQueue, handles: list[str]) -> None:
    """Delete messages whose effect is committed; a failure only means a harmless redelivery."""
    try:
        failed = queue.delete(handles)
    except (BotoCoreError, ClientError) as exc:
        failed = len(handles)
        logger.warning("delete failed (%s: %s)", type(exc).__name__, exc)
    except Exception:  # a dead deleter would block submit() and close() for ever
        failed = len(handles)
        logger.exception("delete failed unexpectedly")
    if failed:
        logger.warning(
            "%d of %d deletions failed; SQS will redeliver them (harmless)", failed, len(handles)
        )


@dataclass
class Tally:
    """Counters shared by all polling threads of one process, for the periodic INFO line:
    messages received, orders applied and duplicate, rejects, then events (refunds,
    cancellations) applied and duplicate and event messages parked for their order."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    events_applied: int = 0
    events_duplicates: int = 0
    events_waiting: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self,
        received: int,
        applied: int,
        duplicates: int,
        rejected: int,
        events_applied: int = 0,
        events_duplicates: int = 0,
        events_waiting: int = 0,
    ) -> None:
        with self.lock:
            self.received += received
            self.applied += applied
            self.duplicates += duplicates
            self.rejected += rejected
            self.events_applied += events_applied
            self.events_duplicates += events_duplicates
            self.events_waiting += events_waiting

    def snapshot(self) -> tuple[int, ...]:
        with self.lock:
            return (
                self.received, self.applied, self.duplicates, self.rejected,
                self.events_applied, self.events_duplicates, self.events_waiting,
            )  # fmt: skip
