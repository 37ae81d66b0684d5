"""The rejected-order admin through ``admin_client``: list, filters, search, actions, safety."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from moto import mock_aws

from orders.models import RejectedOrder, RejectionRecord
from orders.sqs import OrderQueue, make_client
from orders.tests.conftest import body_of, valid_doc
from orders.validation import Rejection, validate_message

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:orders_rejectedorder_changelist")


def change_url(row: RejectedOrder) -> str:
    return reverse("admin:orders_rejectedorder_change", args=[row.pk])


SENT_MS = "1723198500000"  # 2024-08-09T10:15:00Z: when the rejected messages were first sent


def add_rejected(
    message_id: str,
    body: str | bytes,
    received_at: datetime | None = None,
    queue_name: str = "orders",
    rejection: Rejection | None = None,
) -> RejectedOrder:
    result = rejection or validate_message(body, {"SentTimestamp": SENT_MS})
    assert isinstance(result, Rejection)
    RejectedOrder.objects.record_many(
        [
            RejectionRecord(
                message_id=message_id,
                body=body,
                rejection=result,
                queue_name=queue_name,
                receive_count=1,
                received_at=received_at or datetime(2025, 8, 9, 10, 15, tzinfo=UTC),
            )
        ]
    )
    return RejectedOrder.objects.get(message_id=message_id)


@pytest.fixture
def rows() -> dict[str, RejectedOrder]:
    mismatch = valid_doc() | {"order_id": "ORD-MISMATCH", "user_id": "U-ALICE", "order_value": 1}
    return {
        "json": add_rejected("msg-json", "{broken", datetime(2025, 7, 1, tzinfo=UTC)),
        "mismatch": add_rejected("msg-mismatch", body_of(mismatch)),
        "missing": add_rejected(
            "msg-missing",
            body_of({"order_id": "ORD-MISSING", "user_id": "U-BOB", "items": []}),
        ),
    }


def listed(response: Any) -> set[str]:
    return {row.message_id for row in response.context["cl"].result_list}


# --- list, filters, search, detail --------------------------------------------------------------
def test_changelist_shows_columns(admin_client: Client, rows: dict[str, RejectedOrder]) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert listed(response) == {"msg-json", "msg-mismatch", "msg-missing"}
    html = response.content.decode()
    for text in ("ORD-MISMATCH", "U-ALICE", "value_mismatch", "invalid_items, missing_field"):
        assert text in html
    assert "New" in html


def test_changelist_summary(admin_client: Client, rows: dict[str, RejectedOrder]) -> None:
    rows["json"].status = RejectedOrder.Status.REVIEWED
    rows["json"].save()
    response = admin_client.get(CHANGELIST)
    summary = response.context["summary"]
    assert summary["total"] == 3
    assert dict(summary["by_code"]) == {
        "invalid_json": 1,
        "value_mismatch": 1,
        "missing_field": 1,
        "invalid_items": 1,
    }
    assert {v: n for v, _, n in summary["by_status"]} == {
        "new": 2,
        "reviewed": 1,
        "resubmitted": 0,
    }
    html = response.content.decode()
    assert 'id="rejected-order-summary"' in html
    assert 'data-code="value_mismatch"' in html
    # The summary follows the current filter.
    filtered = admin_client.get(CHANGELIST, {"reason": "invalid_json"})
    assert filtered.context["summary"]["total"] == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"status__exact": "new"}, {"msg-mismatch", "msg-missing"}, id="status"),
        pytest.param({"status__exact": "reviewed"}, {"msg-json"}, id="status-reviewed"),
        pytest.param({"reason": "invalid_json"}, {"msg-json"}, id="reason-json"),
        pytest.param({"reason": "value_mismatch"}, {"msg-mismatch"}, id="reason-mismatch"),
        pytest.param({"reason": "invalid_items"}, {"msg-missing"}, id="reason-items"),
        pytest.param({"reason": "duplicate_order_id"}, set(), id="reason-none"),
        pytest.param(
            {
                "received_at__gte": "2025-08-01 00:00:00+00:00",
                "received_at__lt": "2025-09-01 00:00:00+00:00",
            },
            {"msg-mismatch", "msg-missing"},
            id="date",
        ),
        pytest.param(
            {"received_at__year": "2025", "received_at__month": "7"},
            {"msg-json"},
            id="date-hierarchy",
        ),
        pytest.param({"q": "ORD-MISMATCH"}, {"msg-mismatch"}, id="search-order-id"),
        pytest.param({"q": "ORD-MIS"}, {"msg-mismatch", "msg-missing"}, id="search-prefix"),
        pytest.param({"q": "MISMATCH"}, set(), id="search-not-inside-an-order-id"),
        pytest.param({"q": "U-BOB"}, {"msg-missing"}, id="search-user-id"),
        pytest.param({"q": "U-BO"}, set(), id="search-user-id-exact-only"),
        pytest.param({"q": "msg-json"}, {"msg-json"}, id="search-message-id"),
        pytest.param({"q": "msg-js"}, set(), id="search-message-id-exact-only"),
        pytest.param({"q": "nothing-like-this"}, set(), id="search-miss"),
    ],
)
def test_filters_and_search(
    admin_client: Client, rows: dict[str, RejectedOrder], params: dict[str, str], expected: set[str]
) -> None:
    rows["json"].status = RejectedOrder.Status.REVIEWED
    rows["json"].save()
    response = admin_client.get(CHANGELIST, params)
    assert response.status_code == 200
    assert listed(response) == expected


def test_search_is_an_index_lookup_not_a_scan(
    admin_client: Client, rows: dict[str, RejectedOrder], django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(20) as queries:
        response = admin_client.get(CHANGELIST, {"q": "ORD-MIS"})

    assert listed(response) == {"msg-mismatch", "msg-missing"}
    searched = [q["sql"] for q in queries.captured_queries if "ORD-MIS" in q["sql"]]
    assert searched
    for sql in searched:
        assert "%ORD-MIS" not in sql  # no infix LIKE: an index serves exact and prefix
        assert "UPPER(" not in sql  # no case folding (icontains), which no index serves


def test_queue_filter_lists_each_queue_once_and_filters(
    admin_client: Client, rows: dict[str, RejectedOrder]
) -> None:
    add_rejected("msg-eu-1", "{", queue_name="orders-eu")
    add_rejected("msg-eu-2", "[", queue_name="orders-eu")

    response = admin_client.get(CHANGELIST, {"queue_name": "orders-eu"})

    [queue_filter] = [f for f in response.context["cl"].filter_specs if f.title == "queue name"]
    assert queue_filter.lookup_choices == [("orders", "orders"), ("orders-eu", "orders-eu")]
    assert listed(response) == {"msg-eu-1", "msg-eu-2"}


def test_reason_filter_lists_every_code(
    admin_client: Client, rows: dict[str, RejectedOrder]
) -> None:
    html = admin_client.get(CHANGELIST).content.decode()
    for code in ("invalid_json", "not_an_object", "duplicate_order_id", "invalid_timestamp"):
        assert f"?reason={code}" in html


def test_detail_page(admin_client: Client, rows: dict[str, RejectedOrder]) -> None:
    response = admin_client.get(change_url(rows["mismatch"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "msg-mismatch" in html
    assert "value_mismatch" in html
    assert "does not equal the items&#x27; total 109.97" in html
    assert "&quot;order_value&quot;: 1," in html  # pretty-printed payload
    form = response.context["adminform"].form
    assert set(form.fields) == {"staff_note", "corrected_payload"}  # raw fields are read-only


def test_raw_fields_cannot_be_changed(admin_client: Client, rows: dict[str, RejectedOrder]) -> None:
    row = rows["json"]
    response = admin_client.post(
        change_url(row),
        {
            "staff_note": "looked",
            "corrected_payload": "",
            "order_id": "HACKED",
            "status": "resubmitted",
        },
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.staff_note == "looked"
    assert row.order_id is None
    assert row.status == RejectedOrder.Status.NEW


def test_add_is_not_offered(admin_client: Client) -> None:
    assert admin_client.get(reverse("admin:orders_rejectedorder_add")).status_code == 403


def test_payload_is_escaped(admin_client: Client) -> None:
    row = add_rejected("msg-xss", '{"order_id": "<script>alert(1)</script>", "x": "</pre><b>"}')
    for url in (change_url(row), CHANGELIST):
        html = admin_client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "</pre><b>" not in html
    detail = admin_client.get(change_url(row)).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail


def test_undecodable_body_is_shown(admin_client: Client) -> None:
    row = add_rejected("msg-bin", b"\xff\xfe<script>")
    html = admin_client.get(change_url(row)).content.decode()
    assert "\\xff\\xfe&lt;script&gt;" in html


# --- corrected payload form -------------------------------------------------------------------
def test_invalid_corrected_payload_shows_reasons(
    admin_client: Client, rows: dict[str, RejectedOrder]
) -> None:
    row = rows["mismatch"]
    bad = body_of(valid_doc() | {"order_value": 5, "user_id": ""})
    response = admin_client.post(change_url(row), {"staff_note": "", "corrected_payload": bad})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["corrected_payload"]
    assert any(e.startswith("invalid_field (user_id)") for e in errors)
    assert any(e.startswith("value_mismatch (order_value)") for e in errors)
    row.refresh_from_db()
    assert row.corrected_payload == ""


def test_valid_corrected_payload_is_saved(
    admin_client: Client, rows: dict[str, RejectedOrder]
) -> None:
    row = rows["mismatch"]
    good = body_of(valid_doc() | {"order_id": "ORD-MISMATCH", "user_id": "U-ALICE"})
    response = admin_client.post(
        change_url(row), {"staff_note": "fixed", "corrected_payload": good}
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.corrected_payload == good


def test_corrected_payload_without_timestamp_is_accepted(
    admin_client: Client, rows: dict[str, RejectedOrder]
) -> None:
    doc = valid_doc() | {"order_id": "ORD-MISMATCH", "user_id": "U-ALICE"}
    del doc["order_timestamp"]
    response = admin_client.post(
        change_url(rows["mismatch"]), {"staff_note": "", "corrected_payload": body_of(doc)}
    )
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param(
            {"user_id": "U-MALLORY"},
            "user_id: a corrected order keeps the rejected message's user_id 'U-ALICE', "
            "not 'U-MALLORY'.",
            id="another-user",
        ),
        pytest.param(
            {"order_id": "ORD-OTHER"},
            "order_id: a corrected order keeps the rejected message's order_id "
            "'ORD-MISMATCH', not 'ORD-OTHER'.",
            id="another-order",
        ),
    ],
)
def test_a_corrected_payload_keeps_the_original_ids(
    admin_client: Client, rows: dict[str, RejectedOrder], changes: dict[str, str], error: str
) -> None:
    doc = valid_doc() | {"order_id": "ORD-MISMATCH", "user_id": "U-ALICE"} | changes

    response = admin_client.post(
        change_url(rows["mismatch"]), {"staff_note": "", "corrected_payload": body_of(doc)}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["corrected_payload"] == [error]
    assert RejectedOrder.objects.get(pk=rows["mismatch"].pk).corrected_payload == ""


def test_a_message_without_readable_ids_cannot_be_resubmitted(
    admin_client: Client, rows: dict[str, RejectedOrder]
) -> None:
    response = admin_client.post(
        change_url(rows["json"]), {"staff_note": "", "corrected_payload": body_of(valid_doc())}
    )

    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["corrected_payload"]
    assert error.startswith("order_id, user_id: the rejected message has no readable order_id")


# --- actions ----------------------------------------------------------------------------------
def run_action(client: Client, action: str, rows: list[RejectedOrder]) -> Any:
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(r.pk) for r in rows]},
        follow=True,
    )


def test_mark_reviewed(
    admin_client: Client, admin_user: Any, rows: dict[str, RejectedOrder]
) -> None:
    rows["missing"].status = RejectedOrder.Status.RESUBMITTED
    rows["missing"].save()
    response = run_action(admin_client, "mark_reviewed", [rows["json"], rows["missing"]])
    assert response.status_code == 200
    assert "1 rejected order(s) marked as reviewed." in response.content.decode()
    json_row = RejectedOrder.objects.get(pk=rows["json"].pk)
    assert json_row.status == RejectedOrder.Status.REVIEWED
    assert json_row.reviewed_by == admin_user
    assert json_row.reviewed_at is not None
    assert RejectedOrder.objects.get(pk=rows["missing"].pk).status == "resubmitted"
    assert RejectedOrder.objects.get(pk=rows["mismatch"].pk).status == "new"


def test_export_csv(admin_client: Client, rows: dict[str, RejectedOrder]) -> None:
    evil = add_rejected("msg-evil", '{"order_id": "=HYPERLINK(\\"http://x\\")", "items": 1}')
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "export_csv",
            "_selected_action": [str(rows["mismatch"].pk), str(evil.pk)],
        },
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"]
    table = read_csv(response)
    by_id = {r["message_id"]: r for r in table}
    assert set(by_id) == {"msg-mismatch", "msg-evil"}
    mismatch = by_id["msg-mismatch"]
    assert mismatch["order_id"] == "ORD-MISMATCH"
    assert mismatch["user_id"] == "U-ALICE"
    assert mismatch["reason_codes"] == "value_mismatch"
    assert "does not equal" in mismatch["reasons"]
    assert mismatch["status"] == "new"
    assert json.loads(mismatch["body"])["order_value"] == 1
    assert mismatch["received_at"].startswith("2025-08-09T10:15:00")
    assert by_id["msg-evil"]["order_id"].startswith("'=HYPERLINK")


def read_csv(response: Any) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def staff(codenames: tuple[str, ...], username: str = "reviewer") -> Any:
    user = get_user_model().objects.create_user(username, password="pw-123456789", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


VIEW, CHANGE = "view_rejectedorder", "change_rejectedorder"
RESUBMIT, EXPORT = "resubmit_rejectedorder", "export_rejectedorder"
EXPORT_URL = reverse("admin:orders_rejectedorder_export")


def test_the_export_of_a_changelist_streams_its_filtered_rows_in_chunks(
    client: Client, rows: dict[str, RejectedOrder]
) -> None:
    for i in range(400):  # ~240 bytes a line: several 64 KiB chunks
        add_rejected(f"msg-bulk-{i:03}", body_of({"order_id": f"ORD-BULK-{i:03}", "n": "x" * 120}))
    client.force_login(staff((VIEW, EXPORT)))

    page = client.get(CHANGELIST, {"reason": "missing_field"}).content.decode()
    response: Any = client.get(EXPORT_URL, {"reason": "missing_field"})  # a streaming one

    assert 'id="export-csv-link"' in page
    assert f"{EXPORT_URL}?reason=missing_field" in page
    assert response.status_code == 200
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) > 1
    table = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(table) == 401  # the bulk rows and msg-missing, not the invalid_json one
    assert {r["message_id"] for r in table} >= {"msg-missing", "msg-bulk-000", "msg-bulk-399"}


def test_viewing_is_not_enough_to_export(client: Client, rows: dict[str, RejectedOrder]) -> None:
    client.force_login(staff((VIEW, CHANGE)))

    page = client.get(CHANGELIST).content.decode()
    exported = client.get(EXPORT_URL)
    action = client.post(
        CHANGELIST, {"action": "export_csv", "_selected_action": [str(rows["json"].pk)]}
    )

    assert 'id="export-csv-link"' not in page
    assert 'value="export_csv"' not in page  # the action is not offered
    assert exported.status_code == 403
    assert action.status_code == 302  # "No action selected": no CSV
    assert not action.get("Content-Type", "").startswith("text/csv")


@pytest.fixture
def mocked_queue(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[OrderQueue]:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURITY_TOKEN",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.LOCALSTACK_URL = ""
    settings.AWS_REGION = "us-east-1"
    settings.QUEUE_NAME = "orders-admin-test"
    with mock_aws():
        queue = OrderQueue(make_client(), "orders-admin-test")
        queue.ensure()
        yield queue


def drain(queue: OrderQueue) -> list[str]:
    return [m["Body"] for m in drain_messages(queue)]


def drain_messages(queue: OrderQueue) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := queue.receive(wait_time=0):
        messages += batch
        queue.delete([m["ReceiptHandle"] for m in batch])
    return messages


def fix(row: RejectedOrder, queue: OrderQueue, **changes: Any) -> RejectedOrder:
    """Give ``row`` a valid corrected payload (the contract example with the row's ids and
    ``changes``; a value of None drops the field) and point it at ``queue``."""
    ids = {"order_id": row.order_id, "user_id": row.user_id}
    doc = {k: v for k, v in (valid_doc() | ids | changes).items() if v is not None}
    RejectedOrder.objects.filter(pk=row.pk).update(
        corrected_payload=body_of(doc), queue_name=queue.name
    )
    return RejectedOrder.objects.get(pk=row.pk)


def test_resubmit_sends_corrected_payload_with_the_first_sent_timestamp(
    admin_client: Client, admin_user: Any, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    fixed = fix(rows["mismatch"], mocked_queue)
    response = run_action(admin_client, "resubmit_corrected", [fixed, rows["json"]])
    html = response.content.decode()
    assert "1 corrected order(s) sent to the orders queue." in html
    assert "no corrected payload" in html  # the other row is reported, not sent
    [message] = drain_messages(mocked_queue)
    assert message["Body"] == fixed.corrected_payload
    assert message["MessageAttributes"]["orderpipe.SentTimestamp"] == {
        "StringValue": SENT_MS,
        "DataType": "Number",
    }
    fixed.refresh_from_db()
    assert fixed.status == RejectedOrder.Status.RESUBMITTED
    assert fixed.resubmitted_at is not None
    assert fixed.reviewed_by == admin_user
    assert fixed.reviewed_at is not None
    assert RejectedOrder.objects.get(pk=rows["json"].pk).status == "new"


def test_a_row_stored_without_its_sent_timestamp_is_dated_by_its_receipt(
    admin_client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    received = datetime(2025, 7, 1, tzinfo=UTC)
    RejectedOrder.objects.filter(pk=rows["missing"].pk).update(sent_at=None, received_at=received)
    fixed = fix(rows["missing"], mocked_queue, order_timestamp=None)  # an older row
    run_action(admin_client, "resubmit_corrected", [fixed])
    [message] = drain_messages(mocked_queue)
    received_ms = str(int(received.timestamp() * 1000))
    assert message["MessageAttributes"]["orderpipe.SentTimestamp"]["StringValue"] == received_ms


def test_rows_go_back_to_their_own_queue(
    admin_client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    other = OrderQueue(mocked_queue.client, "orders-eu")
    other.ensure()
    first = fix(rows["mismatch"], mocked_queue)
    second = fix(rows["missing"], other)

    html = run_action(admin_client, "resubmit_corrected", [first, second]).content.decode()

    assert "2 corrected order(s) sent to the orders queue." in html
    assert drain(mocked_queue) == [first.corrected_payload]
    assert drain(other) == [second.corrected_payload]


def test_a_resubmitted_row_cannot_be_resubmitted_again(
    admin_client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    fixed = fix(rows["mismatch"], mocked_queue)
    run_action(admin_client, "resubmit_corrected", [fixed])

    html = run_action(admin_client, "resubmit_corrected", [fixed]).content.decode()
    page = admin_client.get(change_url(fixed)).content.decode()

    assert "already resubmitted; it is not sent twice." in html
    assert "corrected order(s) sent" not in html
    assert drain(mocked_queue) == [fixed.corrected_payload]  # once
    assert 'name="corrected_payload"' not in page  # read-only now: it is what was sent


def conflict_row(queue: OrderQueue) -> RejectedOrder:
    from orders.validation import Order, conflict_rejection

    order = validate_message(body_of(valid_doc()), {"SentTimestamp": SENT_MS})
    assert isinstance(order, Order)
    return add_rejected(
        "msg-conflict", body_of(valid_doc()), queue_name=queue.name,
        rejection=conflict_rejection(order),
    )  # fmt: skip


SAME_ID_AGAIN = (
    "duplicate_order_id (order_id): order 'ORD1000' was already counted with a different "
    "payload, and the consumer would reject this again. A changed re-send of that order is not "
    "a new order: mark this row reviewed. Only if it is a different order that reused the id, "
    "give it a new order_id and record that decision."
)
NEEDS_A_DECISION = (
    "order_id: a new order_id counts this message as an order besides 'ORD1000'; that needs "
    "the decision 'count as a new order', with its reason, by a reviewer allowed to resubmit."
)


def post_fix(client: Client, row: RejectedOrder, payload: str, **decision: str) -> Any:
    return client.post(
        change_url(row), {"staff_note": "", "corrected_payload": payload, **decision}
    )


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    return dict(response.context["adminform"].form.errors)


def test_a_duplicate_order_id_row_never_goes_back_under_its_order_id(
    admin_client: Client, mocked_queue: OrderQueue
) -> None:
    row = conflict_row(mocked_queue)
    same_id = body_of(valid_doc() | {"shipping_address": "elsewhere"})

    refused = post_fix(admin_client, row, same_id, count_as_new_order="on", decision_reason="x")

    assert form_errors(refused) == {"corrected_payload": [SAME_ID_AGAIN]}


def test_a_duplicate_goes_back_as_a_new_order_only_by_a_recorded_logged_decision(
    admin_client: Client,
    admin_user: Any,
    mocked_queue: OrderQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    row = conflict_row(mocked_queue)
    new_id = body_of(valid_doc() | {"order_id": "ORD1000-B"})

    undecided = post_fix(admin_client, row, new_id)
    no_reason = post_fix(admin_client, row, new_id, count_as_new_order="on")
    decided = post_fix(
        admin_client, row, new_id, count_as_new_order="on",
        decision_reason="Two parcels, two invoices: the producer reused the id.",
    )  # fmt: skip

    assert form_errors(undecided) == {"corrected_payload": [NEEDS_A_DECISION]}
    assert form_errors(no_reason) == {"decision_reason": ["Say why this is a different order."]}
    assert decided.status_code == 302
    row.refresh_from_db()
    assert row.corrected_payload == new_id
    assert row.new_order_decided_by == admin_user
    assert row.new_order_decided_at is not None
    assert row.new_order_reason == "Two parcels, two invoices: the producer reused the id."
    [decision] = [r for r in caplog.records if "decided at" in r.getMessage()]
    assert decision.levelname == "WARNING"
    assert decision.getMessage().startswith(
        f"admin decided at {row.new_order_decided_at.isoformat()} that rejected message "
        "msg-conflict (order_id ORD1000, already counted with another payload) is a different "
        "order, to be resubmitted as order_id ORD1000-B"
    )
    page = admin_client.get(change_url(row)).content.decode()
    assert "decided by admin on" in page

    html = run_action(admin_client, "resubmit_corrected", [row]).content.decode()

    assert "1 corrected order(s) sent to the orders queue." in html
    assert drain(mocked_queue) == [new_id]
    [sent] = [r for r in caplog.records if "as the new order" in r.getMessage()]
    assert sent.levelname == "WARNING"
    assert sent.getMessage().startswith(
        "admin resubmitted rejected message msg-conflict as the new order ORD1000-B (order_id "
        "ORD1000 was already counted; decided by admin at"
    )


def test_a_decision_holds_only_for_the_payload_it_was_made_with(
    admin_client: Client, mocked_queue: OrderQueue
) -> None:
    row = conflict_row(mocked_queue)
    first = body_of(valid_doc() | {"order_id": "ORD1000-B"})
    post_fix(admin_client, row, first, count_as_new_order="on", decision_reason="reused id")
    other = body_of(valid_doc() | {"order_id": "ORD1000-C"})

    note_only = post_fix(admin_client, row, first)  # the payload decided on, unchanged
    changed = post_fix(admin_client, row, other)

    assert note_only.status_code == 302
    assert form_errors(changed) == {"corrected_payload": [NEEDS_A_DECISION]}
    assert RejectedOrder.objects.get(pk=row.pk).corrected_payload == first


def test_a_new_order_id_must_not_be_in_the_ledger(
    admin_client: Client, mocked_queue: OrderQueue
) -> None:
    from orders.tests.conftest import accept

    accept(body_of(valid_doc() | {"order_id": "ORD1000-B"}))
    row = conflict_row(mocked_queue)
    taken = body_of(valid_doc() | {"order_id": "ORD1000-B"})

    refused = post_fix(admin_client, row, taken, count_as_new_order="on", decision_reason="x")

    assert form_errors(refused) == {
        "corrected_payload": [
            "order_id: order 'ORD1000-B' is already in the ledger; choose an order_id no order has."
        ]
    }


def test_a_reviewer_not_allowed_to_resubmit_cannot_decide(
    client: Client, mocked_queue: OrderQueue
) -> None:
    row = conflict_row(mocked_queue)
    client.force_login(staff((VIEW, CHANGE)))
    new_id = body_of(valid_doc() | {"order_id": "ORD1000-B"})

    page = client.get(change_url(row))
    crafted = post_fix(client, row, new_id, count_as_new_order="on", decision_reason="x")

    assert "count_as_new_order" not in page.context["adminform"].form.fields
    assert form_errors(crafted) == {"corrected_payload": [NEEDS_A_DECISION]}
    assert RejectedOrder.objects.get(pk=row.pk).new_order_decided_at is None


def test_resubmission_needs_its_own_permission(
    client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    fixed = fix(rows["mismatch"], mocked_queue)
    client.force_login(staff((VIEW, CHANGE)))

    page = client.get(CHANGELIST).content.decode()
    run_action(client, "resubmit_corrected", [fixed])

    assert 'value="resubmit_corrected"' not in page
    assert drain(mocked_queue) == []
    assert RejectedOrder.objects.get(pk=fixed.pk).status == "new"

    client.force_login(staff((VIEW, CHANGE, RESUBMIT), username="resubmitter"))
    html = run_action(client, "resubmit_corrected", [fixed]).content.decode()

    assert "1 corrected order(s) sent to the orders queue." in html
    assert drain(mocked_queue) == [fixed.corrected_payload]


def test_a_duplicate_order_id_row_is_not_resubmitted_unchanged(
    admin_client: Client, mocked_queue: OrderQueue
) -> None:
    row = conflict_row(mocked_queue)
    # Saved around the form (e.g. by a script): the action checks again before sending.
    RejectedOrder.objects.filter(pk=row.pk).update(corrected_payload=body_of(valid_doc()))

    html = run_action(admin_client, "resubmit_corrected", [row]).content.decode()

    assert escape(f"corrected payload is invalid: {SAME_ID_AGAIN}") in html
    assert drain(mocked_queue) == []
    assert RejectedOrder.objects.get(pk=row.pk).status == "new"


def test_resubmit_refuses_an_invalid_payload(
    admin_client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    row = rows["mismatch"]
    # Saved around the form (e.g. by a script): the action validates again before sending.
    RejectedOrder.objects.filter(pk=row.pk).update(
        corrected_payload='{"order_id": 1}', queue_name=mocked_queue.name
    )
    html = run_action(admin_client, "resubmit_corrected", [row]).content.decode()
    assert "corrected payload is invalid" in html
    assert drain(mocked_queue) == []
    assert RejectedOrder.objects.get(pk=row.pk).status == "new"


def test_resubmit_reports_a_queue_failure(
    admin_client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue
) -> None:
    row = fix(rows["mismatch"], mocked_queue)
    RejectedOrder.objects.filter(pk=row.pk).update(queue_name="no-such-queue")
    html = run_action(admin_client, "resubmit_corrected", [row]).content.decode()
    assert "Could not send to the queue no-such-queue" in html
    assert RejectedOrder.objects.get(pk=row.pk).status == "new"


# --- permissions ------------------------------------------------------------------------------
@pytest.mark.parametrize("url_name", ["changelist", "change"])
def test_anonymous_is_sent_to_login(
    client: Client, rows: dict[str, RejectedOrder], url_name: str
) -> None:
    url = CHANGELIST if url_name == "changelist" else change_url(rows["json"])
    response = client.get(url)
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_non_staff_user_has_no_access(client: Client, rows: dict[str, RejectedOrder]) -> None:
    user = get_user_model().objects.create_user("customer", password="pw-123456789")
    user.user_permissions.set(Permission.objects.filter(codename__endswith="rejectedorder"))
    client.force_login(user)
    for url in (CHANGELIST, change_url(rows["json"])):
        response = client.get(url)
        assert response.status_code == 302
        assert reverse("admin:login") in response["Location"]
    response = client.post(
        CHANGELIST, {"action": "export_csv", "_selected_action": [str(rows["json"].pk)]}
    )
    assert response.status_code == 302
    assert not response.get("Content-Type", "").startswith("text/csv")


def test_staff_without_permission_is_forbidden(
    client: Client, rows: dict[str, RejectedOrder]
) -> None:
    user = get_user_model().objects.create_user("clerk", password="pw-123456789", is_staff=True)
    client.force_login(user)
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_url(rows["json"])).status_code == 403


def test_staff_with_view_permission_can_only_look(
    client: Client, rows: dict[str, RejectedOrder]
) -> None:
    user = get_user_model().objects.create_user("viewer", password="pw-123456789", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_rejectedorder"))
    client.force_login(user)
    assert client.get(CHANGELIST).status_code == 200
    response = client.post(change_url(rows["json"]), {"staff_note": "x", "corrected_payload": ""})
    assert response.status_code == 403
    response = run_action(client, "mark_reviewed", [rows["json"]])
    assert RejectedOrder.objects.get(pk=rows["json"].pk).status == "new"
    assert client.get(EXPORT_URL).status_code == 403  # bodies hold personal data
