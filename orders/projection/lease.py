"""The lease a rebuild or repair holds: every shard's lock of every layout it touches, under
one token, extended in the background; a lease that could not be extended is recorded, never
swallowed, and the command stops before its switch (its fenced writes would write nothing
anyway)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from stats.store import AggregateStore, LeaseLostError, StoreUnavailableError

logger = logging.getLogger("orders.projection")

LOCK_TTL_MS = 30_000  # a rebuild that dies frees the consumers within this


class ProjectionBusyError(Exception):
    """Another rebuild or reconcile holds the lock."""


class Lease:
    """The locks of ``stores`` held under ``token``: ``check`` raises once a refresh found
    one lost, or could not reach Redis for longer than the lease."""

    def __init__(self, stores: Iterable[AggregateStore], token: str, ttl_ms: int) -> None:
        self.stores = list(stores)
        self.token = token
        self.ttl_ms = ttl_ms
        self.lost: str | None = None
        self._guard = threading.Lock()

    def check(self) -> None:
        if self.lost is not None:
            raise LeaseLostError(self.lost)

    def release(self, store: AggregateStore) -> None:
        """Let consumers of ``store`` go on (the rest stays held)."""
        with self._guard:
            if store in self.stores:
                self.stores.remove(store)
        store.release_rebuild_lock(self.token)

    def refresh(self) -> bool:
        """Extend every lock still held; False (and ``lost`` set) when one is not ours."""
        with self._guard:
            stores = list(self.stores)
        for store in stores:
            if not store.refresh_rebuild_lock(self.token, self.ttl_ms):
                with self._guard:
                    if store not in self.stores:
                        continue  # released meanwhile (after the switch): not a loss
                self._lose(f"the lock of {store.prefix} ({store.layout.code()}) was lost")
                return False
        return True

    def keep(self, stop: threading.Event) -> None:
        """The refresher thread: extend every third of the lease until ``stop``."""
        last_extended = time.monotonic()
        while not stop.wait(self.ttl_ms / 3000):
            try:
                if not self.refresh():
                    return
                last_extended = time.monotonic()
            except StoreUnavailableError as exc:
                if time.monotonic() - last_extended > self.ttl_ms / 1000:
                    self._lose(f"the lock could not be extended for longer than the lease ({exc})")
                    return
                logger.warning("could not extend the rebuild lock, retrying: %s", exc)

    def _lose(self, why: str) -> None:
        self.lost = (
            f"{why}: consumers may have applied batches meanwhile, so this command stops "
            "without switching; run it again"
        )
        logger.error("%s", self.lost)


def add_lock_ttl_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--lock-ttl`` option of the commands that hold the lock."""
    parser.add_argument(
        "--lock-ttl",
        type=float,
        default=LOCK_TTL_MS / 1000,
        metavar="SECONDS",
        help="the lease of the lock, refreshed every third of it: how long consumers wait "
        "after a command that died (default %(default)g)",
    )


def lock_ttl_ms(seconds: float) -> int:
    """``--lock-ttl`` in milliseconds; ``ValueError`` unless positive."""
    if seconds <= 0:
        raise ValueError("--lock-ttl must be positive")
    return int(seconds * 1000)


@contextlib.contextmanager
def rebuild_lock(stores: Iterable[AggregateStore], ttl_ms: int = LOCK_TTL_MS) -> Iterator[Lease]:
    """Hold the lock of every shard of ``stores`` for the duration, refreshed in the
    background; consumers keep their batches meanwhile."""
    token = uuid.uuid4().hex
    held: list[AggregateStore] = []
    try:
        for store in stores:
            if not store.acquire_rebuild_lock(token, ttl_ms):
                raise ProjectionBusyError(
                    "another rebuild_stats or reconcile_stats --repair is running"
                )
            held.append(store)
        lease = Lease(held, token, ttl_ms)
        stop = threading.Event()
        keeper = threading.Thread(target=lease.keep, args=(stop,), name="rebuild-lock", daemon=True)
        keeper.start()
        try:
            yield lease
        finally:
            stop.set()
            keeper.join(5)
    finally:
        for store in held:
            with contextlib.suppress(StoreUnavailableError):
                store.release_rebuild_lock(token)
