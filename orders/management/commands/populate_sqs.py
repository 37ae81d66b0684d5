"""``python manage.py populate_sqs``: send reproducible sample orders, refunds and
cancellations to the orders queue."""

from __future__ import annotations

import logging
import time
from collections import Counter
from itertools import islice
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from orders.samples import SampleGenerator
from orders.sqs import SQS_BATCH_LIMIT, OrderQueue

logger = logging.getLogger(__name__)


def ratio(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number


# The event options: (option, default, help). The defaults are the realistic mix:
# 5% of orders refunded, 2% cancelled, some events before their order, some redelivered.
EVENT_OPTIONS: tuple[tuple[str, float, str], ...] = (
    ("--refund-ratio", 0.05, "share of valid orders refunded (in whole, in part by amount or "
     "by items)"),
    ("--cancel-ratio", 0.02, "share of valid orders cancelled (never also refunded)"),
    ("--early-event-ratio", 0.05, "share of events sent before their order"),
    ("--event-duplicate-ratio", 0.02, "share of events sent twice (a redelivery)"),
    ("--event-conflict-ratio", 0.0, "share of events re-sent with the same event_id and "
     "another reason (rejected: duplicate_event_id)"),
    ("--over-refund-ratio", 0.0, "share of valid orders given a refund above their value or "
     "units (rejected: refund_exceeds_order / refund_exceeds_items)"),
)  # fmt: skip


class Command(BaseCommand):
    help = (
        "Send sample orders (valid, invalid, duplicates, conflicts) and refunds and "
        "cancellations of them (some before their order, some redelivered) to SQS in batches "
        "of 10; the same --seed sends the same messages. --count counts the orders; events "
        "come on top (--refund-ratio 0 --cancel-ratio 0: orders only)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--count", type=int, default=100, help="order messages to send (events on top)"
        )
        parser.add_argument(
            "--max-backlog",
            type=int,
            default=0,
            help="wait while the queue holds more than N messages (0 = never)",
        )
        parser.add_argument("--users", type=int, default=100, help="distinct user ids")
        parser.add_argument(
            "--days",
            type=int,
            default=30,
            help="spread order_timestamp over this many days back from today",
        )
        parser.add_argument(
            "--invalid-ratio",
            type=ratio,
            default=0.1,
            help="share of invalid orders, cycling through every code",
        )
        parser.add_argument(
            "--duplicate-ratio",
            type=ratio,
            default=0.0,
            help="share of exact re-sends of earlier orders",
        )
        parser.add_argument(
            "--conflict-ratio",
            type=ratio,
            default=0.0,
            help="share of earlier order_ids re-sent with another payload",
        )
        for option, default, text in EVENT_OPTIONS:
            parser.add_argument(
                option, type=ratio, default=default, help=f"{text} (default {default:g})"
            )
        parser.add_argument(
            "--seed", type=int, default=None, help="same seed, same orders (default: random)"
        )
        parser.add_argument("--queue", default=None, help="queue name (default: QUEUE_NAME)")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["count"] < 0 or options["users"] < 1 or options["days"] < 1:
            raise CommandError("--count must be >= 0, --users and --days >= 1")
        if options["refund_ratio"] + options["cancel_ratio"] > 1:
            raise CommandError("--refund-ratio and --cancel-ratio must add up to at most 1")
        if options["invalid_ratio"] + options["duplicate_ratio"] + options["conflict_ratio"] > 1:
            raise CommandError(
                "--invalid-ratio, --duplicate-ratio and --conflict-ratio must add up to at most 1"
            )
        seed = options["seed"] if options["seed"] is not None else time.time_ns() % 2**32
        generator = SampleGenerator(
            seed=seed,
            users=options["users"],
            days=options["days"],
            invalid_ratio=options["invalid_ratio"],
            duplicate_ratio=options["duplicate_ratio"],
            conflict_ratio=options["conflict_ratio"],
            refund_ratio=options["refund_ratio"],
            cancel_ratio=options["cancel_ratio"],
            early_event_ratio=options["early_event_ratio"],
            event_duplicate_ratio=options["event_duplicate_ratio"],
            event_conflict_ratio=options["event_conflict_ratio"],
            over_refund_ratio=options["over_refund_ratio"],
        )
        queue = OrderQueue.from_settings(options["queue"])
        queue.ensure(
            max_receive_count=settings.SQS_MAX_RECEIVE_COUNT,
            visibility_timeout=settings.SQS_VISIBILITY_TIMEOUT,
        )
        kinds: Counter[str] = Counter()
        early = 0
        started = time.monotonic()
        messages = generator.iter_messages(options["count"])
        with tqdm(unit="msg", disable=options["no_progress"], desc="sending") as bar:
            while batch := list(islice(messages, SQS_BATCH_LIMIT)):
                self._wait_for_backlog(queue, options["max_backlog"])
                queue.send_bodies([m.body for m in batch])
                kinds.update(m.kind for m in batch)
                early += sum(m.before_order for m in batch)
                bar.update(len(batch))
        elapsed = time.monotonic() - started
        total = sum(kinds.values())
        self.stdout.write(
            f"sent {total} messages to {queue.name} (seed {seed}): "
            f"valid={kinds['valid']} invalid={kinds['invalid']} "
            f"duplicates={kinds['duplicate']} conflicts={kinds['conflict']}; "
            f"refunds={kinds['refund']} cancellations={kinds['cancel']} "
            f"(before their order={early}) redelivered={kinds['event_duplicate']} "
            f"event_conflicts={kinds['event_conflict']} over_refunds={kinds['over_refund']} "
            f"in {elapsed:.1f}s ({total / elapsed if elapsed else 0:.0f} msg/s)"
        )

    @staticmethod
    def _wait_for_backlog(queue: OrderQueue, max_backlog: int) -> None:
        """Keep a slow local endpoint's queue short (moto slows down as it grows)."""
        if max_backlog <= 0:
            return
        while queue.depth().visible > max_backlog:
            time.sleep(0.2)
