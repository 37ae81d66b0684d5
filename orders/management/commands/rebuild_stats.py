"""``python manage.py rebuild_stats``: derive every Redis aggregate again from the ledger.

Users, the totals, both rankings, the days and the idempotency marks of the orders inside
``ORDER_DEDUP_TTL`` are grouped in the database and written with pipelined commands into a
fresh key generation, which then becomes live at once; the old one is removed. Consumers keep
their batches in hand meanwhile (see ``orders.projection``). With ``--from-shards N`` the
aggregates move from a layout of N shards to ``REDIS_SHARDS``: how the shard count changes.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from orders import ledger, projection
from stats.store import AggregateStore, StoreUnavailableError, get_store

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Rebuild the Redis aggregates from the ledger into a new generation, then switch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="read the ledger and say what would be written; write nothing",
        )
        parser.add_argument(
            "--from-shards",
            type=int,
            default=None,
            metavar="N",
            help="the shard count the aggregates are laid out for now (default: as Redis "
            "records it, else 1 on one node); differs from REDIS_SHARDS when changing it",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        store = get_store()
        try:
            # No layout recorded: on one node, aggregates of a version before layouts (one
            # shard); a cluster never ran such a version, nothing there to move.
            previous_shards = (
                options["from_shards"]
                or store.recorded_layout()
                or (store.shards if store.cluster else 1)
            )
        except StoreUnavailableError as exc:
            raise CommandError(f"Redis unavailable: {exc}") from exc
        if previous_shards < 1:
            raise CommandError("--from-shards must be at least 1")
        previous = (
            AggregateStore(store.client, store.prefix, store.dedup_ttl, shards=previous_shards)
            if previous_shards != store.shards
            else None
        )
        total = ledger.ledger_size()
        bar = tqdm(
            total=total, unit=" orders", desc="rebuild", disable=options["no_progress"] or None
        )
        try:
            report = projection.rebuild(
                store, previous=previous, dry_run=options["dry_run"], progress=bar.update
            )
        except projection.ProjectionBusyError as exc:
            raise CommandError(str(exc)) from exc
        except StoreUnavailableError as exc:
            raise CommandError(f"Redis unavailable, nothing switched: {exc}") from exc
        finally:
            bar.close()
        rate = report.orders / report.seconds if report.seconds else 0.0
        verb = "would write" if report.dry_run else "wrote"
        moved = f", moved from {previous_shards} to {store.shards} shards" if previous else ""
        self.stdout.write(
            f"rebuild_stats {verb} generation {report.generation} ({report.shards} shard(s)"
            f"{moved}): {report.orders:,} orders, {report.users:,} users, {report.days:,} "
            f"day buckets, {report.marks:,} idempotency marks in {report.seconds:.1f}s "
            f"({rate:,.0f} orders/s)"
            + ("" if report.dry_run else f"; removed {report.removed_keys:,} old keys")
        )
        logger.info(
            "rebuild_stats generation %d: %d orders, %d users, %.1fs%s",
            report.generation, report.orders, report.users, report.seconds,
            " (dry run)" if report.dry_run else "",
        )  # fmt: skip
