"""Cursor pagination of a user's ledger orders: newest order time first, ties by order_id.

DRF's ``CursorPagination`` keeps only the first ordering field in its cursor and steps over
ties with an offset, which skips or repeats rows when many orders share one ``ordered_at``
and a client pages backwards (encode/django-rest-framework#7709), and stops working past
``offset_cutoff`` ties. Here the cursor's position is the whole sort key,
``(ordered_at, order_id)``, unique because ``order_id`` is: every page is one range read of
the ``ledger_user_time_idx`` index, with no offset, forwards and backwards. The links, the
cursor encoding and the ``next``/``previous``/``results`` envelope stay DRF's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.db.models import Q, QuerySet
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.utils.urls import remove_query_param

from orderpipe.api.errors import refuse_repeated
from orders.validation import id_problem

if TYPE_CHECKING:
    from rest_framework.views import APIView

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
INVALID_CURSOR = "Invalid cursor: use the next or previous link of an earlier page."
PAGE_SIZE_HELP = f"Orders per page, 1-{PAGE_SIZE_MAX} (default {PAGE_SIZE_DEFAULT})."


class PageParams(serializers.Serializer[dict[str, Any]]):
    page_size = serializers.IntegerField(
        required=False,
        default=PAGE_SIZE_DEFAULT,
        min_value=1,
        max_value=PAGE_SIZE_MAX,
        help_text=PAGE_SIZE_HELP,
    )


class OrderCursorPagination(CursorPagination):
    """``?cursor=`` from a ``next``/``previous`` link, ``?page_size=`` 1-100 (default 20).

    A bad ``page_size`` or a cursor this API did not write is a 400 naming the parameter,
    like every other parameter (DRF would silently use the default, or answer 404).
    """

    ordering = ("-ordered_at", "-order_id")
    page_size = PAGE_SIZE_DEFAULT
    page_size_query_param = "page_size"
    max_page_size = PAGE_SIZE_MAX
    page_size_query_description = PAGE_SIZE_HELP
    cursor_query_description = "Opaque: the cursor of a next or previous link."
    base_url: str  # set by paginate_queryset, before any link is made

    def get_page_size(self, request: Request) -> int:
        refuse_repeated(request.query_params, (self.page_size_query_param, self.cursor_query_param))
        # A plain dict, not the QueryDict: DRF reads an empty HTML-form value as "absent".
        params = PageParams(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        page_size: int = params.validated_data["page_size"]
        return page_size

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [INVALID_CURSOR]}) from None
        if cursor is None:
            return None
        position = _parse_position(cursor.position)
        if position is None:  # every link written here carries a position
            raise ValidationError({self.cursor_query_param: [INVALID_CURSOR]})
        return _cursor(cursor.reverse, position)

    def paginate_queryset(
        self,
        queryset: QuerySet[Any] | Sequence[Any],
        request: Request,
        view: APIView | None = None,
    ) -> list[Any]:
        if not isinstance(queryset, QuerySet):
            raise TypeError("OrderCursorPagination pages a QuerySet (it orders and filters it)")
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.cursor = self.decode_cursor(request)
        reverse = self.cursor is not None and self.cursor.reverse
        if reverse:  # read upwards from the position, then show the rows in list order
            queryset = queryset.order_by("ordered_at", "order_id")
        else:
            queryset = queryset.order_by(*self.ordering)
        if self.cursor is not None:
            at, order_id = _sort_key(self.cursor)
            if reverse:
                after = Q(ordered_at__gt=at) | Q(ordered_at=at, order_id__gt=order_id)
            else:
                after = Q(ordered_at__lt=at) | Q(ordered_at=at, order_id__lt=order_id)
            queryset = queryset.filter(after)
        rows = list(queryset[: self.page_size + 1])
        more = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        if reverse:
            self.page.reverse()
        # Rows are never deleted, so the row a position was taken from, and every row on
        # the far side of it, still exists: a cursor means there is a page that way.
        self.has_next = more if not reverse else True
        self.has_previous = (self.cursor is not None) if not reverse else more
        self.display_page_controls = self.has_next or self.has_previous
        return self.page

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        if not self.page:  # only a cursor from elsewhere (another user's list) gets here
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self.encode_cursor(_cursor(False, _position(self.page[-1])))

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.page:
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self.encode_cursor(_cursor(True, _position(self.page[0])))

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response = super().get_paginated_response_schema(schema)
        response["required"] = ["next", "previous", "results"]
        return response

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": PAGE_SIZE_MAX,
                    "default": PAGE_SIZE_DEFAULT,
                }
        return parameters


def _position(order: Any) -> str:
    """``<ordered_at ISO 8601> <order_id>``: the timestamp has no space, the id may."""
    return f"{order.ordered_at.isoformat()} {order.order_id}"


def _cursor(reverse: bool, position: str | tuple[datetime, str]) -> Cursor:
    """A DRF cursor holding a position written by ``_position`` (to encode) or its parsed sort
    key (decoded). DRF keeps whatever position it is given (its own are strings)."""
    return Cursor(0, reverse, position)  # type: ignore[arg-type] # the stubs say int


def _sort_key(cursor: Cursor) -> tuple[datetime, str]:
    """The sort key ``decode_cursor`` put in ``cursor``."""
    return cast(tuple[datetime, str], cursor.position)


def _parse_position(text: object) -> tuple[datetime, str] | None:
    """The position ``_position`` wrote, or None for anything else (no position at all too).

    Both halves go into the query, so each must be a value the ledger can hold: a UTC time
    (what the database hands back; another offset could fall outside year 1-9999 when SQLite
    converts it) and a valid order id (PostgreSQL refuses a NUL in a parameter).
    """
    if not isinstance(text, str):
        return None
    stamp, _, order_id = text.partition(" ")
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if at.utcoffset() != timedelta(0) or id_problem(order_id) is not None:
        return None
    return at, order_id
