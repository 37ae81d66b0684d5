"""Small chaos runs in the suite (``make chaos`` runs the full 10,000-order ones): a single
Redis and a 3-primary cluster, each ending with the ledger checked, Redis emptied, rebuilt
from the ledger and reconciled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration

CLEAN = "lost=0 double_counted=0 mismatched_users=0"


def chaos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / "chaos.py"), "--orders", "1500",
         "--users", "120", "--rate", "250", "--timeout", "120", *args],
        capture_output=True, text=True, timeout=240, cwd=BASE_DIR,
    )  # fmt: skip


def test_chaos_run_loses_and_double_counts_nothing() -> None:
    run = chaos("--redis-down", "2")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # Once as the consumers left it, once after FLUSHALL and rebuild_stats.
    assert run.stdout.count(CLEAN) == 2
    assert "kill -9 redis" in run.stdout
    assert run.stdout.count("kill -9 consumer a") == 3
    assert "CHAOS RUN PASSED" in run.stdout


def test_chaos_run_on_a_cluster_loses_and_double_counts_nothing() -> None:
    run = chaos("--cluster", "--orders", "1000", "--redis-down", "3")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert run.stdout.count(CLEAN) == 2
    assert "stop a primary" in run.stdout
    assert "cluster_state fail from" in run.stdout  # the outage was a whole-cluster one
    assert run.stdout.count("kill -9 consumer a") == 3
    assert "CHAOS RUN PASSED" in run.stdout
