"""``python manage.py redrive_dlq``: move messages from ``<QUEUE_NAME>-dlq`` back to the queue.

Batches of ten: receive from the DLQ, SendMessageBatch to the orders queue (body and message
attributes unchanged), then DeleteMessageBatch from the DLQ only for the entries SQS accepted.
A crash between send and delete leaves a copy in both queues, which is harmless: the consumer
applies an order once whatever SQS does. Entries SQS refused are made visible again at once.

``--dry-run`` walks the DLQ without moving anything: it holds what it received invisible only
while it counts (so no message is counted twice), then makes all of it visible again.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.sqs import SQS_BATCH_LIMIT, OrderQueue

logger = logging.getLogger(__name__)

PEEK_CHARS = 120


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _peek(message: dict[str, Any]) -> str:
    body = message.get("Body", "")
    shown = body[:PEEK_CHARS].encode("unicode_escape").decode("ascii")
    more = f"… ({len(body)} chars)" if len(body) > PEEK_CHARS else ""
    receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    return f"{message['MessageId']}  receives={receives}  {shown}{more}"


class Command(BaseCommand):
    help = "Move messages from the dead-letter queue back to the orders queue."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=None, help="queue name (default: QUEUE_NAME)")
        parser.add_argument(
            "--max",
            type=_positive,
            default=None,
            metavar="N",
            help="move at most N messages (default: all)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="count and show the messages that would move; move nothing",
        )
        parser.add_argument(
            "--show",
            type=int,
            default=10,
            metavar="N",
            help="with --dry-run, print the first N messages (default 10)",
        )
        parser.add_argument(
            "--visibility-timeout",
            type=_positive,
            default=60,
            metavar="SECONDS",
            help="how long received DLQ messages stay hidden while being moved (default 60)",
        )
        parser.add_argument(
            "--wait-time",
            type=int,
            default=1,
            choices=range(0, 21),
            metavar="0-20",
            help="long-poll seconds per DLQ receive; an empty receive ends the run (default 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queue = OrderQueue.from_settings(options["queue"])
        try:
            dlq_url = queue.dlq_url
            target_url = queue.url
        except ClientError as exc:
            raise CommandError(
                f"queue {queue.name} or its dead-letter queue {queue.dlq_name} "
                f"does not exist: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise CommandError(f"SQS unreachable: {exc}") from exc
        try:
            if options["dry_run"]:
                self._dry_run(queue, dlq_url, options)
            else:
                self._redrive(queue, dlq_url, target_url, options)
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"SQS call failed: {exc}") from exc

    def _batch_size(self, done: int, limit: int | None) -> int:
        return SQS_BATCH_LIMIT if limit is None else min(SQS_BATCH_LIMIT, limit - done)

    def _dry_run(self, queue: OrderQueue, dlq_url: str, options: dict[str, Any]) -> None:
        limit = options["max"]
        seen: dict[str, dict[str, Any]] = {}
        handles: list[str] = []
        try:
            while (want := self._batch_size(len(seen), limit)) > 0:
                batch = queue.receive_from(
                    dlq_url,
                    max_messages=want,
                    wait_time=options["wait_time"],
                    visibility_timeout=options["visibility_timeout"],
                )
                fresh = [m for m in batch if m["MessageId"] not in seen]
                handles += [m["ReceiptHandle"] for m in batch]
                if not fresh:
                    break
                for message in fresh:
                    seen[message["MessageId"]] = message
        finally:
            # Receiving hid them; give them back now rather than after the timeout.
            queue.change_visibility_in(dlq_url, handles, 0)
        show = max(options["show"], 0)
        for message in list(seen.values())[:show]:
            self.stdout.write(f"  {_peek(message)}")
        if show and len(seen) > show:
            self.stdout.write(f"  … and {len(seen) - show} more")
        self.stdout.write(
            f"dry run: would move {len(seen)} message(s) from {queue.dlq_name} to {queue.name}"
            + (f" (limited by --max {limit})" if limit is not None and len(seen) >= limit else "")
        )

    def _redrive(
        self, queue: OrderQueue, dlq_url: str, target_url: str, options: dict[str, Any]
    ) -> None:
        limit = options["max"]
        moved = refused = undeleted = 0
        done: set[str] = set()
        while (want := self._batch_size(moved, limit)) > 0:
            batch = queue.receive_from(
                dlq_url,
                max_messages=want,
                wait_time=options["wait_time"],
                visibility_timeout=options["visibility_timeout"],
            )
            # A message whose delete failed may come round again: never send it twice.
            batch = [m for m in batch if m["MessageId"] not in done]
            if not batch:
                break
            accepted = queue.send_messages_to(target_url, batch)
            sent = [m for m in batch if m["MessageId"] in accepted]
            failed = [m for m in batch if m["MessageId"] not in accepted]
            undeleted += queue.delete_from(dlq_url, [m["ReceiptHandle"] for m in sent])
            done.update(accepted)
            moved += len(sent)
            if options["verbosity"] >= 2:
                self.stdout.write(f"  moved {moved}")
            if failed:
                # Stop rather than spin on a queue that refuses: the rest waits for a rerun.
                refused += len(failed)
                queue.change_visibility_in(dlq_url, [m["ReceiptHandle"] for m in failed], 0)
                logger.warning("SQS refused %d message(s); left in %s", len(failed), queue.dlq_name)
                break
        logger.info("redrove %d message(s) from %s to %s", moved, queue.dlq_name, queue.name)
        self.stdout.write(f"moved {moved} message(s) from {queue.dlq_name} to {queue.name}")
        if undeleted:
            self.stderr.write(
                f"{undeleted} moved message(s) could not be deleted from {queue.dlq_name}; "
                "they are in both queues (the consumer applies each order once)"
            )
        if refused:
            raise CommandError(
                f"SQS refused {refused} message(s); they stay in {queue.dlq_name}, run again"
            )
