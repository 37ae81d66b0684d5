"""``python manage.py rebuild_stats``: derive every Redis aggregate again from the ledger.

Users, the totals, both rankings, the days, the products and the idempotency marks of the
orders inside the marks' window are derived from the ledger (grouped in the database; the
products' lines summed as they stream) and written with fenced script calls into a
fresh key generation, which then becomes live at once; the old one is removed. Consumers keep
their batches in hand meanwhile (see ``orders.projection``). When Redis records another
layout than ``REDIS_SHARDS`` (or ``--from-shards N`` says so), or the key format of an earlier
version, the aggregates move to this one and the old layout is retired: how the shard count
changes, and how an upgrade is finished. The aggregates are built for ``STATS_TIME_ZONE`` and
``STATS_CURRENCY``, which the switch records (a zone change is a rebuild); a ledger row in
another currency is refused before anything is written. ``--cleanup`` only removes what
rebuilds that died left behind.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from orders import ledger, projection
from stats.store import Layout, StoreUnavailableError, get_store

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
            help="the shard count the aggregates are laid out for now, when Redis records "
            "none (default: 1 on one node); another than Redis records is refused",
        )
        parser.add_argument(
            "--cleanup",
            action="store_true",
            help="only remove the generations (and retired layouts' keys) that rebuilds which "
            "died left behind",
        )
        projection.add_lock_ttl_argument(parser)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        store = get_store()
        try:
            lock_ttl_ms = projection.lock_ttl_ms(options["lock_ttl"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["from_shards"] is not None and options["from_shards"] < 1:
            raise CommandError("--from-shards must be at least 1")
        try:
            in_redis = store.recorded_layout()
        except StoreUnavailableError as exc:
            raise CommandError(f"Redis unavailable: {exc}") from exc
        # No layout recorded: on one node, aggregates of a version before layouts (one
        # shard); a cluster never ran such a version, nothing there to move.
        recorded = in_redis or Layout(store.shards if store.cluster else 1)
        if options["from_shards"]:
            if in_redis is not None and options["from_shards"] != in_redis.shards:
                # The live layout would stay live and unlocked: its consumers would go on
                # applying there, unseen by the layout the switch records.
                raise CommandError(
                    f"--from-shards {options['from_shards']}: Redis records the aggregates "
                    f"laid out for {in_redis.shards} shard(s); leave --from-shards out"
                )
            recorded = dataclasses.replace(recorded, shards=options["from_shards"])
        previous = None
        if not recorded.same_names(store.layout, store.cluster):
            previous = store.layout_store(recorded)
        total = ledger.ledger_size()
        bar = tqdm(
            total=total,
            unit=" orders",
            desc="rebuild",
            disable=options["no_progress"] or options["cleanup"] or None,
        )
        try:
            report = projection.rebuild(
                store,
                previous=previous,
                dry_run=options["dry_run"],
                cleanup_only=options["cleanup"],
                progress=bar.update,
                lock_ttl_ms=lock_ttl_ms,
            )
        except (projection.ProjectionBusyError, projection.ForeignCurrencyError) as exc:
            raise CommandError(str(exc)) from exc
        except projection.LeaseLostError as exc:
            raise CommandError(f"stopped, nothing switched: {exc}") from exc
        except StoreUnavailableError as exc:
            raise CommandError(f"Redis unavailable, nothing switched: {exc}") from exc
        finally:
            bar.close()
        if options["cleanup"]:
            self.stdout.write(
                f"rebuild_stats --cleanup: removed {report.leftovers_removed} leftover "
                f"generation(s) in {report.seconds:.1f}s"
            )
            return
        rate = report.orders / report.seconds if report.seconds else 0.0
        verb = "would write" if report.dry_run else "wrote"
        moved = ""
        if previous is not None:
            moved = f", moved from {recorded.shards} to {store.shards} shards"
            if recorded.key_format != store.layout.key_format:
                moved += f" and from key format {recorded.key_format}"
        events = ""
        if report.refunded_cents or report.cancelled or report.event_marks:
            events = (
                f", {report.refunded_cents:,} cents refunded, {report.cancelled:,} orders "
                f"cancelled, {report.event_marks:,} event marks"
            )
        self.stdout.write(
            f"rebuild_stats {verb} generation {report.generation} ({report.shards} shard(s)"
            f"{moved}): {report.orders:,} orders, {report.users:,} users, {report.days:,} "
            f"day buckets, {report.products:,} products, {report.marks:,} idempotency marks"
            f"{events} in {report.seconds:.1f}s "
            f"({rate:,.0f} orders/s)"
            + ("" if report.dry_run else f"; removed {report.removed_keys:,} old keys")
            + (
                f" and {report.leftovers_removed} leftover generation(s)"
                if report.leftovers_removed
                else ""
            )
        )
        logger.info(
            "rebuild_stats generation %d: %d orders, %d users, %.1fs%s",
            report.generation, report.orders, report.users, report.seconds,
            " (dry run)" if report.dry_run else "",
        )  # fmt: skip
