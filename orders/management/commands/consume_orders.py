"""``python manage.py consume_orders``: long-poll the orders queue into the ledger and the Redis
aggregates."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orderpipe.api.access import log_access_mode
from orders import consumer as consumer_module
from orders import outages
from orders.consumer import Consumer
from orders.sqs import OrderQueue
from stats.store import AggregateStore, StoreUnavailableError, get_store

logger = logging.getLogger("orders.consumer")
T = TypeVar("T")


class Command(BaseCommand):
    help = (
        "Consume orders from SQS: validate, record in the ledger, apply to Redis exactly once, "
        "record rejects."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=None, help="queue name (default: QUEUE_NAME)")
        parser.add_argument(
            "--wait-time",
            type=int,
            default=20,
            choices=range(0, 21),
            metavar="0-20",
            help="long-poll seconds per receive (default 20)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=10,
            choices=range(1, 11),
            metavar="1-10",
            help="messages per receive (default 10)",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=consumer_module.DEFAULT_POLLERS,  # read here, so a test may change it
            help=f"concurrent pollers (default {consumer_module.DEFAULT_POLLERS})",
        )
        parser.add_argument(
            "--max-messages", type=int, default=None, help="exit after handling this many messages"
        )
        parser.add_argument(
            "--until-empty", action="store_true", help="exit 0 once the queue reports no messages"
        )
        parser.add_argument(
            "--once", action="store_true", help="handle at most one batch, then exit"
        )
        parser.add_argument(
            "--visibility-timeout",
            type=int,
            default=settings.SQS_VISIBILITY_TIMEOUT,
            help="visibility timeout of a created queue and of heartbeats",
        )
        parser.add_argument(
            "--max-receive-count",
            type=int,
            default=settings.SQS_MAX_RECEIVE_COUNT,
            help="receives before a message moves to the DLQ (new queues)",
        )
        parser.add_argument(
            "--max-backoff",
            type=float,
            default=30.0,
            help="longest wait between probes of a failed dependency",
        )
        parser.add_argument(
            "--log-interval", type=float, default=10.0, help="seconds between throughput lines"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Signals are honoured from the start, also while Redis or SQS is not up yet.
        stopping = Stopping()
        self._install_signal_handlers(stopping)
        log_access_mode()  # an open API is said in the consumer's log too
        queue = OrderQueue.from_settings(options["queue"])
        # A cluster client finds its nodes when it is built: wait for them like for the rest.
        backoff = outages.Outages(max_delay=options["max_backoff"])
        store = self._until_answered(backoff, stopping.stop, get_store)
        if store is None:
            return
        consumer = Consumer(
            queue,
            store,
            batch_size=options["batch_size"],
            wait_time=options["wait_time"],
            visibility_timeout=options["visibility_timeout"],
            max_messages=options["max_messages"],
            until_empty=options["until_empty"],
            max_backoff=options["max_backoff"],
            log_interval=options["log_interval"],
            stop=stopping.stop,
            interrupted=stopping.interrupted,
        )
        self._check_redis(consumer, options)
        self._ensure_queue(consumer, options)
        if consumer.stop.is_set():
            return
        logger.info(
            "consuming %s (wait=%ss batch=%d threads=%d visibility=%ss dedup_ttl=%ss "
            "redis prefix=%r)",
            queue.url,
            options["wait_time"],
            consumer.batch_size,
            options["threads"],
            options["visibility_timeout"],
            settings.ORDER_DEDUP_TTL,
            settings.REDIS_KEY_PREFIX,
        )
        if options["once"]:
            try:
                consumer.process_batch()
            except Exception as exc:
                if outages.classify(exc) is None:
                    raise
                logger.error("batch not committed, nothing deleted: %s", exc)
                raise SystemExit(1) from exc
            return
        # What start-up made (Django, the boto3 models: some 135,000 objects) lives as long
        # as the process: frozen, a full collection scans only what the loop made since, a
        # pause of ~15 ms where it was ~50 ms (an order's freshness p99; docs/benchmarks.md).
        gc.freeze()
        consumer.run(threads=max(1, options["threads"]))
        if consumer.failure is not None:
            raise CommandError(f"consumer stopped on an error: {consumer.failure}")
        logger.info("consumer stopped")

    @staticmethod
    def _until_answered(
        backoff: outages.Outages, stop: threading.Event, step: Callable[[], T]
    ) -> T | None:
        """``step()``'s result once the dependency it needs answers, waited for like an outage
        of a running consumer (the same backoff, one ERROR, one INFO when it answers); a
        failure that waiting cannot cure (credentials, permissions) stops with exit 1. None
        when stopped first."""
        if stop.is_set():
            return None
        try:
            return backoff.retry(step, stop, time.monotonic)
        except Exception as exc:
            failure = outages.classify(exc)
            if failure is None:
                raise
            raise CommandError(f"{failure.dependency}: {exc}") from exc

    def _check_redis(self, consumer: Consumer, options: dict[str, Any]) -> None:
        """Before receiving anything: a Redis that would evict marks or aggregates, or one too
        old for the scripts, is refused (exit 1); so is a layout other than the one the
        aggregates were built for (another ``REDIS_SHARDS``, or an earlier version's keys),
        with a message that says what to do."""
        store = consumer.store
        servers = self._until_answered(
            consumer.outages, consumer.stop, lambda: _reachable_servers(store)
        )
        for server in servers or []:
            problems = server.problems()
            if problems:
                raise CommandError(problems[0])
            if server.eviction_policy is None:
                logger.warning(
                    "Redis %s does not report its maxmemory-policy in INFO; make sure it is "
                    "noeviction, or idempotency marks and aggregates may be evicted",
                    server.node,
                )
        try:
            self._until_answered(consumer.outages, consumer.stop, store.claim_layout)
        except CommandError as exc:  # another layout, retired or an earlier version's
            raise CommandError(str(exc.__cause__ or exc)) from exc

    def _ensure_queue(self, consumer: Consumer, options: dict[str, Any]) -> None:
        """Create the queue and DLQ when missing; wait (with backoff) for SQS to answer."""
        self._until_answered(
            consumer.outages,
            consumer.stop,
            lambda: consumer.queue.ensure(
                max_receive_count=options["max_receive_count"],
                visibility_timeout=options["visibility_timeout"],
            ),
        )

    @staticmethod
    def _install_signal_handlers(consumer: Consumer | Stopping) -> None:
        """First SIGINT/SIGTERM: finish the batch in hand and exit 0. Second: exit at once."""

        signals = 0  # not consumer.stop: the consumer also stops itself (budget, empty queue)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                logger.warning("second %s: exiting now", signal.Signals(signum).name)
                os._exit(1)
            logger.info("%s received: finishing the batch in hand", signal.Signals(signum).name)
            consumer.request_stop()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)


class Stopping:
    """The two events a signal sets (see ``Consumer``), made before the consumer exists."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.interrupted = threading.Event()

    def request_stop(self) -> None:
        self.interrupted.set()
        self.stop.set()


def _reachable_servers(store: AggregateStore) -> list[Any]:
    """Every primary's INFO; raises (a transient StoreUnavailableError) while one is down."""
    servers = store.servers()
    for server in servers:
        if not server.reachable:
            raise StoreUnavailableError(f"{server.node}: {server.error}")
    return servers
