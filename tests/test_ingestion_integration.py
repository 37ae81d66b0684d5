"""What consume_orders guarantees, against real processes: a Redis server, a moto SQS server,
consumer children.

Queues stay short (moto reads every message of a queue for each request's queue attributes, so
it slows down as a queue grows: 362 messages/s drained at an empty queue, 17 at 1,000), visibility
timeouts are 1-2 s so redeliveries happen within the test.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from devtools.servers import prefix_spread_over_every_primary
from orders.consumer import Consumer
from orders.models import RejectedOrder
from orders.samples import SampleGenerator, poison_bodies
from stats.store import AggregateStore
from tests.ingestion_helpers import (
    Feeder,
    kill_leftover_consumers,
    mismatches,
    order_body,
    prefix_keys,
    queue_total,
    start_consumer,
    stop_consumer,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TODAY = date(2025, 8, 31)


@pytest.fixture(autouse=True)
def no_consumer_outlives_its_test() -> Iterator[None]:
    yield
    kill_leftover_consumers()


RANGE = (TODAY - timedelta(days=40), TODAY)


def generate(count: int, seed: int, **ratios: float) -> list:
    generator = SampleGenerator(seed=seed, users=50, days=30, today=TODAY, **ratios)
    return generator.messages(count)


class SimulatedCrashError(Exception):
    """Stands for the process dying between the Redis commit and the SQS delete."""


def test_redelivered_order_is_counted_once(make_queue, store: AggregateStore) -> None:
    queue = make_queue(visibility_timeout=1)
    queue.send_bodies([order_body("ORD-1", price="10.50")])
    crashing = Consumer(queue, store, wait_time=1, visibility_timeout=1)

    def crash(_handles):
        raise SimulatedCrashError

    crashing.queue = type(queue)(queue.client, queue.name)
    crashing.queue.delete = crash  # type: ignore[method-assign]
    assert crashing.process_batch().applied == 1  # committed; the delete never happened
    assert store.global_stats().total_orders == 1

    time.sleep(1.2)  # the visibility timeout expires: SQS redelivers
    second = Consumer(queue, store, wait_time=2, visibility_timeout=1)
    result = second.process_batch()

    assert (result.received, result.applied, result.duplicates) == (1, 0, 1)
    assert store.global_stats().total_orders == 1
    assert store.global_stats().total_revenue_cents == 1050
    assert queue_total(queue) == 0


def test_conflicting_payload_is_rejected_and_identical_resend_is_counted_once(
    sqs_queue, store: AggregateStore
) -> None:
    original = order_body("ORD-7", price="5.00")
    sqs_queue.send_bodies([original, original])
    sqs_queue.send_bodies([order_body("ORD-7", price="6.00")])
    consumer = Consumer(sqs_queue, store, wait_time=1, until_empty=True)
    consumer.run_worker()

    assert store.global_stats().total_orders == 1
    assert store.global_stats().total_revenue_cents == 500
    rows = list(RejectedOrder.objects.all())
    assert len(rows) == 1
    assert "duplicate_order_id" in rows[0].reason_codes
    assert rows[0].order_id == "ORD-7"
    assert store.ingestion().duplicates == 1
    assert queue_total(sqs_queue) == 0


def test_database_failure_deletes_nothing_and_retries(make_queue, store: AggregateStore) -> None:
    from django.db import OperationalError

    queue = make_queue(visibility_timeout=1)
    queue.send_bodies(['{"not": "an order"}', order_body("ORD-2")])

    def database_down(_records):
        raise OperationalError("database is down")

    failing = Consumer(
        queue, store, wait_time=1, visibility_timeout=1, record_rejections=database_down
    )
    with pytest.raises(OperationalError):
        failing.process_batch()
    assert queue_total(queue) == 2  # nothing deleted

    time.sleep(1.2)
    Consumer(queue, store, wait_time=1, until_empty=True).run_worker()
    assert RejectedOrder.objects.count() == 1
    assert store.global_stats().total_orders == 1
    assert queue_total(queue) == 0


def test_poison_messages_are_recorded_once_and_nothing_is_stuck(
    sqs_queue, store, child_env, tmp_path
) -> None:
    poison = poison_bodies()
    sqs_queue.send_bodies([*poison.values(), order_body("ORD-OK")])
    consumer = start_consumer(child_env(), tmp_path / "consumer.log", "--until-empty")
    assert consumer.wait(90) == 0, (tmp_path / "consumer.log").read_text()

    assert RejectedOrder.objects.count() == len(poison)
    assert store.global_stats().total_orders == 1
    assert queue_total(sqs_queue) == 0
    assert sqs_queue.depth().dlq_visible == 0


def test_sigterm_finishes_the_batch_and_exits_zero(sqs_queue, store, child_env, tmp_path) -> None:
    log = tmp_path / "consumer.log"
    consumer = start_consumer(child_env(), log, "--wait-time", "20")
    assert wait_until(lambda: "consuming" in log.read_text(), 30), log.read_text()
    sqs_queue.send_bodies([order_body(f"ORD-{i}") for i in range(10)])
    assert wait_until(lambda: store.global_stats().total_orders == 10, 30)

    started = time.monotonic()
    assert stop_consumer(consumer) == 0
    assert time.monotonic() - started < 10  # does not sit out the 20 s long poll
    assert "finishing the batch in hand" in log.read_text()
    assert queue_total(sqs_queue) == 0


def test_kill_9_mid_run_then_restart_matches_the_oracle(
    make_queue, store, child_env, tmp_path
) -> None:
    queue = make_queue(visibility_timeout=2)
    messages = generate(2000, seed=5, invalid_ratio=0.1, duplicate_ratio=0.05)
    feeder = Feeder(queue, [m.body for m in messages])
    feeder.start()
    log = tmp_path / "consumer.log"
    first = start_consumer(child_env(), log, "--threads", "2", "--visibility-timeout", "2")
    assert wait_until(lambda: store.global_stats().total_orders >= 500, 120), log.read_text()
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    second = start_consumer(child_env(), log, "--threads", "2", "--visibility-timeout", "2")
    feeder.join(240)
    assert feeder.error is None and feeder.sent == len(messages)
    assert wait_until(lambda: queue_total(queue) == 0, 120), log.read_text()
    assert stop_consumer(second) == 0

    assert mismatches(store, messages, RANGE) == []
    invalid = sum(1 for m in messages if m.kind == "invalid")
    assert RejectedOrder.objects.count() == invalid


def run_two_consumers(queue, messages, env: dict[str, str], tmp_path, midway=None) -> None:
    """Feed ``messages`` to ``queue`` while two consumer processes (``env``) drain it;
    ``midway()`` runs once they are under way. Returns with the queue drained and both
    consumers stopped with exit 0 (the autouse fixture kills them if an assert fails)."""
    feeder = Feeder(queue, [m.body for m in messages])
    feeder.start()
    consumers = [
        start_consumer(env, tmp_path / f"c{i}.log", "--visibility-timeout", "2") for i in range(2)
    ]
    if midway is not None:
        midway()
    feeder.join(240)
    assert feeder.error is None
    assert wait_until(lambda: queue_total(queue) == 0, 120), (tmp_path / "c0.log").read_text()
    assert [stop_consumer(c) for c in consumers] == [0, 0]


def test_two_consumer_processes_count_exactly(make_queue, store, child_env, tmp_path) -> None:
    queue = make_queue(visibility_timeout=2)
    messages = generate(800, seed=11, invalid_ratio=0.05, duplicate_ratio=0.05)
    run_two_consumers(queue, messages, child_env(), tmp_path)

    assert mismatches(store, messages, RANGE) == []
    both_worked = all("throughput" in (tmp_path / f"c{i}.log").read_text() for i in range(2))
    assert both_worked


def test_redis_outage_deletes_nothing_then_recovers(
    settings, private_redis, make_queue, child_env, tmp_path, key_prefix
) -> None:
    import redis

    queue = make_queue(visibility_timeout=2)
    store = AggregateStore(redis.Redis.from_url(private_redis.url), prefix=key_prefix)
    messages = generate(300, seed=3, invalid_ratio=0.0)
    log = tmp_path / "consumer.log"
    env = child_env(
        REDIS_URL=private_redis.url, REDIS_KEY_PREFIX=key_prefix, REDIS_SOCKET_TIMEOUT="1"
    )
    consumer = start_consumer(env, log, "--max-backoff", "1", "--visibility-timeout", "2")
    queue.send_bodies([m.body for m in messages[:100]])
    assert wait_until(lambda: store.global_stats().total_orders >= 50, 60), log.read_text()

    private_redis.stop()
    queue.send_bodies([m.body for m in messages[100:]])
    time.sleep(3)  # the consumer receives, fails to commit, backs off; visibility expires
    left = queue_total(queue)
    time.sleep(3)
    assert queue_total(queue) == left >= 200  # nothing deleted while Redis is down
    assert consumer.poll() is None  # and no crash

    private_redis.start()
    assert wait_until(lambda: queue_total(queue) == 0, 90), log.read_text()
    assert stop_consumer(consumer) == 0

    assert mismatches(store, messages, RANGE) == []
    text = log.read_text()
    assert text.count("Redis unavailable") == 1
    assert "Redis is back" in text


def test_consumer_drains_more_messages_than_one_receive(sqs_queue, store) -> None:
    sqs_queue.send_bodies([order_body(f"ORD-{i}", user_id=f"U{i % 3}") for i in range(25)])
    consumer = Consumer(sqs_queue, store, wait_time=1, until_empty=True)
    consumer.run_worker()
    assert store.global_stats().total_orders == 25
    assert store.global_stats().unique_users == 3
    assert queue_total(sqs_queue) == 0


def test_second_signal_exits_at_once_while_a_batch_hangs(
    sqs_queue, private_redis, child_env, tmp_path, key_prefix
) -> None:
    log = tmp_path / "consumer.log"
    env = child_env(REDIS_URL=private_redis.url, REDIS_SOCKET_TIMEOUT="60")
    consumer = start_consumer(env, log)
    assert wait_until(lambda: "consuming" in log.read_text(), 30), log.read_text()
    private_redis.process.send_signal(signal.SIGSTOP)  # Redis hangs: the batch cannot commit
    try:
        sqs_queue.send_bodies([order_body("ORD-HANG")])
        assert wait_until(lambda: sqs_queue.depth().in_flight == 1, 15)
        consumer.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert consumer.poll() is None  # still finishing the batch in hand
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(5) == 1
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    assert "second SIGTERM: exiting now" in log.read_text()


def test_a_rebuild_in_the_middle_of_a_consumer_run_loses_and_doubles_nothing(
    make_queue, store, child_env, tmp_path
) -> None:
    """Two consumer processes keep ingesting while rebuild_stats derives a new generation
    from the ledger: they hold their batches during the lock, then apply them against the
    new generation; afterwards every aggregate equals the oracle and reconcile agrees."""
    from django.core.management import call_command

    def rebuild_midway() -> None:
        assert wait_until(lambda: store.global_stats().total_orders >= 300, 120)
        call_command("rebuild_stats", "--no-progress")
        assert store.live_generations() == [1]

    queue = make_queue(visibility_timeout=2)
    messages = generate(1200, seed=21, invalid_ratio=0.05, duplicate_ratio=0.05)
    run_two_consumers(queue, messages, child_env(), tmp_path, midway=rebuild_midway)

    assert mismatches(store, messages, RANGE) == []
    call_command("reconcile_stats", "--no-progress")  # raises (exit 1) on a difference

    # Redis emptied (a lost disk, a FLUSHALL): the ledger brings every aggregate back.
    for key in store.client.scan_iter(match=f"{store.prefix}:*"):
        store.client.delete(key)
    call_command("rebuild_stats", "--no-progress")
    assert mismatches(store, messages, RANGE) == []


def test_two_consumers_on_a_redis_cluster_with_eight_shards_match_the_oracle(
    make_queue, live_redis_cluster, redis_cluster, child_env, tmp_path, key_prefix
) -> None:
    """REDIS_CLUSTER=true, REDIS_SHARDS=8 on a real 3-primary Valkey cluster: every script's
    keys share one hash slot, the shards spread over all three primaries, and the merged
    reads equal the oracle."""
    client = live_redis_cluster
    prefix = prefix_spread_over_every_primary(client, f"{key_prefix}-", 8)
    store = AggregateStore(client, prefix=prefix, shards=8)
    queue = make_queue(visibility_timeout=2)
    messages = generate(800, seed=13, invalid_ratio=0.05, duplicate_ratio=0.05)
    env = child_env(
        REDIS_URL=redis_cluster.url, REDIS_CLUSTER="true", REDIS_SHARDS="8", REDIS_KEY_PREFIX=prefix
    )
    try:
        run_two_consumers(queue, messages, env, tmp_path)

        assert mismatches(store, messages, RANGE) == []
        keys = prefix_keys(client, prefix)
        nodes = {client.get_node_from_key(key).name for key in keys}
        assert nodes == {node.name for node in client.get_primaries()}
        assert len(nodes) == 3
    finally:
        for key in prefix_keys(client, prefix):
            client.delete(key)
