"""A small chaos run in the suite (``make chaos`` runs the full 10,000-order one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_chaos_run_loses_and_double_counts_nothing() -> None:
    run = subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / "chaos.py"), "--orders", "1500",
         "--users", "120", "--rate", "250", "--redis-down", "2", "--timeout", "120"],
        capture_output=True, text=True, timeout=240, cwd=BASE_DIR,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "lost=0 double_counted=0 mismatched_users=0" in run.stdout
    assert "kill -9 redis" in run.stdout
    assert run.stdout.count("kill -9 consumer a") == 3
