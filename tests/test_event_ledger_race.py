"""Two consumers at the same moment, as two processes on one database (SQLite, and PostgreSQL
with TEST_DATABASE_URL): the ledger's serialisation of one order's events.

The first process records its batch and keeps its transaction open a moment
(``tests/ledger_race.py``); the second starts its batch meanwhile. Without the ledger's locks
the second would read the order's state before the first commits: two refunds of 60.00 would
both pass on a 109.97 order (PostgreSQL), or the second would fail on SQLite's stale
snapshot; an event arriving while its order is being recorded would wait for an order that
is already there, for ever.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from orders.models import OrderEvent, WaitingEvent
from orders.tests.conftest import SENT_AT_MS, accept, body_of, event_body, valid_doc
from tests.ingestion_helpers import BASE_DIR, STARTED

pytestmark = pytest.mark.django_db(transaction=True)

HOLD = 1.5  # seconds the first transaction stays open after recording


def message(message_id: str, body: str) -> dict[str, Any]:
    return {"MessageId": message_id, "Body": body, "Attributes": {"SentTimestamp": SENT_AT_MS}}


def start(
    env: dict[str, str], messages: list[dict[str, Any]], hold: float
) -> subprocess.Popen[str]:
    spec = json.dumps({"messages": messages, "hold": hold})
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger_race", spec],
        env=env, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    STARTED.append(process)  # type: ignore[arg-type] # killed if the test fails half way
    return process


def race(
    child_env: Callable[..., dict[str, str]],
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Run ``first`` (holding its transaction open) and, once it has recorded, ``second``;
    returns what each decided and how long the second took."""
    env = child_env()
    one = start(env, first, HOLD)
    assert one.stdout is not None
    line = one.stdout.readline()
    assert line == "recorded\n", line + one.stdout.read()
    started = time.monotonic()
    two = start(env, second, 0)
    out_two, _ = two.communicate(timeout=60)
    took = time.monotonic() - started
    out_one, _ = one.communicate(timeout=60)
    assert (one.returncode, two.returncode) == (0, 0), out_one + out_two
    return json.loads(out_one), json.loads(out_two.splitlines()[-1]), took


def test_two_consumers_refunding_one_order_at_once_never_exceed_its_value(child_env) -> None:
    accept(body_of(valid_doc()))  # ORD1000: 109.97

    one, two, took = race(
        child_env,
        [message("m1", event_body("RF-1", amount="60.00"))],
        [message("m2", event_body("RF-2", amount="60.00"))],
    )

    assert one == {"events": ["RF-1"], "rejected": [], "waiting": 0}
    assert two == {"events": [], "rejected": [["RF-2", ["refund_exceeds_order"]]], "waiting": 0}
    assert took >= HOLD * 0.5  # it waited for the first to commit
    assert list(OrderEvent.objects.values_list("event_id", "amount_cents")) == [("RF-1", 6000)]


def test_an_event_arriving_while_its_order_is_recorded_is_never_stranded(child_env) -> None:
    one, two, _took = race(
        child_env,
        [message("m-order", body_of(valid_doc()))],
        [message("m-rf", event_body("RF-1", amount="5.00"))],
    )

    assert one == {"events": [], "rejected": [], "waiting": 0}
    assert two == {"events": ["RF-1"], "rejected": [], "waiting": 0}
    assert WaitingEvent.objects.count() == 0
    assert list(OrderEvent.objects.values_list("event_id", flat=True)) == ["RF-1"]
