"""GET /orders/{order_id} and GET /users/{user_id}/orders over the ledger and the rejects.

Rows are written the way the consumer writes them (``orders.ledger.record_orders`` for
accepted orders, ``RejectedOrder.objects.record_many`` for rejects), and every answer is
compared whole, parsed with ``Decimal`` so that money is checked digit for digit.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.db import DataError, InterfaceError, OperationalError, ProgrammingError
from rest_framework.test import APIClient

from orders.models import AcceptedOrder, OrderEvent, RejectedOrder, RejectionRecord
from orders.tests.conftest import (
    LEDGER_RECEIVED_AT,
    SENT_AT_MS,
    accept,
    body_of,
    crafted_cursor,
    event_body,
    record,
    sqs_message,
    valid_doc,
)
from orders.validation import Rejection, validate_message

pytestmark = pytest.mark.django_db

RECEIVED_AT = LEDGER_RECEIVED_AT


def parsed(response: Any) -> Any:
    """The JSON body with every number that has a fraction as a Decimal (exact digits)."""
    return json.loads(response.content, parse_float=Decimal)


def reject(body: str, message_id: str, received_at: datetime) -> Rejection:
    rejection = validate_message(body, {"SentTimestamp": SENT_AT_MS})
    assert isinstance(rejection, Rejection), rejection
    record = RejectionRecord(message_id, body, rejection, "orders", 1, received_at)
    RejectedOrder.objects.record_many([record])
    return rejection


def order_doc(order_id: str, user_id: str = "U100", at: str = "2025-08-09T10:15:00Z") -> str:
    return body_of(valid_doc() | {"order_id": order_id, "user_id": user_id, "order_timestamp": at})


def summary(order_id: str, at: str = "2025-08-09T10:15:00Z") -> dict[str, Any]:
    """The JSON of an order recorded from ``order_doc(order_id, at=at)``."""
    return {
        "status": "accepted",
        "order_id": order_id,
        "user_id": "U100",
        "order_value": Decimal("109.97"),
        "order_timestamp": at,
        "items": [
            {"product_id": "P001", "quantity": 2, "price_per_unit": Decimal("19.99")},
            {"product_id": "P042", "quantity": 1, "price_per_unit": Decimal("69.99")},
        ],
        "received_at": "2025-08-09T10:16:00.123456Z",
        "extra": {},  # LEDGER_EXTRA_FIELDS lists none: no shipping_address, no payment_method
        "events": [],
        "refunded": Decimal("0.00"),
        "net_value": Decimal("109.97"),
    }


# --- GET /orders/{order_id} -------------------------------------------------------------------
def test_an_accepted_order_is_served_from_the_ledger(api: APIClient) -> None:
    accept(body_of(valid_doc()))

    response = api.get("/orders/ORD1000")

    assert response.status_code == 200
    assert parsed(response) == summary("ORD1000")


def test_money_keeps_its_exact_digits(api: APIClient) -> None:
    # No product_id, no order_timestamp: the message's SentTimestamp dates the order.
    accept('{"order_id": "EXACT", "user_id": "U-X", "order_value": 0.30,'
           ' "items": [{"quantity": 3, "price_per_unit": 0.10}]}')  # fmt: skip

    response = api.get("/orders/EXACT")

    assert response.status_code == 200
    assert parsed(response) == {
        "status": "accepted",
        "order_id": "EXACT",
        "user_id": "U-X",
        "order_value": Decimal("0.30"),
        "order_timestamp": "2024-08-09T10:15:00Z",
        "items": [{"product_id": None, "quantity": 3, "price_per_unit": Decimal("0.10")}],
        "received_at": "2025-08-09T10:16:00.123456Z",
        "extra": {},
        "events": [],
        "refunded": Decimal("0.00"),
        "net_value": Decimal("0.30"),
    }
    assert b'"order_value":0.30' in response.content
    assert b'"price_per_unit":0.10' in response.content


# --- an order's refunds and cancellations ------------------------------------------------------
def event_json(event_id: str, kind: str, amount: str, items: list[Any], at: str,
               reason: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"event_id": event_id, "kind": kind, "amount": Decimal(amount), "items": items,
            "occurred_at": at, "reason": reason}  # fmt: skip


def test_a_refunded_order_shows_its_refunds_and_what_is_left(api: APIClient) -> None:
    accept(body_of(valid_doc()))
    record(
        sqs_message("m1", event_body("RF-2", amount="10.00", occurred_at="2025-08-12T08:00:00Z")),
        sqs_message("m2", event_body("RF-1", items=[("P001", 1)], reason="arrived damaged")),
    )

    response = api.get("/orders/ORD1000")

    assert response.status_code == 200
    assert parsed(response) == summary("ORD1000") | {
        "status": "partially_refunded",
        "events": [
            event_json("RF-1", "refunded", "19.99", [
                {"product_id": "P001", "quantity": 1, "price_per_unit": Decimal("19.99")}
            ], "2025-08-10T09:30:00Z", "arrived damaged"),
            event_json("RF-2", "refunded", "10.00", [], "2025-08-12T08:00:00Z"),
        ],
        "refunded": Decimal("29.99"),
        "net_value": Decimal("79.98"),
    }  # fmt: skip
    assert b'"amount":10.00' in response.content


@pytest.mark.parametrize(
    ("events", "status", "refunded"),
    [
        pytest.param([event_body("RF-1", amount="109.97")], "refunded", "109.97", id="all"),
        pytest.param(
            [event_body("RF-1", amount="9.97"), event_body("CX-1", kind="cancelled",
                                                           occurred_at="2025-08-11T00:00:00Z")],
            "cancelled", "109.97", id="cancelled-after-a-refund",
        ),
        pytest.param([event_body("RF-1", amount="500.00")], "accepted", "0.00",
                     id="a-refused-refund-changes-nothing"),
    ],
)  # fmt: skip
def test_an_orders_status_says_what_its_events_did(
    api: APIClient, events: list[str], status: str, refunded: str
) -> None:
    accept(body_of(valid_doc()))
    batch = [sqs_message(f"m{i}", body) for i, body in enumerate(events)]
    record(*batch)

    body = parsed(api.get("/orders/ORD1000"))

    assert (body["status"], body["refunded"], body["net_value"]) == (
        status,
        Decimal(refunded),
        Decimal("109.97") - Decimal(refunded),
    )


def test_a_users_orders_show_each_orders_events(api: APIClient) -> None:
    accept(order_doc("O-NEW", at="2025-08-09T12:00:00Z"), "m-new")
    accept(order_doc("O-OLD", at="2025-08-09T11:00:00Z"), "m-old")
    record(sqs_message("m-cx", event_body("CX-1", "O-OLD", kind="cancelled")))

    page = follow(api, "/users/U100/orders")

    assert page["results"] == [
        summary("O-NEW", "2025-08-09T12:00:00Z"),
        summary("O-OLD", "2025-08-09T11:00:00Z") | {
            "status": "cancelled",
            "events": [event_json("CX-1", "cancelled", "109.97", [], "2025-08-10T09:30:00Z")],
            "refunded": Decimal("109.97"),
            "net_value": Decimal("0.00"),
        },
    ]  # fmt: skip


def test_an_id_only_rejected_messages_carry_lists_each_rejection_oldest_first(
    api: APIClient,
) -> None:
    bad = valid_doc() | {"order_id": "ORD-BAD"}
    reject(body_of(bad | {"items": [], "order_timestamp": "yesterday"}), "msg-2",
           RECEIVED_AT + timedelta(minutes=5))  # fmt: skip
    reject(body_of(bad | {"order_value": 1}), "msg-1", RECEIVED_AT)

    response = api.get("/orders/ORD-BAD")

    assert response.status_code == 200
    assert response.json() == {
        "status": "rejected",
        "order_id": "ORD-BAD",
        "rejection_count": 2,
        "rejections": [
            {
                "received_at": "2025-08-09T10:16:00.123456Z",
                "reasons": [
                    {
                        "code": "value_mismatch",
                        "field": "order_value",
                        "message": "order_value 1.00 does not equal the items' total 109.97",
                    }
                ],
            },
            {
                "received_at": "2025-08-09T10:21:00.123456Z",
                "reasons": [
                    {
                        "code": "invalid_items",
                        "field": "items",
                        "message": "items must not be empty",
                    },
                    {
                        "code": "invalid_timestamp",
                        "field": "order_timestamp",
                        "message": "order_timestamp is not an ISO 8601 timestamp: 'yesterday'",
                    },
                ],
            },
        ],
    }


def test_many_rejections_are_capped_at_100_and_counted(api: APIClient) -> None:
    bad = body_of(valid_doc() | {"order_id": "ORD-LOOP", "order_value": 1})
    rejection = validate_message(bad, {"SentTimestamp": SENT_AT_MS})
    assert isinstance(rejection, Rejection)
    RejectedOrder.objects.record_many([
        RejectionRecord(f"m{i:03}", bad, rejection, "orders", 1, RECEIVED_AT + timedelta(seconds=i))
        for i in range(101)
    ])  # fmt: skip

    body = api.get("/orders/ORD-LOOP").json()

    assert body["rejection_count"] == 101
    assert len(body["rejections"]) == 100
    assert body["rejections"][0]["received_at"] == "2025-08-09T10:16:00.123456Z"
    assert body["rejections"][-1]["received_at"] == "2025-08-09T10:17:39.123456Z"


def test_an_accepted_order_wins_over_rejected_messages_with_its_id(api: APIClient) -> None:
    accept(body_of(valid_doc()))
    reject(body_of(valid_doc() | {"order_value": 1}), "msg-conflict", RECEIVED_AT)

    response = api.get("/orders/ORD1000")

    assert response.status_code == 200
    assert parsed(response) == summary("ORD1000")


def test_an_unknown_order_id_is_404(api: APIClient) -> None:
    response = api.get("/orders/NOPE")

    assert response.status_code == 404
    assert response.json() == {"detail": "No accepted or rejected order has the id NOPE."}


@pytest.mark.parametrize(
    "order_id", ["A/B", "ORD 1", "ünï/çødé?#%&", "x/orders", "100%", "..", "-"]
)
def test_order_ids_with_any_characters_are_found_percent_encoded(
    api: APIClient, order_id: str
) -> None:
    accept(order_doc(order_id))
    response = api.get(f"/orders/{quote(order_id, safe='')}")

    assert response.status_code == 200
    assert parsed(response) == summary(order_id)


@pytest.mark.parametrize(
    ("order_id", "status", "body"),
    [
        ("x" * 129, 400, {"order_id": ["Must be at most 128 characters long."]}),
        ("x" * 128, 404, {"detail": f"No accepted or rejected order has the id {'x' * 128}."}),
        ("a\x00b", 404, {"detail": "No accepted or rejected order has the id a\x00b."}),
        ("a\nb", 404, {"detail": "No accepted or rejected order has the id a\nb."}),
    ],
)
def test_ids_no_order_can_have(api: APIClient, order_id: str, status: int, body: Any) -> None:
    response = api.get(f"/orders/{quote(order_id, safe='')}")

    assert response.status_code == status
    assert response.json() == body


def test_an_unknown_format_is_400(api: APIClient) -> None:
    response = api.get("/orders/ORD1000", {"format": "xml"})

    assert response.status_code == 400
    assert response.json() == {"format": ["Must be one of: api, json."]}


# --- GET /users/{user_id}/orders ---------------------------------------------------------------
def follow(api: APIClient, url: str) -> Any:
    response = api.get(url)
    assert response.status_code == 200, response.content
    return parsed(response)


def ids(page: dict[str, Any]) -> list[str]:
    return [order["order_id"] for order in page["results"]]


@pytest.fixture
def tied_orders() -> list[str]:
    """Seven orders of U100, newest order time first; T2..T6 share one timestamp."""
    accept(order_doc("NEWEST", at="2025-08-09T12:00:00Z"), "m-newest")
    for n in (4, 2, 6, 3, 5):  # insertion order must not matter
        accept(order_doc(f"T{n}", at="2025-08-09T11:00:00Z"), f"m-t{n}")
    accept(order_doc("OLDEST", at="2025-08-09T10:00:00Z"), "m-oldest")
    accept(order_doc("OTHER", user_id="U200"), "m-other")
    return ["NEWEST", "T6", "T5", "T4", "T3", "T2", "OLDEST"]


def test_a_users_orders_newest_first_ties_by_order_id_descending(
    api: APIClient, tied_orders: list[str]
) -> None:
    response = api.get("/users/U100/orders")

    assert response.status_code == 200
    expected = [
        summary(order_id, at)
        for order_id, at in [
            ("NEWEST", "2025-08-09T12:00:00Z"),
            *[(f"T{n}", "2025-08-09T11:00:00Z") for n in (6, 5, 4, 3, 2)],
            ("OLDEST", "2025-08-09T10:00:00Z"),
        ]
    ]
    assert parsed(response) == {"next": None, "previous": None, "results": expected}


def test_pages_forwards_and_backwards_through_ties(api: APIClient, tied_orders: list[str]) -> None:
    pages = [follow(api, "/users/U100/orders?page_size=2")]
    while pages[-1]["next"]:
        pages.append(follow(api, pages[-1]["next"]))

    assert [ids(p) for p in pages] == [["NEWEST", "T6"], ["T5", "T4"], ["T3", "T2"], ["OLDEST"]]
    assert pages[0]["previous"] is None
    assert all("page_size=2" in p["next"] for p in pages[:-1])

    back = [pages[-1]]
    while back[-1]["previous"]:
        back.append(follow(api, back[-1]["previous"]))

    assert [ids(p) for p in back] == [["OLDEST"], ["T3", "T2"], ["T5", "T4"], ["NEWEST", "T6"]]
    assert back[-1]["previous"] is None
    # A previous page's next link leads forward again, to the same page as before.
    assert ids(follow(api, back[1]["next"])) == ["OLDEST"]
    assert ids(follow(api, back[2]["next"])) == ["T3", "T2"]


def test_a_page_of_only_tied_orders_still_moves_on(api: APIClient, tied_orders: list[str]) -> None:
    first = follow(api, "/users/U100/orders?page_size=1")
    second = follow(api, first["next"])
    third = follow(api, second["next"])

    assert (ids(first), ids(second), ids(third)) == (["NEWEST"], ["T6"], ["T5"])
    assert ids(follow(api, third["previous"])) == ["T6"]


def test_orders_recorded_meanwhile_appear_on_the_previous_page(
    api: APIClient, tied_orders: list[str]
) -> None:
    first = follow(api, "/users/U100/orders?page_size=2")
    second = follow(api, first["next"])
    accept(order_doc("T7", at="2025-08-09T11:00:00Z"), "m-t7")

    assert ids(follow(api, second["previous"])) == ["T7", "T6"]
    assert ids(follow(api, second["next"])) == ["T3", "T2"]


@pytest.mark.parametrize("user_id", ["NOBODY", "a%00b", "a%0Ab"])  # no stored id holds them
def test_a_user_without_orders_has_an_empty_list(api: APIClient, user_id: str) -> None:
    response = api.get(f"/users/{user_id}/orders")

    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}


@pytest.mark.parametrize("user_id", ["U/1", "x/stats", "x/orders", "a b?c#d", "ü"])
def test_user_ids_with_any_characters_are_found_percent_encoded(
    api: APIClient, user_id: str
) -> None:
    accept(order_doc("ORD-X", user_id=user_id))
    response = api.get(f"/users/{quote(user_id, safe='')}/orders")

    assert response.status_code == 200
    assert ids(parsed(response)) == ["ORD-X"]
    assert parsed(response)["results"][0]["user_id"] == user_id


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ({"page_size": "0"}, {"page_size": ["Ensure this value is greater than or equal to 1."]}),
        ({"page_size": "101"}, {"page_size": ["Ensure this value is less than or equal to 100."]}),
        ({"page_size": "abc"}, {"page_size": ["A valid integer is required."]}),
        ({"page_size": ""}, {"page_size": ["A valid integer is required."]}),
        ({"page_size": "-1"}, {"page_size": ["Ensure this value is greater than or equal to 1."]}),
        ({"cursor": "not-a-cursor"}, {"cursor": [
            "Invalid cursor: use the next or previous link of an earlier page."]}),
        ({"cursor": ""}, {"cursor": [
            "Invalid cursor: use the next or previous link of an earlier page."]}),
        # Well-formed base64 of DRF's own shape, but without the (time, order_id) position.
        ({"cursor": "cD0yMDI1"}, {"cursor": [
            "Invalid cursor: use the next or previous link of an earlier page."]}),
        # Given twice: Django would read the last value and answer another request.
        ({"page_size": ["2", "3"]}, {"page_size": ["Give this parameter once."]}),
        ({"page_size": ["2", "x"], "cursor": ["a", "b"]},
         {"page_size": ["Give this parameter once."], "cursor": ["Give this parameter once."]}),
    ],
)  # fmt: skip
def test_bad_page_parameters_are_400_naming_them(
    api: APIClient, tied_orders: list[str], query: dict[str, str], body: Any
) -> None:
    response = api.get("/users/U100/orders", query)

    assert response.status_code == 400
    assert response.json() == body


@pytest.mark.parametrize(
    "position",
    [
        # Year 1 with an offset: year 0 in UTC, which SQLite's conversion cannot hold (a 500).
        "0001-01-01T00:00:00+05:00 T4",
        "9999-12-31T23:00:00-05:00 T4",  # and year 10000 the other way
        "2025-08-09T11:00:00+01:00 T4",  # any offset but UTC: no link carries one
        "2025-08-09T11:00:00 T4",  # no offset at all
        # A NUL in the order id: PostgreSQL refuses it in a parameter (a 503 "database
        # unavailable" and an ERROR); no stored id can hold it anyway.
        "2025-08-09T11:00:00+00:00 T\x004",
        "2025-08-09T11:00:00+00:00 T\n4",  # any control character
        "2025-08-09T11:00:00+00:00 " + "T" * 129,  # longer than any id
        "2025-08-09T11:00:00+00:00 ",  # no id
    ],
)
@pytest.mark.parametrize("reverse", [False, True], ids=["next", "previous"])
def test_a_crafted_cursor_is_400_on_every_database(
    api: APIClient, tied_orders: list[str], position: str, reverse: bool
) -> None:
    response = api.get("/users/U100/orders", {"cursor": crafted_cursor(position, reverse)})

    assert response.status_code == 400
    assert response.json() == {
        "cursor": ["Invalid cursor: use the next or previous link of an earlier page."]
    }


@pytest.mark.parametrize(
    "position",
    ["0001-01-01T00:00:00+00:00 T4", "9999-12-31T23:59:59.999999+00:00 T4"],
)
def test_a_cursor_at_either_end_of_time_is_a_page(
    api: APIClient, tied_orders: list[str], position: str
) -> None:
    """The years a link may carry are every year the ledger can: the ends are pages too."""
    older = position.startswith("0001")
    body = follow(api, f"/users/U100/orders?cursor={crafted_cursor(position)}")

    assert ids(body) == ([] if older else tied_orders[:7])


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (OperationalError("server closed the connection unexpectedly"), 503,
         {"detail": "The database is unavailable; try again shortly."}),
        (InterfaceError("connection already closed"), 503,
         {"detail": "The database is unavailable; try again shortly."}),
        # About the query, not the connection: a bug to fix, not an outage to wait out.
        (DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), 500,
         {"detail": "Internal server error."}),
        (ProgrammingError('relation "orders_acceptedorder" does not exist'), 500,
         {"detail": "Internal server error."}),
    ],
    ids=["operational", "interface", "data", "programming"],
)  # fmt: skip
def test_only_a_lost_database_connection_is_a_503(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
    body: dict[str, str],
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("orders.api.views.AcceptedOrder.objects.only", fail)
    api = APIClient(raise_request_exception=False)

    with caplog.at_level(logging.WARNING):
        response = api.get("/orders/ORD1000")

    assert (response.status_code, response.json()) == (status, body)
    if status == 503:
        assert response["Retry-After"] == "5"
    else:  # logged with its traceback, for someone to fix
        (logged,) = [r for r in caplog.records if r.name == "django.request"]
        assert logged.exc_info is not None
        assert (logged.levelno, logged.exc_info[1]) == (logging.ERROR, error)


@pytest.mark.parametrize("page_size", ["1", "100"])
def test_page_size_bounds_are_accepted(
    api: APIClient, tied_orders: list[str], page_size: str
) -> None:
    body = follow(api, f"/users/U100/orders?page_size={page_size}")

    assert ids(body) == tied_orders[: int(page_size)]


def test_the_default_page_is_20_orders(api: APIClient) -> None:
    for i in range(21):
        accept(order_doc(f"ORD{i:02}"), f"m{i}")

    first = follow(api, "/users/U100/orders")
    second = follow(api, first["next"])

    assert ids(first) == [f"ORD{i:02}" for i in range(20, 0, -1)]
    assert (ids(second), second["next"]) == (["ORD00"], None)


def test_an_over_long_user_id_is_400(api: APIClient) -> None:
    response = api.get(f"/users/{'u' * 129}/orders")

    assert response.status_code == 400
    assert response.json() == {"user_id": ["Must be at most 128 characters long."]}


def test_another_users_cursor_leads_back_to_the_first_page(
    api: APIClient, tied_orders: list[str]
) -> None:
    second = follow(api, follow(api, "/users/U100/orders?page_size=2")["next"])
    cursor = second["previous"].split("cursor=")[1].split("&")[0]  # orders newer than T5

    body = follow(api, f"/users/U200/orders?cursor={cursor}")  # U200 has none that new

    assert body == {"next": "http://testserver/users/U200/orders", "previous": None,
                    "results": []}  # fmt: skip


def test_the_browsable_api_shows_pages_with_their_links(
    api: APIClient, tied_orders: list[str]
) -> None:
    page = api.get("/users/U100/orders?page_size=2", HTTP_ACCEPT="text/html")
    order = api.get("/orders/T6", HTTP_ACCEPT="text/html")

    assert (page.status_code, order.status_code) == (200, 200)
    assert page["Content-Type"] == order["Content-Type"] == "text/html; charset=utf-8"
    next_link = follow(api, "/users/U100/orders?page_size=2")["next"].replace("&", "&amp;")
    assert f'<a href="{next_link}" rel="next"' in page.content.decode()


# --- Queries per request ---------------------------------------------------------------------
def test_a_page_is_two_queries_whatever_its_size_and_its_events(
    api: APIClient, django_assert_num_queries: Any
) -> None:
    AcceptedOrder.objects.bulk_create(
        AcceptedOrder(
            order_id=f"B{i:03}", user_id="U-BULK", value_cents=1999,
            ordered_at=RECEIVED_AT - timedelta(seconds=i), day=RECEIVED_AT.date(),
            items=[{"product_id": "P", "quantity": 1, "price_per_unit": "19.99"}],
            fingerprint="f", message_id=f"m{i}", received_at=RECEIVED_AT, currency="USD",
        )
        for i in range(150)
    )  # fmt: skip
    OrderEvent.objects.bulk_create(
        OrderEvent(
            event_id=f"E{i:03}-{n}", order_id=f"B{i:03}", user_id="U-BULK", kind="refunded",
            amount_cents=100, items=[], occurred_at=RECEIVED_AT, currency="USD",
            fingerprint="f", message_id=f"e{i}-{n}", received_at=RECEIVED_AT,
        )
        for i in range(0, 150, 3)
        for n in range(2)
    )  # fmt: skip
    for size, events in (("1", 2), ("100", 68)):
        with django_assert_num_queries(2) as page:  # the page's orders, the page's events
            first = follow(api, f"/users/U-BULK/orders?page_size={size}")
        assert sum(len(order["events"]) for order in first["results"]) == events
        with django_assert_num_queries(2):
            follow(api, first["next"])
        assert '"body"' not in page.captured_queries[0]["sql"]  # raw bodies stay in the DB


@pytest.mark.parametrize(("path", "queries"), [
    ("/orders/ORD1000", 2),  # the ledger row, its events
    ("/orders/ORD-BAD", 2),  # no ledger row; the rejections
    ("/orders/NOPE", 2),
])  # fmt: skip
def test_an_order_lookup_takes_at_most_two_queries(
    api: APIClient, django_assert_num_queries: Any, path: str, queries: int
) -> None:
    accept(body_of(valid_doc()))
    bad = valid_doc() | {"order_id": "ORD-BAD", "order_value": 1}
    for i in range(5):
        reject(body_of(bad), f"msg-{i}", RECEIVED_AT)

    with django_assert_num_queries(queries):
        api.get(path)


def test_queries_stay_constant_with_token_authentication(
    settings, analyst: User, client_as: Any, tied_orders: list[str],
    django_assert_max_num_queries: Any,
) -> None:  # fmt: skip
    settings.STATS_API_AUTH = "token"
    client = client_as(analyst, "token")
    # Token + user, the user's group permissions, the page, its events.
    with django_assert_max_num_queries(5):
        assert client.get("/users/U100/orders?page_size=1").status_code == 200
    with django_assert_max_num_queries(5):
        assert client.get("/users/U100/orders?page_size=100").status_code == 200


# --- Access: the stats API's rules (each status per path: tests/test_access.py) --------------
@pytest.fixture
def ledger() -> None:
    accept(body_of(valid_doc()))


@pytest.mark.parametrize("mode", ["token", "session"])
def test_an_account_with_the_permission_reads_orders(
    ledger: None, settings, analyst: User, client_as: Any, mode: str
) -> None:
    settings.STATS_API_AUTH = mode
    client = client_as(analyst, mode)

    order = client.get("/orders/ORD1000")
    listing = client.get("/users/U100/orders")

    assert (order.status_code, listing.status_code) == (200, 200)
    assert parsed(order) == summary("ORD1000")
    assert parsed(listing) == {"next": None, "previous": None, "results": [summary("ORD1000")]}
