"""``python manage.py prune_rejected``: remove the personal data of rejected messages older
than ``REJECTED_RETENTION_DAYS``, and of the bodies of events waiting that long for their
order (run it daily, from cron or a scheduler).

Safe to run at any time and as often as wanted: each batch is one short transaction over rows
not yet stripped (``orders.privacy.prune_rejected_batch``, ``prune_waiting_batch``), a second
run finds nothing and
exits 0, and SIGINT/SIGTERM finish the batch in hand, then stop. Bodies keep the order's own
fields (and those listed in ``LEDGER_EXTRA_FIELDS``); reasons, codes, ids and times stay.
"""

from __future__ import annotations

import logging
import signal
from datetime import timedelta
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from orders.privacy import prune_rejected_batch, prune_waiting_batch

logger = logging.getLogger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Command(BaseCommand):
    help = (
        "Remove personal fields from rejected messages (and from the bodies of events waiting "
        "for their order) older than REJECTED_RETENTION_DAYS."
    )

    # Swappable in tests, as the clock of every long-running command.
    clock = staticmethod(timezone.now)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="retention in days (default: REJECTED_RETENTION_DAYS)",
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="rows per transaction (default 1000)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = settings.REJECTED_RETENTION_DAYS if options["days"] is None else options["days"]
        if days < 1:
            raise CommandError("--days must be at least 1")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        self.batch_size = options["batch_size"]
        self.stopping = False
        self.now = self.clock()
        self.cutoff = self.now - timedelta(days=days)
        previous = {sig: signal.signal(sig, self.on_signal) for sig in _SIGNALS}
        pruned = waiting = 0
        try:
            while not self.stopping and (done := self.prune_one_batch()):
                pruned += done
            while not self.stopping and (done := self.prune_waiting_batch()):
                waiting += done
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        stopped = " (stopped by a signal; run it again to go on)" if self.stopping else ""
        self.stdout.write(
            f"prune_rejected: personal data removed from {pruned:,} rejected message(s) and "
            f"{waiting:,} event(s) waiting for their order, received before "
            f"{self.cutoff:%Y-%m-%d %H:%M} UTC ({days} days){stopped}"
        )
        logger.info(
            "prune_rejected: %d rejected messages and %d waiting events older than %d days%s",
            pruned, waiting, days, stopped,
        )  # fmt: skip

    def prune_one_batch(self) -> int:
        """One batch of rejected messages; returns how many it stripped (0: none left)."""
        return prune_rejected_batch(self.cutoff, self.batch_size, now=self.now)

    def prune_waiting_batch(self) -> int:
        """One batch of waiting events' bodies; returns how many it stripped (0: none left)."""
        return prune_waiting_batch(self.cutoff, self.batch_size, now=self.now)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: finishing the batch in hand", signal.Signals(signum).name)
        self.stopping = True
