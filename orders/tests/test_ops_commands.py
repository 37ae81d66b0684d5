"""pipeline_status and redrive_dlq: what on-call sees and the DLQ way back.

On moto's in-process SQS and fakeredis (fast, no servers); the whole dead-letter round trip
against the real Redis and the moto server process is tests/test_redrive_round_trip.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from moto import mock_aws

from orders.consumer import Consumer
from orders.models import RejectedOrder
from orders.sqs import OrderQueue, make_client
from orders.tests.conftest import event_body, record, sqs_message
from orders.validation import Order, validate_message
from stats.store import AggregateStore
from tests.event_helpers import apply_events, cancel, refund
from tests.ingestion_helpers import order_body

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(aws_env, settings) -> Iterator[OrderQueue]:
    settings.LOCALSTACK_URL = ""
    settings.QUEUE_NAME = "orders-ops"
    with mock_aws():
        queue = OrderQueue(make_client(endpoint_url=""), "orders-ops")
        queue.ensure(max_receive_count=5, visibility_timeout=30)
        yield queue


def closed_port_url(scheme: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


def valid_order(order_id: str, user_id: str, price: str) -> Order:
    order = validate_message(order_body(order_id, user_id, price=price))
    assert isinstance(order, Order)
    return order


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(*args: str) -> tuple[str, str]:
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue(), str(info.value)


def reject(message_id: str, codes: str, status: str = RejectedOrder.Status.NEW) -> RejectedOrder:
    return RejectedOrder.objects.create(
        message_id=message_id,
        body=b"{}",
        reason_codes=codes,
        received_at=datetime(2025, 8, 9, tzinfo=UTC),
        status=status,
    )


def send_to_dlq(queue: OrderQueue, bodies: list[str], **attributes: Any) -> None:
    for start in range(0, len(bodies), 10):
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
        ]
        if attributes:
            for entry in entries:
                entry["MessageAttributes"] = attributes
        queue.client.send_message_batch(QueueUrl=queue.dlq_url, Entries=entries)


def drain(queue: OrderQueue, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while batch := queue.receive_from(url, wait_time=0, visibility_timeout=60):
        got += batch
    return got


# --- pipeline_status -----------------------------------------------------------------------
@pytest.fixture
def busy_pipeline(queue: OrderQueue, fake_store: AggregateStore) -> AggregateStore:
    """Two applied orders, two rejections counted, three queued, one dead-lettered."""
    fake_store.apply_orders(
        [valid_order("A", "U1", "10.25"), valid_order("B", "U2", "0.10")], received=4
    )
    fake_store.record_rejections({"m1": ("invalid_json",), "m2": ("value_mismatch",)})
    fake_store.heartbeat()
    queue.send_bodies(["x", "y", "z"])
    send_to_dlq(queue, ["poison"])
    reject("m1", ",invalid_json,")
    reject("m2", ",value_mismatch,missing_field,", RejectedOrder.Status.REVIEWED)
    return fake_store


def test_status_json_reports_every_source_and_exits_zero(busy_pipeline: AggregateStore) -> None:
    out, _ = run("pipeline_status", "--json")

    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["problems"] == []
    assert (doc["queue"], doc["dlq"]) == ("orders-ops", "orders-ops-dlq")
    assert doc["sqs"] == {"visible": 3, "in_flight": 0, "delayed": 0, "dlq_visible": 1}
    assert doc["totals"] == {
        "orders": 2,
        "revenue_cents": 1035,
        "gross_revenue_cents": 1035,
        "refunded_cents": 0,
        "cancelled_orders": 0,
        "users": 2,
        "revenue": "10.35",
        "gross_revenue": "10.35",
        "refunded": "0.00",
    }
    assert doc["ingestion"] == {
        "received": 4,
        "applied": 2,
        "duplicates": 0,
        "rejected": 2,
        "rejected_by_code": {"invalid_json": 1, "value_mismatch": 1},
        "events_received": 0,
        "events_applied": 0,
        "events_duplicates": 0,
    }
    assert doc["rejected_db"] == {
        "total": 2,
        "by_status": {"new": 1, "reviewed": 1, "resubmitted": 0},
        "by_code": {"invalid_json": 1, "missing_field": 1, "value_mismatch": 1},
    }
    consumer = doc["consumer"]
    assert consumer["stale"] is False
    assert consumer["lag_s"] < 5
    assert consumer["heartbeat_at"].endswith("Z")
    assert consumer["last_batch_at"].endswith("Z")
    # fakeredis has no INFO: reachable, version and policy unknown (the consumer warns).
    assert doc["redis_nodes"] == [
        {"node": "localhost:6379", "reachable": True, "version": None, "eviction_policy": None}
    ]
    assert doc["reconcile"] is None
    assert doc["waiting_events"] == {
        "count": 0, "orphans": 0, "orphan_after_days": 14, "oldest_at": None,
        "oldest_age_s": None,
    }  # fmt: skip


def test_status_reports_the_last_reconcile_and_its_differences(
    busy_pipeline: AggregateStore,
) -> None:
    busy_pipeline.save_reconcile_report(
        {"checked_at": "2025-09-01T12:00:00Z", "orders": 2, "differences": 3, "repaired": 0}
    )
    out, error = run_failing("pipeline_status", "--json")
    doc = json.loads(out)
    assert "difference" in error
    assert doc["reconcile"]["differences"] == 3
    assert doc["problems"] == [
        "the last reconcile_stats (2025-09-01T12:00:00Z) found 3 difference(s) between Redis "
        "and the ledger"
    ]
    table, _ = run_failing("pipeline_status")
    assert "2025-09-01T12:00:00Z    2 orders checked, 3 difference(s)" in table


def test_status_table_is_readable(busy_pipeline: AggregateStore) -> None:
    out, _ = run("pipeline_status")

    lines = out.splitlines()
    assert lines[0].startswith("orderpipe pipeline status at ")
    assert "  visible                            3" in lines
    assert "  dead-letter (DLQ)                  1" in lines
    assert "  revenue (net)                  10.35" in lines
    assert "  gross revenue                  10.35" in lines
    assert "  refunded                        0.00" in lines
    assert "  events received                    0" in lines
    assert "  code                   Redis counter   DB rows" in lines
    assert "  invalid_json                       1         1" in lines
    assert "  missing_field                      0         1" in lines
    assert "  reviewed                           1" in lines
    assert any(line.startswith("  lag ") and "ok (stale after 120s)" in line for line in lines)
    assert lines[-1] == "OK: SQS, Redis and the database answer; the consumer is alive."


def test_status_totals_are_net_of_refunds_with_gross_refunds_and_cancellations(
    busy_pipeline: AggregateStore,
) -> None:
    a, b = valid_order("A", "U1", "10.25"), valid_order("B", "U2", "0.10")
    at = datetime(2025, 8, 10, tzinfo=UTC)
    apply_events(busy_pipeline, [refund("E1", a, 125, at), cancel("E2", b, 10, at)])

    doc = json.loads(run("pipeline_status", "--json")[0])
    lines = run("pipeline_status")[0].splitlines()

    assert doc["totals"] == {
        "orders": 2,
        "revenue_cents": 900,
        "gross_revenue_cents": 1035,
        "refunded_cents": 135,
        "cancelled_orders": 1,
        "users": 2,
        "revenue": "9.00",
        "gross_revenue": "10.35",
        "refunded": "1.35",
    }
    assert (doc["ingestion"]["events_received"], doc["ingestion"]["events_applied"]) == (2, 2)
    assert "  orders                             2" in lines
    assert "  cancelled orders                   1" in lines
    assert "  revenue (net)                   9.00" in lines
    assert "  gross revenue                  10.35" in lines
    assert "  refunded                        1.35" in lines
    assert "  events applied                     2" in lines


def test_status_shows_events_waiting_for_their_order_and_the_orphans(
    busy_pipeline: AggregateStore, settings: Any
) -> None:
    settings.ORPHAN_EVENT_DAYS = 10
    now = datetime.now(UTC)
    for n, days in enumerate((15, 11, 2)):
        body = event_body(f"EV-{n}", order_id=f"NEVER-{n}", amount="1.00")
        record(sqs_message(f"m-ev-{n}", body), received_at=now - timedelta(days=days))

    doc = json.loads(run("pipeline_status", "--json")[0])
    table = run("pipeline_status")[0].splitlines()

    assert doc["ok"] is True  # an order that never came is shown, not a failure
    waiting = doc["waiting_events"]
    assert (waiting["count"], waiting["orphans"], waiting["orphan_after_days"]) == (3, 2, 10)
    assert waiting["oldest_at"] == (now - timedelta(days=15)).isoformat().replace("+00:00", "Z")
    assert 15 * 86400 <= waiting["oldest_age_s"] < 15 * 86400 + 60
    assert f"  waiting                            3  oldest {waiting['oldest_at']}" in table
    assert (
        "  orphans                            2  waiting over 10 days for an order that never "
        "came" in table
    )


def test_stale_heartbeat_exits_non_zero_and_says_so(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    past = AggregateStore(
        fake_store.client, prefix=fake_store.prefix, clock=lambda: time.time() - 600
    )
    past.heartbeat()

    out, error = run_failing("pipeline_status", "--stale-after", "300")

    assert error.startswith("consumer heartbeat stale: last seen 600s ago (> 300s)")
    assert "STALE (stale after 300s)" in out
    assert "PROBLEMS:" in out


def test_a_dead_consumer_among_live_ones_is_listed_stale(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    dead = AggregateStore(
        fake_store.client, prefix=fake_store.prefix, clock=lambda: time.time() - 600
    )
    dead.consumer_id = "host-a:111"
    dead.heartbeat()  # killed ten minutes ago: never said goodbye
    alive = AggregateStore(fake_store.client, prefix=fake_store.prefix)
    alive.consumer_id = "host-b:222"
    alive.heartbeat()

    out, _ = run("pipeline_status", "--stale-after", "300")  # one consumer is alive: exit 0
    doc = json.loads(run("pipeline_status", "--json", "--stale-after", "300")[0])

    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if "host-" in line}
    assert rows == {"host-a:111": "STALE", "host-b:222": "ok"}
    processes = {p["id"]: p["stale"] for p in doc["consumer"]["processes"]}
    assert processes == {"host-a:111": True, "host-b:222": False}


def beat(store: AggregateStore, consumer_id: str, age: float = 0.0) -> None:
    """``consumer_id``'s heartbeat, ``age`` seconds ago."""
    stamper = AggregateStore(store.client, prefix=store.prefix, clock=lambda: time.time() - age)
    stamper.consumer_id = consumer_id
    stamper.heartbeat()


