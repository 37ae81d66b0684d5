"""Stats API viewsets: read the aggregate store, answer the serializers' shapes.

Every stats read is one Redis round trip through ``stats.store``; no view builds a key or
computes an aggregate. Errors: bad parameters are DRF ``ValidationError`` (400 naming the
parameter), a Redis outage is ``StoreUnavailableError`` (503 via
``orderpipe.api.errors.exception_handler``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import ViewSet

from orderpipe.api.access import ProtectedAPIMixin, StatsAccess, authenticators_for_settings
from orderpipe.api.errors import PROTECTED_ERRORS, DetailSerializer, parameter_error
from orderpipe.api.ids import (
    path_id_parameter,
    too_long_error,
    validate_path_id,
    validate_user_id,
)
from orderpipe.api.negotiation import FormatParamMixin
from orderpipe.api.renderers import ExactJSONRenderer
from stats.api.metrics import SERVER_INFO_MAX_AGE, MetricsSnapshot, WaitingSource
from stats.api.params import (
    DATE_RANGE_PARAMS,
    HOUR_PARAMS,
    LIMIT_PARAMS,
    TOP_PRODUCTS_PARAMS,
    DateRangeParams,
    HourParams,
    LimitParams,
    TopProductsParams,
    validate_query,
)
from stats.api.renderers import ExpositionRenderer, OpenMetricsRenderer, PrometheusTextRenderer
from stats.api.serializers import (
    ApiRootSerializer,
    DateRangeStatsSerializer,
    GlobalStatsSerializer,
    HealthSerializer,
    HourRangeSerializer,
    MetricsSerializer,
    ProductStatsSerializer,
    TopBuyerSerializer,
    TopProductSerializer,
    TopSpenderSerializer,
    UserStatsSerializer,
    by_hour_body,
    date_range_body,
    global_stats_body,
    metrics_body,
    product_stats_body,
    top_buyers_body,
    top_products_body,
    top_spenders_body,
    user_stats_body,
)
from stats.store import StoreUnavailableError, get_store

logger = logging.getLogger(__name__)


LIMIT_ERROR = parameter_error(
    "limit too large", {"limit": ["Ensure this value is less than or equal to 100."]}
)


class ProtectedViewSet(ProtectedAPIMixin, ViewSet):
    """A stats viewset under the access rules both APIs share."""


class UserStatsViewSet(ProtectedViewSet):
    lookup_field = "user_id"
    # Any characters (percent-encoded in the URL), including "/"; length is checked in the view
    # so that an over-long id is a 400 naming user_id, not an HTML 404 from the resolver.
    lookup_value_regex = ".+"

    @extend_schema(
        operation_id="user_stats",
        summary="Statistics of one user",
        description=(
            "`total_spend` is net: `gross_spend` (what the user's orders were worth) less "
            "`refunded` (their refunds and cancellations). `order_count` counts the orders "
            "placed, cancelled ones included; `average_order_value` is gross_spend / "
            "order_count."
        ),
        parameters=[path_id_parameter("user_id", "The user's id as sent in orders")],
        responses={
            200: UserStatsSerializer,
            400: parameter_error("user_id too long", too_long_error("user_id")),
            404: OpenApiResponse(DetailSerializer, description="No order of this user."),
            **PROTECTED_ERRORS,
        },
    )
    @action(detail=True, methods=["get"], url_path="stats", url_name="stats")
    def stats(self, request: Request, user_id: str) -> Response:
        validate_user_id(user_id)
        user = get_store().user_stats(user_id)
        if user is None:
            raise NotFound(f"No orders recorded for user {user_id}.")
        return Response(user_stats_body(user))


class ProductStatsViewSet(ProtectedViewSet):
    lookup_field = "product_id"
    # Any characters (percent-encoded), as user ids; the length is checked in the view.
    lookup_value_regex = ".+"

    @extend_schema(
        operation_id="product_stats",
        summary="Statistics of one product (net units and revenue over all time)",
        description=(
            "`units` and `revenue` are net: sold less what refunds by items and cancellations "
            "took back; a refund by amount takes nothing off a product. 404 when no order "
            "had the product; one whose units were all given back answers 0."
        ),
        parameters=[path_id_parameter("product_id", "The product's id as sent in items")],
        responses={
            200: ProductStatsSerializer,
            400: parameter_error("product_id too long", too_long_error("product_id")),
            404: OpenApiResponse(DetailSerializer, description="No order had this product."),
            **PROTECTED_ERRORS,
        },
    )
    @action(detail=True, methods=["get"], url_path="stats", url_name="stats")
    def stats(self, request: Request, product_id: str) -> Response:
        validate_path_id("product_id", product_id)
        product = get_store().product_stats(product_id)
        if product is None:
            raise NotFound(f"No orders recorded with product {product_id}.")
        return Response(product_stats_body(product))


class StatsViewSet(ProtectedViewSet):
    @extend_schema(
        operation_id="global_stats",
        summary="Totals over all orders: net and gross revenue, refunds, cancellations",
        description=(
            "Shopify's rule: gross is what was ordered, refunds (a cancellation refunds what "
            "was left of its order) are taken off, `total_revenue` = gross_revenue - refunded. "
            "`total_orders` counts the orders placed, cancelled ones included; "
            "`average_order_value` is gross_revenue / total_orders (Shopify's definition)."
        ),
        responses={200: GlobalStatsSerializer, **PROTECTED_ERRORS},
    )
    @action(detail=False, methods=["get"], url_path="global", url_name="global")
    def global_stats(self, request: Request) -> Response:
        return Response(global_stats_body(get_store().global_stats()))

    @extend_schema(
        operation_id="top_spenders",
        summary="Users by net spend (gross - refunded), highest first (ties by user_id ascending)",
        parameters=[LimitParams],
        responses={200: TopSpenderSerializer(many=True), 400: LIMIT_ERROR, **PROTECTED_ERRORS},
    )
    @action(detail=False, methods=["get"], url_path="top-spenders", url_name="top-spenders")
    def top_spenders(self, request: Request) -> Response:
        limit = self._limit(request)
        return Response(top_spenders_body(get_store().top_spenders(limit)))

    @extend_schema(
        operation_id="top_buyers",
        summary="Users by number of orders, highest first (ties by user_id ascending)",
        parameters=[LimitParams],
        responses={200: TopBuyerSerializer(many=True), 400: LIMIT_ERROR, **PROTECTED_ERRORS},
    )
    @action(detail=False, methods=["get"], url_path="top-buyers", url_name="top-buyers")
    def top_buyers(self, request: Request) -> Response:
        limit = self._limit(request)
        return Response(top_buyers_body(get_store().top_buyers(limit)))

    @extend_schema(
        operation_id="stats_by_date",
        summary="Totals for a range of the shop's days, per day, ISO week or month",
        description=(
            "Days are calendar days in the shop's time zone (STATS_TIME_ZONE). A day's "
            "gross_revenue is what the orders placed on it were worth; its refunded the "
            "refunds and cancellations that occurred on it, whenever their order was (Shopify's "
            "rule); total_revenue = gross_revenue - refunded, negative on a day whose refunds "
            "exceed its sales. interval=week or month sums the days into ISO weeks or calendar "
            "months (`weeks` or `months` instead of `days`), each named by its first day and "
            "counting only the days inside the range; at most 366 buckets. compare=previous "
            "adds `previous`: the same figures for the period just before. Every amount is in "
            "`currency`, with exactly its decimals."
        ),
        parameters=[DateRangeParams],
        responses={
            200: DateRangeStatsSerializer,
            400: parameter_error(
                "reversed range",
                {"end_date": ["Must not be before start_date (2025-02-01)."]},
            ),
            **PROTECTED_ERRORS,
        },
    )
    @action(detail=False, methods=["get"], url_path="by-date", url_name="by-date")
    def by_date(self, request: Request) -> Response:
        params = validate_query(DATE_RANGE_PARAMS, request.query_params)
        start, end, interval = params["start_date"], params["end_date"], params["interval"]
        if "previous" not in params:
            return Response(date_range_body(start, end, get_store().by_date(start, end), interval))
        # The period before ends the day before this one: both are one read.
        first, last = params["previous"]
        days = get_store().by_date(first, end)
        split = (start - first).days
        previous = (first, last, days[:split])
        return Response(date_range_body(start, end, days[split:], interval, previous))

    @extend_schema(
        operation_id="top_products",
        summary="Products by net revenue or units, highest first (ties by product_id ascending)",
        description=(
            "A product is an item's `product_id` (items without one are in no ranking). Its "
            "units and revenue are net: what its orders sold, less what refunds by items and "
            "cancellations took back (a cancellation takes back whatever of its order was not "
            "refunded yet). A refund by amount, without items, lowers its order's revenue but "
            "no product's. Over all time, or with start_date and end_date over those days of "
            "the shop's time zone: sales on their order's day, refunds on the day they "
            "occurred (a range may hold negative figures). A product all given back stays "
            "listed with 0."
        ),
        parameters=[TopProductsParams],
        responses={
            200: TopProductSerializer(many=True),
            400: parameter_error(
                "half a range",
                {"end_date": ["Required with start_date: a range names both of its days."]},
            ),
            **PROTECTED_ERRORS,
        },
    )
    @action(detail=False, methods=["get"], url_path="top-products", url_name="top-products")
    def top_products(self, request: Request) -> Response:
        params = validate_query(TOP_PRODUCTS_PARAMS, request.query_params)
        rows = get_store().top_products(
            params["limit"], params["by"], params.get("start_date"), params.get("end_date")
        )
        return Response(top_products_body(rows))

    @extend_schema(
        operation_id="stats_by_hour",
        summary="Every local hour of a day of the shop's time zone: orders, net, gross and "
        "refunded revenue",
        description=(
            "The day's hours in STATS_TIME_ZONE: 24, or 23 and 25 on the days daylight saving "
            "starts and ends (each hour named by when it began, with its UTC offset). Orders "
            "count in the hour they were placed, with their gross value; refunds and "
            "cancellations in the hour they occurred (whenever their order was); total_revenue "
            "is net (gross_revenue - refunded), as in /stats/by-date. compare=previous adds the "
            "day before under `previous`. One HMGET per shard."
        ),
        parameters=[HourParams],
        responses={
            200: HourRangeSerializer,
            400: parameter_error(
                "not a day", {"date": ["Must be a date in the form YYYY-MM-DD (got '2025-1-1')."]}
            ),
            **PROTECTED_ERRORS,
        },
    )
    @action(detail=False, methods=["get"], url_path="by-hour", url_name="by-hour")
    def by_hour(self, request: Request) -> Response:
        params = validate_query(HOUR_PARAMS, request.query_params)
        zone = settings.STATS_TIME_ZONE
        day = params.get("date") or timezone.now().astimezone(zone).date()
        if params.get("compare") != "previous":
            return Response(by_hour_body(day, zone.key, get_store().by_hour(day, day)))
        before = day - timedelta(days=1)
        hours = get_store().by_hour(before, day)  # both days in one read
        split = next(i for i, h in enumerate(hours) if h.start.date() == day)
        previous = (before, hours[:split])
        return Response(by_hour_body(day, zone.key, hours[split:], previous))

    @staticmethod
    def _limit(request: Request) -> int:
        limit: int = validate_query(LIMIT_PARAMS, request.query_params)["limit"]
        return limit


class HealthViewSet(FormatParamMixin, ViewSet):
    """Open to everyone and never throttled: load balancers and orchestrators poll it.

    Each call pings Redis and the database; whether every primary answers, and its version,
    comes from the INFO cache /metrics uses (read at most once a minute per process). Node
    addresses and versions are shown only to callers who may read the stats (StatsAccess:
    ``stats.view_stats``, or everyone with STATS_API_AUTH=none, as on /metrics).
    """

    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    def get_authenticators(self) -> list[Any]:
        return authenticators_for_settings()

    def perform_authentication(self, request: Request) -> None:
        """Authenticate lazily, in ``_shows_nodes``: credentials only add the node details,
        so a bad token or a database down gets the anonymous answer, not a 401 or a 503."""

    @extend_schema(
        operation_id="health",
        summary="Liveness of Redis and the database",
        description=(
            "Open to everyone, never throttled. `redis_nodes` (each primary's address, version "
            "and eviction policy, read at most once a minute) only for callers who may read the "
            "stats: an account with the stats.view_stats permission (over HTTPS when the site "
            "redirects to it), or everyone when STATS_API_AUTH is none."
        ),
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="A dependency is unavailable."),
        },
    )
    def check(self, request: Request) -> Response:
        latency = _redis_latency_ms()
        nodes = [] if latency is None else get_store().servers(max_age=SERVER_INFO_MAX_AGE)
        database_ok = _database_ok()
        healthy = latency is not None and database_ok and all(n.reachable for n in nodes)
        data: dict[str, Any] = {
            "status": "healthy" if healthy else "unhealthy",
            "redis": "connected" if latency is not None else "unavailable",
            "redis_latency_ms": round(latency, 3) if latency is not None else None,
            "database": "connected" if database_ok else "unavailable",
            "timestamp": timezone.now(),
        }
        if self._shows_nodes(request):
            data["redis_nodes"] = nodes
        response = Response(
            HealthSerializer(data).data,
            status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        add_never_cache_headers(response)
        return response

    def _shows_nodes(self, request: Request) -> bool:
        if settings.STATS_API_AUTH == "none":
            return True
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            # Plain HTTP reaches /health only through its exemption from the HTTPS redirect,
            # and a token must not travel unencrypted: credentials are not honoured here.
            return False
        try:
            return StatsAccess().has_permission(request, self)
        except (APIException, DatabaseError, InterfaceError):
            # A bad token (401 elsewhere), or the database that holds tokens down (the
            # "database" field says so): anonymous, for the rest of this request too.
            # None is the unauthenticated user here (UNAUTHENTICATED_USER); the stubs say a user.
            request.user, request.auth = None, None  # type: ignore[assignment]
            return False


def _redis_latency_ms() -> float | None:
    try:
        return get_store().ping()
    except StoreUnavailableError as exc:
        logger.warning("health: redis unavailable: %s", exc)
        return None


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not usable", whatever the backend raises
        logger.warning("health: database unavailable: %s", exc)
        return False
    return True


class MetricsViewSet(ProtectedViewSet):
    """``waiting_events`` reads the refunds and cancellations waiting for their order from the
    database: another app's fact, handed in by ``orderpipe/urls.py`` (``as_view``'s keyword)
    so that stats does not import orders; without it the JSON says null and the text form
    leaves the gauges out."""

    waiting_events: WaitingSource | None = None
    renderer_classes = [
        ExactJSONRenderer,
        BrowsableAPIRenderer,
        OpenMetricsRenderer,
        PrometheusTextRenderer,
    ]

    @extend_schema(
        operation_id="metrics",
        summary="Order totals and ingestion counters (JSON, or Prometheus/OpenMetrics text)",
        description=(
            "JSON by default. Prometheus text exposition for `Accept: text/plain` (e.g. "
            "`text/plain;version=0.0.4`) or `?format=prometheus`; OpenMetrics for "
            "`Accept: application/openmetrics-text` or `?format=openmetrics`. Protected like "
            "the stats endpoints when STATS_API_AUTH is set (it exposes revenue). "
            "`total_revenue` is net (gross_revenue - refunded), `average_order_value` gross / "
            "orders. In the text forms revenue counters only grow: `orderpipe_revenue_total` "
            "is gross, `orderpipe_refunded_total` the refunds, `orderpipe_net_revenue` a gauge."
        ),
        parameters=[
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=["json", "prometheus", "openmetrics"],
                description="Overrides the Accept header.",
            )
        ],
        responses={
            (200, "application/json"): MetricsSerializer,
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="Prometheus text."),
            (200, "application/openmetrics-text"): OpenApiResponse(
                OpenApiTypes.STR, description="OpenMetrics text."
            ),
            (400, "application/json"): parameter_error(
                "unknown format",
                {"format": ["Must be one of: api, json, openmetrics, prometheus."]},
            ),
            **{(code, "application/json"): r for code, r in PROTECTED_ERRORS.items()},
        },
    )
    def scrape(self, request: Request) -> Response:
        snapshot = MetricsSnapshot.read(get_store(), timezone.now(), self.waiting_events)
        if isinstance(request.accepted_renderer, ExpositionRenderer):
            response = Response(snapshot)
        else:
            response = Response(metrics_body(snapshot))
        add_never_cache_headers(response)
        return response


class ApiRootView(FormatParamMixin, APIView):
    """The entry point of the browsable API: a link to every endpoint."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="api_root", summary="Links to every endpoint", responses=ApiRootSerializer
    )
    def get(self, request: Request) -> Response:
        def url(name: str, **kwargs: Any) -> str:
            return request.build_absolute_uri(reverse(name, kwargs=kwargs))

        def template(name: str, field: str) -> str:
            placeholder = field.upper()
            return url(name, **{field: placeholder}).replace(placeholder, f"{{{field}}}")

        data = {
            "user_stats": template("user-stats", "user_id"),
            "order": template("order", "order_id"),
            "user_orders": template("user-orders", "user_id"),
            "global_stats": url("stats-global"),
            "top_spenders": url("stats-top-spenders") + "?limit=5",
            "top_buyers": url("stats-top-buyers") + "?limit=5",
            "by_date": url("stats-by-date") + "?start_date={YYYY-MM-DD}&end_date={YYYY-MM-DD}",
            "top_products": url("stats-top-products") + "?limit=5&by=revenue",
            "product_stats": template("product-stats", "product_id"),
            "by_hour": url("stats-by-hour"),
            "health": url("health"),
            "metrics": url("metrics"),
            "schema": url("schema"),
            "docs": url("docs"),
        }
        return Response(ApiRootSerializer(data).data)
