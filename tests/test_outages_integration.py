"""Outages against real servers: a refusing dependency keeps the batch in hand.

A real Valkey (private to each test), the moto SQS server and the test database. Queues are
created with a 1 s visibility timeout and ``maxReceiveCount`` 2, so a consumer that released
and re-received its batch during an outage would push it into the dead-letter queue within
about two seconds; each outage here lasts several times that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from django.db import connection, connections

from orders.consumer import Consumer
from orders.models import AcceptedOrder
from orders.sqs import OrderQueue
from stats.store import AggregateStore, StoreUnavailableError
from tests.ingestion_helpers import order_body, queue_total, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

OUTAGE = 6.0  # seconds: three times maxReceiveCount x visibility timeout


@pytest.fixture
def short_queue(make_queue) -> OrderQueue:
    return make_queue(visibility_timeout=1, max_receive_count=2)


@pytest.fixture
def admin(private_redis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


class Running:
    """A consumer's ``run`` on a thread of the test process (its own DB connection)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.thread = threading.Thread(target=consumer.run, daemon=True)

    def __enter__(self) -> Consumer:
        self.thread.start()
        return self.consumer

    def __exit__(self, *exc: object) -> None:
        self.consumer.request_stop()  # as SIGTERM does
        self.thread.join(30)
        assert not self.thread.is_alive()


def consumer_for(queue: OrderQueue, store: AggregateStore) -> Consumer:
    return Consumer(queue, store, wait_time=1, visibility_timeout=1, max_backoff=0.5)


def test_redis_refusing_writes_for_long_keeps_the_batch_out_of_the_dlq(
    short_queue: OrderQueue, private_redis, admin: redis.Redis
) -> None:
    store = AggregateStore(redis.Redis.from_url(private_redis.url), prefix="oom", dedup_ttl=3600)
    short_queue.send_bodies([order_body(f"O{i}", user_id=f"U{i % 3}") for i in range(5)])
    admin.config_set("maxmemory", 1)  # noeviction: every write refused with OOM

    with Running(consumer_for(short_queue, store)) as consumer:
        time.sleep(OUTAGE)
        assert short_queue.depth().dlq_visible == 0
        assert consumer.failure is None  # OOM is an outage, not a reason to exit
        assert consumer.batches_in_hand == 1
        # The ledger took the batch; Redis and the queue still hold it.
        assert AcceptedOrder.objects.count() == 5

        admin.config_set("maxmemory", 0)
        assert wait_until(lambda: queue_total(short_queue) == 0, 20)

    assert short_queue.depth().dlq_visible == 0
    assert store.global_stats().total_orders == 5
    assert store.ingestion().applied == 5


def test_a_redis_refusing_the_script_while_the_probe_passes_holds_the_same_batch(
    short_queue: OrderQueue, private_redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat (the probe) is accepted, the apply script refused: the batch is retried
    in hand, never received again, so its receive count stays 1."""
    store = AggregateStore(redis.Redis.from_url(private_redis.url), prefix="half", dedup_ttl=3600)
    short_queue.send_bodies([order_body(f"O{i}") for i in range(3)])
    real_run = store._run_scripts
    refusing = threading.Event()
    refusing.set()

    def refuse(*args, **kwargs):
        if refusing.is_set():
            raise StoreUnavailableError("ResponseError: NOREPLICAS Not enough good replicas")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(store, "_run_scripts", refuse)
    with Running(consumer_for(short_queue, store)) as consumer:
        time.sleep(OUTAGE)
        assert short_queue.depth().dlq_visible == 0
        assert consumer.batches_in_hand == 1
        refusing.clear()
        assert wait_until(lambda: store.global_stats().total_orders == 3, 20)
        assert wait_until(lambda: queue_total(short_queue) == 0, 20)
    assert short_queue.depth().dlq_visible == 0


def test_a_database_refusing_writes_keeps_the_batch_in_hand(
    short_queue: OrderQueue, private_redis
) -> None:
    """A PostgreSQL made read-only (as after a failover) accepts connections and SELECTs
    and refuses every INSERT: the probe must write to tell."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server that can be made read-only")
    name = connection.settings_dict["NAME"]
    store = AggregateStore(redis.Redis.from_url(private_redis.url), prefix="ro", dedup_ttl=3600)
    short_queue.send_bodies([order_body(f"O{i}") for i in range(4)] + ["not json"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own_pid,) = cursor.fetchone()

    def set_read_only(on: bool) -> None:
        """New sessions start read-only (or not); every other session is ended, the
        consumer's included, as a failover would (this test's own session stays)."""
        admin = connections.create_connection("default")
        try:
            with admin.cursor() as cursor:
                cursor.execute("SET default_transaction_read_only = off")  # this session only
                value = "on" if on else "off"
                cursor.execute(
                    f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'
                )
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
                    [name, own_pid],
                )
        finally:
            admin.close()

    set_read_only(True)
    try:
        with Running(consumer_for(short_queue, store)) as consumer:
            time.sleep(OUTAGE)
            assert short_queue.depth().dlq_visible == 0
            assert consumer.failure is None
            assert store.global_stats().total_orders == 0  # Redis waits for the ledger
            set_read_only(False)
            assert wait_until(lambda: queue_total(short_queue) == 0, 30)
    finally:
        set_read_only(False)
    assert short_queue.depth().dlq_visible == 0
    assert store.global_stats().total_orders == 4
    assert AcceptedOrder.objects.count() == 4
    assert store.ingestion().rejected == 1


def test_a_consumer_started_while_its_cluster_node_is_down_waits_for_it(
    private_redis_cluster, make_queue, child_env, tmp_path, key_prefix
) -> None:
    from redis.cluster import RedisCluster

    from tests.ingestion_helpers import start_consumer, stop_consumer

    cluster = private_redis_cluster
    queue = make_queue(visibility_timeout=1, max_receive_count=2)
    queue.send_bodies([order_body("O1")])
    cluster.stop_node(0)  # the node REDIS_URL names
    env = child_env(
        REDIS_URL=cluster.url, REDIS_CLUSTER="true", REDIS_SHARDS="8",
        REDIS_KEY_PREFIX=key_prefix, REDIS_SOCKET_TIMEOUT="1",
    )  # fmt: skip
    log = tmp_path / "consumer.log"
    consumer = start_consumer(env, log, "--max-backoff", "1")
    try:
        time.sleep(3)
        assert consumer.poll() is None, log.read_text()  # waiting, not gone

        cluster.start_node(0)

        assert wait_until(lambda: queue_total(queue) == 0, 30), log.read_text()
        assert stop_consumer(consumer) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    client = RedisCluster.from_url(cluster.url)
    assert AggregateStore(client, prefix=key_prefix, shards=8).global_stats().total_orders == 1
    client.close()
