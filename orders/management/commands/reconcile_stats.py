"""``python manage.py reconcile_stats``: check the Redis aggregates against the ledger.

Compares every user (hash and both rankings), every day and the totals with the ledger,
grouped in the database, and prints the differences (the first ``--limit``, with user ids and
exact cents); exit 1 on any. ``--repair`` rewrites what drifted, fenced by the rebuild lock.
The result is kept in Redis for ``pipeline_status``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from orders import ledger, projection
from stats.store import StoreUnavailableError, get_store

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Compare the Redis aggregates with the ledger; exit 1 on a difference."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="rewrite what drifted")
        parser.add_argument(
            "--limit", type=int, default=20, metavar="N", help="differences shown (default 20)"
        )
        parser.add_argument(
            "--settle",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help="ledger orders recorded this recently and not yet in Redis are batches in "
            "flight, not differences (default 300)",
        )
        projection.add_lock_ttl_argument(parser)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            lock_ttl_ms = projection.lock_ttl_ms(options["lock_ttl"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        store = get_store()
        bar = tqdm(
            total=ledger.ledger_size(),
            unit=" orders",
            desc="reconcile",
            disable=options["no_progress"] or None,
        )
        try:
            report = projection.reconcile(
                store,
                repair=options["repair"],
                settle=timedelta(seconds=options["settle"]),
                progress=bar.update,
                lock_ttl_ms=lock_ttl_ms,
            )
        except projection.ProjectionBusyError as exc:
            raise CommandError(str(exc)) from exc
        except projection.LeaseLostError as exc:
            raise CommandError(f"stopped: {exc}") from exc
        except StoreUnavailableError as exc:
            raise CommandError(f"Redis unavailable: {exc}") from exc
        finally:
            bar.close()
        rate = report.orders / report.seconds if report.seconds else 0.0
        for line in report.differences[: max(options["limit"], 0)]:
            self.stdout.write(f"  {line}")
        shown = min(len(report.differences), max(options["limit"], 0))
        if report.difference_count > shown:
            self.stdout.write(f"  … and {report.difference_count - shown:,} more")
        summary = (
            f"reconcile_stats: {report.orders:,} orders, {report.users:,} users, "
            f"{report.days:,} days, {report.products:,} products checked in "
            f"{report.seconds:.1f}s ({rate:,.0f} orders/s); "
            f"{report.difference_count:,} difference(s)"
            + (f", {report.in_flight:,} order(s) in flight" if report.in_flight else "")
            + (
                f"; repaired ({report.repaired:,} writes: orders marked, users, days and products "
                f"rewritten; {report.remaining:,} difference(s) left)"
                if report.repaired
                else ""
            )
        )
        self.stdout.write(summary)
        if not report.clean:
            logger.error("%s", summary)
            raise CommandError(
                f"{report.difference_count} difference(s) between Redis and the ledger"
            )
        logger.info("%s", summary)
