"""/metrics: one snapshot of the store, rendered as JSON or through prometheus-client.

The numbers live in Redis (written by every consumer process), not in this web process, so
the process-global ``REGISTRY`` with its counters does not apply. Each scrape instead builds a
``CollectorRegistry`` holding one ``SnapshotCollector`` that yields metric families from the
snapshot the view read, and prometheus-client's own ``generate_latest`` writes the text.

Revenue as Prometheus counters must only grow, so the text form keeps gross and refunds apart
(``orderpipe_revenue_total`` gross, as it always was, ``orderpipe_refunded_total``) and gives
net as a gauge (``orderpipe_net_revenue``); the JSON form's ``total_revenue`` is net, like the
stats API's.

How many refunds and cancellations wait for their order is a database fact, and the stats app
does not import the orders app: the view is handed a ``WaitingSource`` (``orderpipe/urls.py``
wires the orders app's), as the dashboard is handed its panels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from orderpipe.money import shop_currency
from stats.api.serializers import average_cents
from stats.store import AggregateStore, GlobalStats, IngestionStats, ServerInfo

# /metrics and /health show each Redis primary's version and eviction policy from INFO read at
# most this often per process (seconds): configuration, not a reading that moves between calls.
SERVER_INFO_MAX_AGE = 60.0

NAMESPACE = "orderpipe"


@dataclass(frozen=True, slots=True)
class WaitingEvents:
    """Refunds and cancellations waiting for their order, and the orphans among them (waiting
    longer than ``ORPHAN_EVENT_DAYS``)."""

    count: int
    orphans: int


# Reads the waiting events at ``now``; None when the database did not answer.
WaitingSource = Callable[[datetime], WaitingEvents | None]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    global_stats: GlobalStats
    ingestion: IngestionStats
    taken_at: datetime
    redis: list[ServerInfo]
    waiting: WaitingEvents | None = None  # None: not known (no source, or the database down)

    @classmethod
    def read(
        cls, store: AggregateStore, now: datetime, waiting: WaitingSource | None = None
    ) -> MetricsSnapshot:
        global_stats, ingestion = store.overview()
        servers = store.servers(max_age=SERVER_INFO_MAX_AGE)
        return cls(global_stats, ingestion, now, servers, None if waiting is None else waiting(now))

    @property
    def average_order_value_cents(self) -> int:
        """Gross revenue per order placed (Shopify's average order value)."""
        g = self.global_stats
        return average_cents(g.gross_revenue_cents, g.total_orders)

    @property
    def consumer_lag_seconds(self) -> float | None:
        beat = self.ingestion.heartbeat_at
        if beat is None:
            return None
        return max(0.0, round((self.taken_at - beat).total_seconds(), 3))

    @property
    def ingestion_view(self) -> SimpleNamespace:
        """The ingestion counters plus the derived lag, as one object for the serializer."""
        i = self.ingestion
        return SimpleNamespace(
            received=i.received,
            applied=i.applied,
            duplicates=i.duplicates,
            rejected=i.rejected,
            rejected_by_code=i.rejected_by_code,
            events_received=i.events_received,
            events_applied=i.events_applied,
            events_duplicates=i.events_duplicates,
            events_waiting=None if self.waiting is None else self.waiting.count,
            events_orphaned=None if self.waiting is None else self.waiting.orphans,
            last_batch_at=i.last_batch_at,
            heartbeat_at=i.heartbeat_at,
            consumer_lag_seconds=self.consumer_lag_seconds,
        )


def _name(suffix: str) -> str:
    return f"{NAMESPACE}_{suffix}"


class SnapshotCollector(Collector):
    """Metric families for one ``MetricsSnapshot`` (money in currency units, as floats).

    Prometheus samples are float64, so money here is approximate beyond ~15 digits; the JSON
    form of /metrics is the exact one.
    """

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        g = self.snapshot.global_stats
        i = self.snapshot.ingestion
        money = shop_currency().from_minor_units
        yield CounterMetricFamily(
            _name("orders"), "Orders applied to the aggregates.", g.total_orders
        )
        yield CounterMetricFamily(
            _name("revenue"),
            "Gross revenue of applied orders (before refunds), in currency units.",
            float(money(g.gross_revenue_cents)),
        )
        yield CounterMetricFamily(
            _name("refunded"),
            "Refunds and cancellations applied, in currency units.",
            float(money(g.refunded_cents)),
        )
        yield GaugeMetricFamily(
            _name("net_revenue"),
            "Net revenue (gross revenue - refunded), in currency units.",
            float(money(g.net_revenue_cents)),
        )
        yield CounterMetricFamily(
            _name("cancelled_orders"), "Orders cancelled.", g.cancelled_orders
        )
        yield GaugeMetricFamily(
            _name("unique_users"), "Users with at least one order.", g.unique_users
        )
        yield GaugeMetricFamily(
            _name("average_order_value"),
            "Gross revenue per order placed, in currency units.",
            float(money(self.snapshot.average_order_value_cents)),
        )
        yield CounterMetricFamily(
            _name("messages_received"), "SQS messages received by consumers.", i.received
        )
        yield CounterMetricFamily(
            _name("orders_applied"), "Orders applied by consumers (first delivery).", i.applied
        )
        yield CounterMetricFamily(
            _name("orders_duplicate"), "Redeliveries and identical resends ignored.", i.duplicates
        )
        yield CounterMetricFamily(
            _name("messages_rejected"), "Messages rejected and recorded for review.", i.rejected
        )
        yield CounterMetricFamily(
            _name("events_received"),
            "Refund and cancellation messages received by consumers.",
            i.events_received,
        )
        yield CounterMetricFamily(
            _name("events_applied"),
            "Refunds and cancellations applied by consumers (first delivery).",
            i.events_applied,
        )
        yield CounterMetricFamily(
            _name("events_duplicate"),
            "Refunds and cancellations found applied already (redeliveries, resends).",
            i.events_duplicates,
        )
        if (waiting := self.snapshot.waiting) is not None:
            yield GaugeMetricFamily(
                _name("events_waiting"),
                "Refunds and cancellations waiting for their order (they arrived first).",
                waiting.count,
            )
            yield GaugeMetricFamily(
                _name("events_orphaned"),
                "Events waiting longer than ORPHAN_EVENT_DAYS for an order that never came.",
                waiting.orphans,
            )
        by_code = CounterMetricFamily(
            _name("rejection_reasons"),
            "Rejection reasons by code (one message can carry several).",
            labels=["code"],
        )
        for code, count in i.rejected_by_code.items():
            by_code.add_metric([code], count)
        yield by_code
        if i.heartbeat_at is not None:
            yield GaugeMetricFamily(
                _name("consumer_heartbeat_timestamp_seconds"),
                "When a consumer last reported alive (Unix time).",
                i.heartbeat_at.timestamp(),
            )
            yield GaugeMetricFamily(
                _name("consumer_lag_seconds"),
                "Seconds since a consumer last reported alive.",
                self.snapshot.consumer_lag_seconds,
            )
        if i.last_batch_at is not None:
            yield GaugeMetricFamily(
                _name("last_batch_timestamp_seconds"),
                "When a consumer last applied a batch (Unix time).",
                i.last_batch_at.timestamp(),
            )
        servers = InfoMetricFamily(
            _name("redis"),
            "Each Redis primary: version and maxmemory-policy (must be noeviction).",
            labels=["node"],
        )
        for server in self.snapshot.redis:
            servers.add_metric(
                [server.node],
                {
                    "reachable": "true" if server.reachable else "false",
                    "version": server.version or "",
                    "eviction_policy": server.eviction_policy or "",
                },
            )
        yield servers


def exposition_registry(snapshot: MetricsSnapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry
