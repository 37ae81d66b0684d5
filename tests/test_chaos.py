"""Small chaos runs in the suite (``make chaos`` runs the full 10,000-order ones): a single
Redis with rebuild_stats and reconcile_stats --repair killed while the consumers ingest, and a
3-primary cluster, each ending with the API checked against the oracle before any reconcile,
the ledger checked, Redis emptied, rebuilt from the ledger and reconciled. Both send refunds
and cancellations too (some before their order, some twice, conflicting ones and over-refunds
to be rejected): the oracle covers gross, refunded, net and cancelled per user, per day, in
total and in the top spenders by net, and the top products by revenue and by units (net of
refunds by items and cancellations)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration

CLEAN = "lost=0 double_counted=0 mismatched_users=0"
EVENTS = re.compile(
    r"events sent: (\d+) refunds and (\d+) cancellations \((\d+) of the events before their "
    r"order\), (\d+) sent twice, (\d+) conflicting, (\d+) over-refunds"
)


def assert_events_were_sent(stdout: str) -> None:
    """Every kind of event was in the run (the oracle's rows cover them: refunded, net,
    cancelled, the ledger's events, the rejects)."""
    found = EVENTS.search(stdout)
    assert found, stdout[-3000:]
    assert all(int(n) > 0 for n in found.groups()), found.group(0)


def chaos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / "chaos.py"), "--orders", "1500",
         "--users", "120", "--rate", "250", "--timeout", "120", *args],
        capture_output=True, text=True, timeout=240, cwd=BASE_DIR,
    )  # fmt: skip


def test_chaos_run_with_rebuilds_and_repairs_killed_loses_and_double_counts_nothing() -> None:
    run = chaos("--redis-down", "2", "--kill-rebuilds", "2", "--kill-repairs", "1")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # Once as the consumers left it (no reconcile before), once after FLUSHALL and a rebuild.
    assert run.stdout.count(CLEAN) == 2
    assert "kill -9 redis" in run.stdout
    assert run.stdout.count("kill -9 consumer a") == 3
    assert run.stdout.count("kill -9 rebuild_stats") == 2
    assert run.stdout.count("kill -9 reconcile_stats --repair") == 1
    assert "leftovers after rebuild_stats --cleanup" in run.stdout
    assert_events_were_sent(run.stdout)
    assert "CHAOS RUN PASSED" in run.stdout


def test_chaos_run_on_a_cluster_loses_and_double_counts_nothing() -> None:
    run = chaos("--cluster", "--orders", "1000", "--redis-down", "3")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert run.stdout.count(CLEAN) == 2
    assert "stop a primary" in run.stdout
    assert "cluster_state fail from" in run.stdout  # the outage was a whole-cluster one
    assert run.stdout.count("kill -9 consumer a") == 3
    assert_events_were_sent(run.stdout)
    assert "CHAOS RUN PASSED" in run.stdout
