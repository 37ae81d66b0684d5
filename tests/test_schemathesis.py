"""Property-based checks of the live API against its own OpenAPI schema (schemathesis).

The schema is fetched from /api/schema through the WSGI app, so what is tested is what is
published. Checks: no 5xx, status codes, content types, headers and bodies as documented.
The data behind it: aggregates in (fake) Redis for the stats endpoints, ledger and rejected
rows in the database for the orders endpoints (the ids their schema gives as examples). Crafted
cursors, which random strings almost never are, go through the same checks by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orderpipe.wsgi import application
from orders.models import RejectedOrder, RejectionRecord
from orders.tests.conftest import (
    SENT_ATTRIBUTES,
    accept,
    body_of,
    crafted_cursor,
    event_body,
    record,
    sqs_message,
    valid_doc,
)
from orders.validation import validate_message
from stats.api.params import HOURS_FIRST_DAY, HOURS_LAST_DAY
from stats.store import AggregateStore
from tests.event_helpers import apply_events, cancel, refund
from tests.ingestion_helpers import make_order

schema = schemathesis.openapi.from_wsgi("/api/schema", application)


@pytest.fixture
def keep_db_connection() -> Iterator[None]:
    """What Django's test client does: the test's DB transaction must outlive each request."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def data(fake_store: AggregateStore, keep_db_connection: None) -> AggregateStore:
    o1, o3 = (
        make_order("O1", "U1", 29999),
        make_order("O3", "U1", 1, datetime(2024, 2, 29, tzinfo=UTC)),
    )
    fake_store.apply_orders(
        [o1, make_order("O2", "U2", 100000000001099, datetime(2025, 1, 1, tzinfo=UTC)), o3]
    )
    # Refunds in Redis too: a day whose net is below zero, a cancelled order.
    apply_events(
        fake_store,
        [
            refund("E1", o1, 5000, datetime(2025, 8, 12, tzinfo=UTC)),
            cancel("E2", o3, 1, datetime(2024, 3, 1, tzinfo=UTC)),
        ],
    )
    fake_store.heartbeat()
    accept(body_of(valid_doc()))  # ORD1000 of U100
    accept(body_of(valid_doc() | {"order_id": "ORD1001", "order_timestamp": "2025-08-10T00:00:00"}))
    record(  # refunded in part with a reason, and cancelled
        sqs_message("m-rf", event_body("RF-1", items=[("P001", 1)], reason="damaged")),
        sqs_message("m-cx", event_body("CX-1", "ORD1001", kind="cancelled")),
    )
    bad = body_of(valid_doc() | {"order_id": "ORD-BAD", "order_value": 1})
    RejectedOrder.objects.record_many(
        [
            RejectionRecord(
                "msg-bad", bad, validate_message(bad, SENT_ATTRIBUTES), "orders", 1,
                datetime(2025, 8, 9, tzinfo=UTC),
            )
        ]
    )  # fmt: skip
    return fake_store


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, data: AggregateStore) -> None:
    # OpenAPI cannot say "start_date <= end_date" or "span <= 366 days", nor which strings
    # are cursors this API wrote, so a schema-valid range or cursor may rightly be refused
    # with a 400; every other check still applies there.
    query = case.query or {}
    refusable = (
        case.operation.path == "/stats/by-date"
        or "cursor" in query
        # Nor "both dates or neither" on /stats/top-products.
        or (
            case.operation.path == "/stats/top-products"
            and query.keys() & {"start_date", "end_date"}
        )
        # Nor a by-hour day at the calendar's ends, whose hours some zone cannot tell.
        or (case.operation.path == "/stats/by-hour" and _at_the_calendars_ends(query.get("date")))
    )
    excluded = [positive_data_acceptance] if refusable else []
    case.call_and_validate(excluded_checks=excluded)


def _at_the_calendars_ends(value: object) -> bool:
    """A day ``HourParams`` refuses with a 400 (within a day of year 1 or year 9999)."""
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        return False
    return not HOURS_FIRST_DAY + timedelta(days=1) <= day <= HOURS_LAST_DAY


# Cursors a client can craft: random strings almost never decode to one, so these go through
# the same checks by hand. Year 1 with an offset was a 500 on SQLite, a NUL a 503 on PostgreSQL.
CRAFTED_CURSORS = [
    pytest.param(crafted_cursor("0001-01-01T00:00:00+05:00 ORD1000"), id="year-1-offset"),
    pytest.param(
        crafted_cursor("9999-12-31T23:00:00-05:00 ORD1000", reverse=True), id="year-10000"
    ),
    pytest.param(crafted_cursor("2025-08-09T10:15:00+00:00 ORD\x001000"), id="nul"),
    pytest.param(crafted_cursor("2025-08-09T10:15:00+00:00 " + "O" * 129), id="long-id"),
    pytest.param(crafted_cursor("0001-01-01T00:00:00+00:00 ORD1000"), id="end-of-time"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
def test_crafted_cursors_conform_to_the_schema(cursor: str, data: AggregateStore) -> None:
    operation = schema["/users/{user_id}/orders"]["GET"]
    case = operation.Case(path_parameters={"user_id": "U100"}, query={"cursor": cursor})
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code in (200, 400)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [{"date": "0001-01-01"}, {"date": "0001-01-02", "compare": "previous"}, {"date": "9999-12-31"}],
)
def test_a_by_hour_day_at_the_calendars_ends_is_a_documented_400(
    query: dict[str, str], data: AggregateStore
) -> None:
    """What schemathesis found at random: the schema's `date` cannot say its range, so these
    days are refused with a 400 naming it, as the parameter's description says."""
    operation = schema["/stats/by-hour"]["GET"]
    response = operation.Case(query=query).call_and_validate(
        excluded_checks=[positive_data_acceptance]
    )
    assert response.status_code == 400
    assert response.json()["date"][0].startswith("Must be a day from 0001-01-0")
