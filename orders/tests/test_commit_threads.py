"""BatchCommitter from several pollers of one process at once (SQLite, and PostgreSQL with
TEST_DATABASE_URL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from orders import ledger
from orders.commit import BatchCommitter
from orders.models import AcceptedOrder
from orders.tests.conftest import LEDGER_RECEIVED_AT, body_of, sqs_message, valid_doc
from stats.store import AggregateStore

pytestmark = pytest.mark.django_db(transaction=True)


def test_pollers_take_turns_on_sqlite_and_record_side_by_side_elsewhere(
    fake_store: AggregateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the second poller's batch starts when the first commits, never inside
    SQLite's busy handler (whose sleeps grow to 100 ms); PostgreSQL takes both at once."""
    committer = BatchCommitter(fake_store, "orders")
    inside, most = 0, 0
    counting = threading.Lock()
    both_inside = threading.Event()
    record_batch = ledger.record_batch

    def counted(*args: Any, **kwargs: Any) -> ledger.LedgerOutcome:
        nonlocal inside, most
        with counting:
            inside += 1
            most = max(most, inside)
            if inside == 2:
                both_inside.set()
        try:
            both_inside.wait(0.5)  # the first one in gives the other time to come in too
            return record_batch(*args, **kwargs)
        finally:
            with counting:
                inside -= 1

    monkeypatch.setattr(ledger, "record_batch", counted)
    failures: list[BaseException] = []

    def poller(number: int) -> None:
        try:
            doc = {**valid_doc(), "order_id": f"ORD-{number}", "user_id": f"U-{number}"}
            committer.commit([sqs_message(f"m-{number}", body_of(doc))], LEDGER_RECEIVED_AT)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=poller, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert failures == []
    assert AcceptedOrder.objects.count() == 2
    assert most == (1 if connection.vendor == "sqlite" else 2)
