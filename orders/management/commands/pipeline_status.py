"""``python manage.py pipeline_status``: what an on-call person checks first.

Queue depth (and the dead-letter queue), whether a consumer is alive, the totals (revenue net
of refunds, with gross, refunded and cancelled orders), the ingestion
counters, the generations a rebuild that died left in Redis, the rejected orders by reason and
the events waiting for their order (orphans: those waiting longer than ``ORPHAN_EVENT_DAYS``,
whose order never came), from SQS, Redis and the database. Each dependency is
asked separately, so one being down still shows the others; the exit status is 1 when any is
unreachable or the consumer heartbeat is stale, and the last line says which.

``--consumer-host HOST`` judges only the consumers running on HOST (consumer ids are
``host:pid``): a container's healthcheck passes its own hostname, so a hung worker is
unhealthy even while another worker's heartbeat is fresh.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from orderpipe.money import shop_currency
from orders.admin import reason_summary
from orders.models import RejectedOrder, WaitingEvent
from orders.sqs import OrderQueue
from orders.validation import ALL_CODES
from stats.store import AggregateStore, StoreUnavailableError, get_store
from stats.store.layouts import State

logger = logging.getLogger(__name__)


# Consumers whose last sign of life is older than this are no longer listed.
RECENT_CONSUMER = 3600.0


@dataclass
class PipelineStatus:
    """Everything the command reports; a section is None when its dependency failed."""

    checked_at: datetime
    stale_after: float
    queue_name: str
    dlq_name: str
    sqs: dict[str, int | None] | None = None
    redis_latency_ms: float | None = None
    redis_nodes: list[dict[str, Any]] | None = None
    reconcile: dict[str, Any] | None = None
    leftovers: list[dict[str, Any]] | None = None
    totals: dict[str, Any] | None = None
    ingestion: dict[str, Any] | None = None
    consumer: dict[str, Any] | None = None
    rejected_db: dict[str, Any] | None = None
    waiting_events: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _age(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else round(max((now - then).total_seconds(), 0.0), 3)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def consumer_host(consumer_id: str) -> str:
    """The host part of a consumer id ``host:pid``."""
    return consumer_id.rpartition(":")[0]


def collect_status(
    queue: OrderQueue, stale_after: float, now: datetime, host: str | None = None
) -> PipelineStatus:
    """Ask SQS, Redis and the database in turn; record a problem for each that fails.

    With ``host``, the consumer verdict is that of the consumers on that host (their newest
    heartbeat), not the newest heartbeat of any consumer."""
    status = PipelineStatus(
        checked_at=now, stale_after=stale_after, queue_name=queue.name, dlq_name=queue.dlq_name
    )
    try:
        depth = queue.depth()
        status.sqs = {
            "visible": depth.visible,
            "in_flight": depth.in_flight,
            "delayed": depth.delayed,
            "dlq_visible": depth.dlq_visible,
        }
        if depth.dlq_visible:
            logger.info("dead-letter queue %s holds %d messages", queue.dlq_name, depth.dlq_visible)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            status.problems.append(f"SQS queue {queue.name} does not exist")
        else:
            status.problems.append(f"SQS error: {exc}")
    except BotoCoreError as exc:
        status.problems.append(f"SQS unreachable: {exc}")

    try:
        store = get_store()
        status.redis_latency_ms = round(store.ping(), 2)
        _check_redis_nodes(store, status)
        totals, ingestion = store.overview()
        beats = store.consumers()
        _check_reconcile(store, status)
        status.leftovers = _leftovers(store, now)
    except StoreUnavailableError as exc:
        status.problems.append(f"Redis unreachable: {exc}")
    else:
        # Revenue as the stats API serves it: net (gross - refunded), with gross and refunds.
        status.totals = {
            "orders": totals.total_orders,
            "revenue_cents": totals.net_revenue_cents,
            "gross_revenue_cents": totals.gross_revenue_cents,
            "refunded_cents": totals.refunded_cents,
            "cancelled_orders": totals.cancelled_orders,
            "users": totals.unique_users,
        }
        status.ingestion = {
            "received": ingestion.received,
            "applied": ingestion.applied,
            "duplicates": ingestion.duplicates,
            "rejected": ingestion.rejected,
            "rejected_by_code": ingestion.rejected_by_code,
            "events_received": ingestion.events_received,
            "events_applied": ingestion.events_applied,
            "events_duplicates": ingestion.events_duplicates,
        }
        if host is None:
            # A busy consumer stamps last_batch; an idle one stamps heartbeat on empty receives.
            seen = [t for t in (ingestion.heartbeat_at, ingestion.last_batch_at) if t is not None]
        else:
            # Each consumer stamps its own entry with every batch and every empty receive.
            seen = [at for name, at in beats.items() if consumer_host(name) == host]
        last_seen = max(seen) if seen else None
        lag = _age(last_seen, now)
        stale = lag is None or lag > stale_after
        status.consumer = {
            "heartbeat_at": _iso(ingestion.heartbeat_at),
            "heartbeat_age_s": _age(ingestion.heartbeat_at, now),
            "last_batch_at": _iso(ingestion.last_batch_at),
            "last_batch_age_s": _age(ingestion.last_batch_at, now),
            "lag_s": lag,
            "stale": stale,
            "host": host,
            # Each consumer process seen in the last hour (a crashed one stays listed, stale;
            # one that stopped cleanly removed itself).
            "processes": [
                {"id": name, "last_seen": _iso(at), "age_s": age, "stale": age > stale_after}
                for name, at in beats.items()
                if (age := _age(at, now)) is not None and age <= RECENT_CONSUMER
            ],
        }
        where = "" if host is None else f" on {host}"
        if last_seen is None:
            status.problems.append(
                f"consumer heartbeat stale: no consumer{where} has ever reported"
            )
        elif stale:
            status.problems.append(
                f"consumer heartbeat stale{where}: last seen {lag:.0f}s ago (> {stale_after:g}s)"
            )

    try:
        summary = reason_summary(RejectedOrder.objects.all())
        status.rejected_db = {
            "total": summary["total"],
            "by_status": {value: count for value, _label, count in summary["by_status"]},
            "by_code": dict(summary["by_code"]),
        }
        status.waiting_events = _waiting_events(now)
    except DatabaseError as exc:
        status.problems.append(f"database unreachable: {exc}")
    return status


def _waiting_events(now: datetime) -> dict[str, Any]:
    """Events waiting for their order, and the orphans among them (one query). Not a problem
    for the exit status: an order that never came is the sender's to explain, and a worker's
    healthcheck must not fail on it."""
    days = settings.ORPHAN_EVENT_DAYS
    found = WaitingEvent.objects.summary(now, days)
    return {
        "count": found.count,
        "orphans": found.orphans,
        "orphan_after_days": days,
        "oldest_at": _iso(found.oldest),
        "oldest_age_s": _age(found.oldest, now),
    }


def _check_redis_nodes(store: AggregateStore, status: PipelineStatus) -> None:
    """Each primary: reachable, version, eviction policy (one, unless REDIS_CLUSTER)."""
    servers = store.servers()
    status.redis_nodes = [
        {
            "node": server.node,
            "reachable": server.reachable,
            "version": server.version,
            "eviction_policy": server.eviction_policy,
        }
        for server in servers
    ]
    for server in servers:
        if not server.reachable:
            status.problems.append(f"Redis {server.node} unreachable: {server.error}")
        status.problems += server.problems()


def _check_reconcile(store: AggregateStore, status: PipelineStatus) -> None:
    """The last reconcile_stats: when it ran and what it found (never is not a problem)."""
    status.reconcile = store.reconcile_report()
    report = status.reconcile
    if (
        report is not None
        and report.get("differences")
        and not (report.get("repaired") and report.get("remaining") == 0)
    ):
        status.problems.append(
            f"the last reconcile_stats ({report['checked_at']}) found "
            f"{report['differences']} difference(s) between Redis and the ledger"
        )


def _leftovers(store: AggregateStore, now: datetime) -> list[dict[str, Any]]:
    """What rebuilds that died left in Redis (memory that ``rebuild_stats`` or ``rebuild_stats
    --cleanup`` gives back); a generation a running rebuild is building is not one."""
    found = []
    for leftover in store.leftovers():
        if leftover.generation is not None:
            layout = store.layout_store(leftover.layout)
            if leftover.state == "building" and layout.lock_holder() == leftover.token:
                continue  # a rebuild running now
            if leftover.generation in {g.number for g in layout.generation_states()
                                       if g.state is not State.RETIRED}:  # fmt: skip
                continue  # live (on some shard): dropped once switched away from
        found.append(
            {
                "generation": leftover.generation,
                "layout": leftover.layout.code(),
                "state": leftover.state if leftover.generation is not None else "retired layout",
                "age_s": _age(leftover.since, now),
            }
        )
    return found


def status_as_dict(status: PipelineStatus) -> dict[str, Any]:
    totals = dict(status.totals) if status.totals is not None else None
    if totals is not None:
        # Exact money as a string: JSON floats would not keep the cents exact.
        money = shop_currency().from_minor_units
        totals["revenue"] = str(money(totals["revenue_cents"]))
        totals["gross_revenue"] = str(money(totals["gross_revenue_cents"]))
        totals["refunded"] = str(money(totals["refunded_cents"]))
    return {
        "checked_at": _iso(status.checked_at),
        "ok": status.ok,
        "problems": status.problems,
        "queue": status.queue_name,
        "dlq": status.dlq_name,
        "sqs": status.sqs,
        "redis_latency_ms": status.redis_latency_ms,
        "redis_nodes": status.redis_nodes,
        "reconcile": status.reconcile,
        "leftover_generations": status.leftovers,
        "consumer": status.consumer,
        "totals": totals,
        "ingestion": status.ingestion,
        "rejected_db": status.rejected_db,
        "waiting_events": status.waiting_events,
    }


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{_duration(seconds)} ago"


def render_table(status: PipelineStatus) -> str:
    """The human view: one aligned block per source, problems last."""
    unavailable = "  (unavailable)"
    lines = [f"orderpipe pipeline status at {_iso(status.checked_at)}", ""]

    lines.append(f"SQS  queue {status.queue_name}, dead-letter queue {status.dlq_name}")
    if status.sqs is None:
        lines.append(unavailable)
    else:
        dlq = status.sqs["dlq_visible"]
        lines += [
            f"  {'visible':<22}{_n(status.sqs['visible']):>14}",
            f"  {'in flight':<22}{_n(status.sqs['in_flight']):>14}",
            f"  {'delayed':<22}{_n(status.sqs['delayed']):>14}",
            f"  {'dead-letter (DLQ)':<22}{'missing' if dlq is None else _n(dlq):>14}",
        ]
    lines.append("")

    lines.append("Consumer")
    if status.consumer is None:
        lines.append(unavailable)
    else:
        c = status.consumer
        verdict = "STALE" if c["stale"] else "ok"
        lines += [
            f"  {'heartbeat':<22}{_ago(c['heartbeat_age_s']):>14}  {c['heartbeat_at'] or ''}",
            f"  {'last batch':<22}{_ago(c['last_batch_age_s']):>14}  {c['last_batch_at'] or ''}",
            f"  {'lag':<22}{_duration(c['lag_s']):>14}  "
            f"{verdict} (stale after {status.stale_after:g}s"
            + ("" if c["host"] is None else f", consumers on {c['host']} only")
            + ")",
        ]
        for process in c["processes"]:
            state = "STALE" if process["stale"] else "ok"
            lines.append(f"  {process['id']:<22}{_ago(process['age_s']):>14}  {state}")
    lines.append("")

    lines.append(
        "Totals (Redis)"
        + ("" if status.redis_latency_ms is None else f"  ping {status.redis_latency_ms:.2f} ms")
    )
    if status.totals is None:
        lines.append(unavailable)
    else:
        money = shop_currency().from_minor_units
        t = status.totals
        lines += [
            f"  {'orders':<22}{_n(t['orders']):>14}",
            f"  {'cancelled orders':<22}{_n(t['cancelled_orders']):>14}",
            f"  {'revenue (net)':<22}{money(t['revenue_cents']):>14,}",
            f"  {'gross revenue':<22}{money(t['gross_revenue_cents']):>14,}",
            f"  {'refunded':<22}{money(t['refunded_cents']):>14,}",
            f"  {'users':<22}{_n(t['users']):>14}",
        ]
    lines.append("")

    lines.append("Redis primaries")
    if status.redis_nodes is None:
        lines.append(unavailable)
    else:
        for node in status.redis_nodes:
            state = "ok" if node["reachable"] else "UNREACHABLE"
            lines.append(
                f"  {node['node']:<22}{state:>14}  {node['version'] or 'version ?'}, "
                f"maxmemory-policy {node['eviction_policy'] or '?'}"
            )
    lines.append("")

    lines.append("Last reconcile (ledger vs Redis)")
    report = status.reconcile
    if report is None:
        lines.append("  never run (python manage.py reconcile_stats)")
    else:
        found = f"{report['differences']:,} difference(s)"
        if report.get("repaired"):
            found += f", repaired ({report.get('remaining', 0):,} left)"
        lines.append(f"  {report['checked_at']:<22}  {report['orders']:,} orders checked, {found}")
    lines.append("")

    lines.append("Leftovers of rebuilds that died (rebuild_stats --cleanup removes them)")
    if status.leftovers is None:
        lines.append(unavailable)
    elif not status.leftovers:
        lines.append("  none")
    for leftover in status.leftovers or []:
        what = (
            f"generation {leftover['generation']}"
            if leftover["generation"] is not None
            else "keys of a retired layout"
        )
        lines.append(
            f"  {what:<22}{leftover['state']:>14}  {leftover['layout']}, "
            f"since {_ago(leftover['age_s'])}"
        )
    lines.append("")

    lines.append("Ingestion counters (Redis)")
    if status.ingestion is None:
        lines.append(unavailable)
    else:
        for name in ("received", "applied", "duplicates", "rejected"):
            lines.append(f"  {name:<22}{_n(status.ingestion[name]):>14}")
        for name in ("received", "applied", "duplicates"):
            lines.append(f"  {'events ' + name:<22}{_n(status.ingestion['events_' + name]):>14}")
    lines.append("")

    lines.append("Rejected by reason")
    lines.append(f"  {'code':<22}{'Redis counter':>14}{'DB rows':>10}")
    counters = status.ingestion["rejected_by_code"] if status.ingestion else None
    db_codes = status.rejected_db["by_code"] if status.rejected_db else None
    codes = [c for c in ALL_CODES if (counters or {}).get(c) or (db_codes or {}).get(c)]
    codes += sorted(set(counters or {}) - set(ALL_CODES))
    for code in codes:
        redis_n = "-" if counters is None else _n(counters.get(code, 0))
        db_n = "-" if db_codes is None else _n(db_codes.get(code, 0))
        lines.append(f"  {code:<22}{redis_n:>14}{db_n:>10}")
    if not codes:
        lines.append("  (none)")
    lines.append("")

    lines.append("Rejected orders in the database by status")
    if status.rejected_db is None:
        lines.append(unavailable)
    else:
        for value, count in status.rejected_db["by_status"].items():
            lines.append(f"  {value:<22}{_n(count):>14}")
        lines.append(f"  {'total':<22}{_n(status.rejected_db['total']):>14}")
    lines.append("")

    lines.append("Events waiting for their order (database)")
    waiting = status.waiting_events
    if waiting is None:
        lines.append(unavailable)
    else:
        oldest = "" if waiting["oldest_at"] is None else f"  oldest {waiting['oldest_at']}"
        lines += [
            f"  {'waiting':<22}{_n(waiting['count']):>14}{oldest}",
            f"  {'orphans':<22}{_n(waiting['orphans']):>14}  waiting over "
            f"{waiting['orphan_after_days']} days for an order that never came",
        ]
    lines.append("")

    if status.problems:
        lines.append("PROBLEMS:")
        lines += [f"  - {problem}" for problem in status.problems]
    else:
        lines.append("OK: SQS, Redis and the database answer; the consumer is alive.")
    return "\n".join(line.rstrip() for line in lines)


class Command(BaseCommand):
    help = (
        "Queue depth, consumer heartbeat and lag, totals, ingestion counters and rejected "
        "orders by reason. Exits 1 when a dependency is unreachable or the heartbeat is stale."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=None, help="queue name (default: QUEUE_NAME)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument(
            "--stale-after",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="consumer heartbeat older than this is a problem (default 120)",
        )
        parser.add_argument(
            "--consumer-host",
            default=None,
            metavar="HOST",
            help="judge only the consumers on HOST (their ids are HOST:pid), e.g. $(hostname) "
            "in a worker container's healthcheck",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stale_after"] <= 0:
            raise CommandError("--stale-after must be positive")
        queue = OrderQueue.from_settings(options["queue"])
        status = collect_status(
            queue, options["stale_after"], datetime.now(UTC), options["consumer_host"] or None
        )
        if options["json"]:
            self.stdout.write(json.dumps(status_as_dict(status), indent=2))
        else:
            self.stdout.write(render_table(status))
        if status.problems:
            raise CommandError("; ".join(status.problems))