def test_consumer_host_judges_that_hosts_worker_not_the_newest_of_any(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    beat(fake_store, "worker-1:1", age=600)  # hung: stopped stamping ten minutes ago
    beat(fake_store, "worker-2:1")  # alive beside it

    out, error = run_failing(
        "pipeline_status", "--stale-after", "90", "--consumer-host", "worker-1"
    )
    healthy, _ = run("pipeline_status", "--stale-after", "90", "--consumer-host", "worker-2")
    doc = json.loads(
        run("pipeline_status", "--json", "--stale-after", "90", "--consumer-host", "worker-2")[0]
    )

    assert error == "consumer heartbeat stale on worker-1: last seen 600s ago (> 90s)"
    assert "STALE (stale after 90s, consumers on worker-1 only)" in out
    assert healthy.splitlines()[-1] == (
        "OK: SQS, Redis and the database answer; the consumer is alive."
    )
    assert (doc["ok"], doc["consumer"]["host"], doc["consumer"]["stale"]) == (
        True,
        "worker-2",
        False,
    )
    assert doc["consumer"]["lag_s"] < 5
    # Without --consumer-host the newest heartbeat of any worker hides the hung one.
    run("pipeline_status", "--stale-after", "90")


def test_consumer_host_without_a_consumer_there_is_stale(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    beat(fake_store, "worker-2:1")

    _, error = run_failing("pipeline_status", "--consumer-host", "worker-1")

    assert error == "consumer heartbeat stale: no consumer on worker-1 has ever reported"


def test_a_restarted_consumer_on_the_host_makes_it_healthy_again(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    beat(fake_store, "worker-1:7", age=600)  # the process that crashed
    beat(fake_store, "worker-1:8")  # its replacement in the same container

    run("pipeline_status", "--stale-after", "90", "--consumer-host", "worker-1")


def test_consumer_host_matches_the_id_the_consumer_gives_itself(
    queue: OrderQueue, fake_store: AggregateStore
) -> None:
    Consumer(queue, fake_store, wait_time=0).process_batch()  # an empty receive beats

    run("pipeline_status", "--consumer-host", socket.gethostname())
    _, error = run_failing("pipeline_status", "--consumer-host", "elsewhere")
    assert error == "consumer heartbeat stale: no consumer on elsewhere has ever reported"


def test_no_consumer_ever_is_stale(queue: OrderQueue, fake_store: AggregateStore) -> None:
    out, error = run_failing("pipeline_status", "--json")

    assert error == "consumer heartbeat stale: no consumer has ever reported"
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["consumer"]["stale"] is True
    assert doc["consumer"]["lag_s"] is None


def test_redis_down_is_named_and_the_rest_still_shown(
    queue: OrderQueue, settings, busy_pipeline: AggregateStore
) -> None:
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": closed_port_url("redis")}
    }
    settings.CACHES["default"]["OPTIONS"] = {
        k: v
        for k, v in settings.CACHES["default"]["OPTIONS"].items()
        if k != "CONNECTION_POOL_KWARGS"
    }

    out, error = run_failing("pipeline_status", "--json")

    assert error.startswith("Redis unreachable: ConnectionError")
    doc = json.loads(out)
    assert doc["sqs"]["visible"] == 3
    assert doc["totals"] is None and doc["consumer"] is None
    assert doc["rejected_db"]["total"] == 2


def test_sqs_down_is_named(settings, fake_store: AggregateStore, aws_env) -> None:
    settings.LOCALSTACK_URL = closed_port_url("http")
    fake_store.heartbeat()

    out, error = run_failing("pipeline_status")

    assert error.startswith("SQS unreachable: Could not connect to the endpoint URL")
    assert "SQS  queue orders" in out
    assert out.splitlines()[3] == "  (unavailable)"


def test_missing_queue_is_named(queue: OrderQueue, fake_store: AggregateStore) -> None:
    fake_store.heartbeat()

    _, error = run_failing("pipeline_status", "--queue", "nope")

    assert error == "SQS queue nope does not exist"


# --- redrive_dlq ---------------------------------------------------------------------------
def test_redrive_moves_everything_with_attributes(queue: OrderQueue) -> None:
    bodies = [f"body-{i}" for i in range(25)]
    send_to_dlq(queue, bodies, origin={"DataType": "String", "StringValue": "test"})

    out, err = run("redrive_dlq")

    assert out == "moved 25 message(s) from orders-ops-dlq to orders-ops\n"
    assert err == ""
    moved = drain(queue, queue.url)
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    assert {m["MessageAttributes"]["origin"]["StringValue"] for m in moved} == {"test"}
    assert queue.depth().dlq_visible == 0


def test_redrive_max_moves_only_that_many(queue: OrderQueue) -> None:
    send_to_dlq(queue, [f"b{i}" for i in range(13)])

    out, _ = run("redrive_dlq", "--max", "12")

    assert out == "moved 12 message(s) from orders-ops-dlq to orders-ops\n"
    assert len(drain(queue, queue.url)) == 12
    assert len(drain(queue, queue.dlq_url)) == 1


def test_redrive_dry_run_counts_and_moves_nothing(queue: OrderQueue) -> None:
    send_to_dlq(queue, ['{"order_id": "<b>x</b>"}'] + [f"b{i}" for i in range(14)])

    out, _ = run("redrive_dlq", "--dry-run", "--show", "2")

    lines = out.splitlines()
    assert len(lines) == 4
    assert all(" receives=1 " in line for line in lines[:2])
    assert lines[2] == "  … and 13 more"
    assert lines[3] == "dry run: would move 15 message(s) from orders-ops-dlq to orders-ops"
    # Nothing moved, and every message is visible again at once (not after a timeout).
    assert queue.depth().visible == 0
    assert len(drain(queue, queue.dlq_url)) == 15


def test_redrive_dry_run_respects_max(queue: OrderQueue) -> None:
    send_to_dlq(queue, [f"b{i}" for i in range(5)])

    out, _ = run("redrive_dlq", "--dry-run", "--max", "3", "--show", "0")

    assert out == (
        "dry run: would move 3 message(s) from orders-ops-dlq to orders-ops (limited by --max 3)\n"
    )


def test_redrive_of_an_empty_dlq_moves_nothing(queue: OrderQueue) -> None:
    out, _ = run("redrive_dlq")

    assert out == "moved 0 message(s) from orders-ops-dlq to orders-ops\n"


def test_redrive_deletes_only_what_sqs_accepted(
    queue: OrderQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_to_dlq(queue, [f"b{i}" for i in range(4)])
    real_send = OrderQueue.send_messages_to

    def send_half(self: OrderQueue, url: str, messages: list[dict[str, Any]]) -> set[str]:
        return real_send(self, url, messages[: len(messages) // 2])

    monkeypatch.setattr(OrderQueue, "send_messages_to", send_half)

    out, error = run_failing("redrive_dlq")

    assert out == "moved 2 message(s) from orders-ops-dlq to orders-ops\n"
    assert error == "SQS refused 2 message(s); they stay in orders-ops-dlq, run again"
    assert len(drain(queue, queue.url)) == 2
    assert len(drain(queue, queue.dlq_url)) == 2  # refused ones visible again at once


def test_redrive_without_queues_fails_clearly(queue: OrderQueue) -> None:
    _, error = run_failing("redrive_dlq", "--queue", "nope")

    assert error.startswith("queue nope or its dead-letter queue nope-dlq does not exist")
