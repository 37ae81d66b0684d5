"""Redis as a read model of the ledger: derive it again (rebuild) and check it (reconcile).

``rebuild`` recomputes every aggregate from the ledger (grouped in the database, written with
fenced script calls) into a fresh key generation, idempotency marks included, and switches to
it at once, so the API never serves a half-built state and a rebuild that dies before its
switch changes nothing that is live. ``reconcile`` compares the ledger with what Redis serves,
streaming both sides sorted by user, and can repair what drifted. Both are safe while
consumers run: they hold the store's lock, a lease every write of theirs checks
(``lease``), during which consumers keep their batch in hand (visibility kept) and apply it
afterwards, against the new generation; the ledger snapshot and the marks of the new
generation decide which of those orders the rebuild already counted (the crash table of
docs/design.md).

Which ledger rows Redis has applied: every row first recorded before the marks' window
(``AggregateStore.window_start``) counts as applied, and a row inside the window is applied
exactly when its mark exists. That is also the rule of the apply script, and the same
function draws the window for both, so the two never disagree.
"""

from __future__ import annotations

from orders.projection.lease import (
    LOCK_TTL_MS,
    Lease,
    ProjectionBusyError,
    add_lock_ttl_argument,
    lock_ttl_ms,
    rebuild_lock,
)
from orders.projection.rebuilding import ForeignCurrencyError, RebuildReport, rebuild
from orders.projection.reconciling import ReconcileReport, compare, reconcile
from stats.store import LeaseLostError

__all__ = [
    "LOCK_TTL_MS",
    "ForeignCurrencyError",
    "Lease",
    "LeaseLostError",
    "ProjectionBusyError",
    "RebuildReport",
    "ReconcileReport",
    "add_lock_ttl_argument",
    "compare",
    "lock_ttl_ms",
    "rebuild",
    "rebuild_lock",
    "reconcile",
]
