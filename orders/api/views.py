"""Orders API: the ledger and the rejected messages, read from the database.

``GET /orders/{order_id}`` answers whether an order was accepted (and as what, and what its
refunds and cancellations did to it) or only ever rejected (and why); ``GET
/users/{user_id}/orders`` lists a user's accepted orders the same way, a page's events read in
one query. Nothing
here reads Redis: the ledger is the record of truth. Access, throttling and ``?format=`` are
shared with the stats API (``orderpipe.api``); a database outage is a 503 through the shared
exception handler.
"""

from __future__ import annotations

from typing import Any, cast

from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orderpipe.api.access import ProtectedAPIMixin
from orderpipe.api.errors import PROTECTED_ERRORS, DetailSerializer, parameter_error
from orderpipe.api.ids import path_id_parameter, too_long_error, validate_path_id, validate_user_id
from orders.api.pagination import OrderCursorPagination
from orders.api.serializers import (
    REJECTED,
    SERVED_FIELDS,
    AcceptedOrderSerializer,
    RejectedOrderSerializer,
)
from orders.event_rules import ORDER_STATUSES
from orders.ledger import events_of_orders
from orders.models import AcceptedOrder, RejectedOrder

# A rejected id's page lists this many of its messages (a producer stuck in a retry loop can
# send thousands); rejection_count still tells how many there are.
MAX_REJECTIONS_SHOWN = 100

ORDERS_ERRORS: dict[int, OpenApiResponse] = {
    **PROTECTED_ERRORS,
    503: OpenApiResponse(DetailSerializer, description="The database is unavailable."),
}


def _can_be_stored(value: str) -> bool:
    """No stored id holds a NUL (validation refuses control characters), and PostgreSQL
    refuses one in a query parameter: such an id is simply not found, without a query."""
    return "\x00" not in value


class OrderDetailView(ProtectedAPIMixin, APIView):
    @extend_schema(
        operation_id="order",
        summary="One order: accepted (from the ledger), else its rejected messages",
        description=(
            "`status` says which: `accepted`, `partially_refunded`, `refunded` or `cancelled` "
            "is the ledger row (the order as first recorded) with its refunds and "
            "cancellations (`events`, `refunded`, `net_value`); `rejected` means no accepted "
            "order carries this id, only rejected messages, each with its reasons. An id that "
            "is in the ledger answers with the order even when later messages with it were "
            "rejected (a conflicting re-send, a refund above its value, say)."
        ),
        parameters=[
            path_id_parameter(
                "order_id",
                "The order's id as sent",
                [
                    OpenApiExample("accepted", value="ORD1000"),
                    OpenApiExample("rejected", value="ORD-BAD"),
                ],
            )
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="OrderLookup",
                serializers={
                    **dict.fromkeys(ORDER_STATUSES, AcceptedOrderSerializer),
                    REJECTED: RejectedOrderSerializer,
                },
                resource_type_field_name="status",
            ),
            400: parameter_error("order_id too long", too_long_error("order_id")),
            404: OpenApiResponse(
                DetailSerializer, description="No accepted or rejected message has this id."
            ),
            **ORDERS_ERRORS,
        },
    )
    def get(self, request: Request, order_id: str) -> Response:
        validate_path_id("order_id", order_id)
        if _can_be_stored(order_id):
            try:
                order = AcceptedOrder.objects.only(*SERVED_FIELDS).get(order_id=order_id)
            except AcceptedOrder.DoesNotExist:
                pass
            else:
                events = events_of_orders([order.order_id])
                return Response(AcceptedOrderSerializer(order, context={"events": events}).data)
            rejections = list(
                RejectedOrder.objects.filter(order_id=order_id)
                .order_by("received_at", "pk")
                .only("received_at", "reasons")[:MAX_REJECTIONS_SHOWN]
            )
            if rejections:
                count = len(rejections)
                if count == MAX_REJECTIONS_SHOWN:
                    count = RejectedOrder.objects.filter(order_id=order_id).count()
                data = {"order_id": order_id, "rejection_count": count, "rejections": rejections}
                return Response(RejectedOrderSerializer(data).data)
        raise NotFound(f"No accepted or rejected order has the id {order_id}.")


class UserOrdersView(ProtectedAPIMixin, ListAPIView[AcceptedOrder]):
    serializer_class = AcceptedOrderSerializer
    pagination_class = OrderCursorPagination

    def get_queryset(self) -> QuerySet[AcceptedOrder]:
        user_id = validate_user_id(self.kwargs["user_id"])
        if not _can_be_stored(user_id):
            return AcceptedOrder.objects.none()
        # The pagination orders the rows (ledger_user_time_idx) and reads one page of them.
        return AcceptedOrder.objects.filter(user_id=user_id).only(*SERVED_FIELDS)

    def get_serializer(self, *args: Any, **kwargs: Any) -> AcceptedOrderSerializer:
        """The page's serializer, with the page's events read in one query."""
        page: list[AcceptedOrder] = args[0] if args else []
        kwargs["context"] = {
            **self.get_serializer_context(),
            "events": events_of_orders([order.order_id for order in page]),
        }
        return cast(AcceptedOrderSerializer, super().get_serializer(*args, **kwargs))

    @extend_schema(
        operation_id="user_orders",
        summary="A user's accepted orders, newest order time first (ties by order_id descending)",
        description=(
            "Cursor-paginated: follow `next` (older orders) and `previous` (newer ones); both "
            "are null at the ends. A user without orders has an empty `results` list."
        ),
        parameters=[
            path_id_parameter(
                "user_id",
                "The user's id as sent in orders",
                [OpenApiExample("a user with orders", value="U100")],
            )
        ],
        responses={
            200: AcceptedOrderSerializer(many=True),
            400: parameter_error(
                "page_size too large",
                {"page_size": ["Ensure this value is less than or equal to 100."]},
            ),
            **ORDERS_ERRORS,
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
