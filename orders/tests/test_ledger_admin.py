"""The ledger's admin through ``admin_client``: list, search, day filter, read-only everywhere;
an order's events on its page, the events' own list, the events waiting for their order.

``admin_client`` is a superuser: if even it cannot add, change or delete a ledger row, nobody
can. Rows are recorded through the ledger writer, as the consumer records them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from orders.models import AcceptedOrder, OrderEvent, RejectedOrder, RejectionRecord, WaitingEvent
from orders.tests.conftest import (
    SENT_ATTRIBUTES,
    accept,
    body_of,
    event_body,
    sqs_message,
    valid_doc,
)
from orders.tests.conftest import record as record_batch
from orders.validation import Rejection, validate_message

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:orders_acceptedorder_changelist")


def change_url(order_id: str) -> str:
    pk = AcceptedOrder.objects.get(order_id=order_id).pk
    return reverse("admin:orders_acceptedorder_change", args=[pk])


def listed(response: Any) -> list[str]:
    return [row.order_id for row in response.context["cl"].result_list]


def record(order_id: str, user_id: str, at: str, received_at: datetime) -> None:
    doc = valid_doc() | {"order_id": order_id, "user_id": user_id, "order_timestamp": at}
    accept(body_of(doc), f"msg-{order_id}", received_at)


@pytest.fixture
def ledger() -> None:
    """Recorded in this order, a minute apart; XYZ-ORD-1 arrived last but is the oldest."""
    received = datetime(2025, 8, 10, 12, tzinfo=UTC)
    record("ORD-1", "U-ALICE", "2025-08-09T10:00:00Z", received)
    record("ORD-10", "U-BOB", "2025-08-09T11:00:00Z", received + timedelta(minutes=1))
    record("ORD-2", "U-ALICE", "2025-08-10T09:00:00Z", received + timedelta(minutes=2))
    record("XYZ-ORD-1", "U-CAROL", "2025-07-01T00:00:00Z", received + timedelta(minutes=3))


def reject(message_id: str, doc: dict[str, Any]) -> RejectedOrder:
    body = body_of(doc)
    rejection = validate_message(body, SENT_ATTRIBUTES)
    assert isinstance(rejection, Rejection)
    RejectedOrder.objects.record_many(
        [
            RejectionRecord(
                message_id, body, rejection, "orders", 1, datetime(2025, 8, 9, tzinfo=UTC)
            )
        ]
    )
    return RejectedOrder.objects.get(message_id=message_id)


def test_the_changelist_lists_the_latest_recorded_first(admin_client: Client, ledger: None) -> None:
    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert listed(response) == ["XYZ-ORD-1", "ORD-2", "ORD-10", "ORD-1"]
    html = response.content.decode()
    for text in ("U-ALICE", "U-BOB", "109.97", "Aug. 10, 2025"):
        assert text in html
    assert reverse("admin:orders_acceptedorder_add") not in html  # no "Add" button
    assert 'value="delete_selected"' not in html  # no delete action


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("ORD-1", ["ORD-10", "ORD-1"], id="order-id-exact-and-prefix"),
        pytest.param("ORD-10", ["ORD-10"], id="order-id-exact"),
        pytest.param("ORD-", ["ORD-2", "ORD-10", "ORD-1"], id="order-id-prefix"),
        pytest.param("U-ALICE", ["ORD-2", "ORD-1"], id="user-id"),
        pytest.param("  U-BOB ", ["ORD-10"], id="trimmed"),
        pytest.param("U-ALI", [], id="user-id-is-exact"),
        pytest.param("D-1", [], id="not-a-substring-search"),
    ],
)
def test_search_by_order_id_exact_or_prefix_and_user_id(
    admin_client: Client, ledger: None, query: str, expected: list[str]
) -> None:
    response = admin_client.get(CHANGELIST, {"q": query})

    assert response.status_code == 200
    assert listed(response) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"day": "2025-08-09"}, ["ORD-10", "ORD-1"], id="one-day"),
        pytest.param(
            {"day__gte": "2025-08-01", "day__lt": "2025-09-01"},
            ["ORD-2", "ORD-10", "ORD-1"],
            id="a-month",
        ),
        pytest.param({"day": "2025-01-01"}, [], id="empty-day"),
    ],
)
def test_filter_by_day(
    admin_client: Client, ledger: None, params: dict[str, str], expected: list[str]
) -> None:
    response = admin_client.get(CHANGELIST, params)

    assert response.status_code == 200
    assert listed(response) == expected


def test_the_day_filter_is_offered(admin_client: Client, ledger: None) -> None:
    html = admin_client.get(CHANGELIST).content.decode()

    assert "By day" in html
    assert "day__gte=" in html


def test_the_change_view_shows_every_field_read_only(admin_client: Client, ledger: None) -> None:
    response = admin_client.get(change_url("ORD-1"))

    assert response.status_code == 200
    html = response.content.decode()
    form = response.context["adminform"].form
    assert list(form.fields) == []  # nothing to edit
    assert 'type="submit"' not in html.split('id="content-main"')[1].split("</form>")[0]
    for text in (
        "ORD-1",
        "U-ALICE",
        "109.97",
        "Aug. 9, 2025",
        "msg-ORD-1",
        "P042",
        "69.99",
        "none (LEDGER_EXTRA_FIELDS lists the body fields kept here)",
    ):
        assert text in html  # fmt: skip
    order = AcceptedOrder.objects.get(order_id="ORD-1")
    assert order.fingerprint in html
    assert "123 Main St" not in html  # the ledger keeps no body, so no shipping_address
    assert "CreditCard" not in html


def test_the_change_view_shows_the_extra_fields_a_shop_keeps(
    admin_client: Client, settings: Any
) -> None:
    settings.LEDGER_EXTRA_FIELDS = ["channel", "coupon"]
    body = body_of(valid_doc() | {"channel": "<b>web</b>"})
    accept(body[:-1] + ', "coupon": 1.50}')  # a number spelled as json.dumps would not

    html = admin_client.get(change_url("ORD1000")).content.decode()

    assert "&quot;channel&quot;: &quot;&lt;b&gt;web&lt;/b&gt;&quot;" in html
    assert "&quot;coupon&quot;: &quot;1.50&quot;" in html  # exact text, not the float 1.5
    assert "123 Main St" not in html


def test_ids_are_escaped_and_prices_keep_their_digits(admin_client: Client) -> None:
    accept('{"order_id": "<script>alert(1)</script>", "user_id": "</pre><b>", '
           '"order_value": 0.30, "items": [{"quantity": 3, "price_per_unit": 0.100}]}')  # fmt: skip

    html = admin_client.get(change_url("<script>alert(1)</script>")).content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "</pre><b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<td>0.100</td>" in html  # the item's price, digits as sent


def test_add_change_and_delete_are_refused_to_a_superuser(
    admin_client: Client, ledger: None
) -> None:
    order = AcceptedOrder.objects.get(order_id="ORD-1")
    url = change_url("ORD-1")

    assert admin_client.get(reverse("admin:orders_acceptedorder_add")).status_code == 403
    assert admin_client.post(url, {"user_id": "HACKED"}).status_code == 403
    delete = reverse("admin:orders_acceptedorder_delete", args=[order.pk])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    bulk = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [str(order.pk)]}
    )
    assert bulk.status_code in (200, 302)  # "No action selected": the action does not exist
    assert AcceptedOrder.objects.get(pk=order.pk).user_id == "U-ALICE"
    assert AcceptedOrder.objects.count() == 4


def test_staff_need_the_view_permission(client: Client, ledger: None) -> None:
    user = get_user_model().objects.create_user("clerk", password="pw-123456789", is_staff=True)
    client.force_login(user)
    assert client.get(CHANGELIST).status_code == 403

    user.user_permissions.add(Permission.objects.get(codename="view_acceptedorder"))
    assert client.get(CHANGELIST).status_code == 200
    assert client.get(change_url("ORD-1")).status_code == 200


def test_a_rejected_orders_page_links_to_the_accepted_order(
    admin_client: Client, ledger: None
) -> None:
    conflict = reject("msg-conflict", valid_doc() | {"order_id": "ORD-1", "order_value": 1})
    orphan = reject("msg-orphan", valid_doc() | {"order_id": "ORD-NEVER", "order_value": 1})
    rejected_url = "admin:orders_rejectedorder_change"

    linked = admin_client.get(reverse(rejected_url, args=[conflict.pk])).content.decode()
    unlinked = admin_client.get(reverse(rejected_url, args=[orphan.pk])).content.decode()

    assert f'<a href="{change_url("ORD-1")}" id="accepted-order-link">ORD-1</a>' in linked
    assert 'id="accepted-order-link"' not in unlinked
    assert "none with this order_id" in unlinked


def test_an_accepted_orders_page_links_to_rejected_messages_with_its_id(
    admin_client: Client, ledger: None
) -> None:
    reject("msg-conflict", valid_doc() | {"order_id": "ORD-1", "order_value": 1})
    changelist = reverse("admin:orders_rejectedorder_changelist")

    html = admin_client.get(change_url("ORD-1")).content.decode()
    listing = admin_client.get(changelist, {"order_id": "ORD-1"})

    assert f'<a href="{changelist}?order_id=ORD-1" id="rejections-link">1</a>' in html
    assert [row.message_id for row in listing.context["cl"].result_list] == ["msg-conflict"]
    assert "none" in admin_client.get(change_url("ORD-2")).content.decode()


def test_the_changelist_takes_the_same_queries_for_10_or_200_rows(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    def rows(start: int, n: int) -> list[AcceptedOrder]:
        at = datetime(2025, 8, 9, tzinfo=UTC)
        return [
            AcceptedOrder(
                order_id=f"B{i:04}", user_id=f"U{i % 7}", value_cents=i,
                ordered_at=at + timedelta(minutes=i), day=at.date(), items=[],
                fingerprint="f", message_id=f"m{i}", received_at=at,
            )
            for i in range(start, start + n)
        ]  # fmt: skip

    AcceptedOrder.objects.bulk_create(rows(0, 10))
    admin_client.get(CHANGELIST)  # warm the session and permission caches
    with django_assert_max_num_queries(6) as small:
        assert admin_client.get(CHANGELIST).status_code == 200
    AcceptedOrder.objects.bulk_create(rows(10, 190))
    with django_assert_max_num_queries(len(small.captured_queries)) as large:
        response = admin_client.get(CHANGELIST)
    assert len(listed(response)) == 100
    page = [q["sql"] for q in large.captured_queries if "LIMIT 100" in q["sql"]]
    assert len(page) == 1
    assert '"extra"' not in page[0]  # JSON the list does not show stays in the database
    assert '"items"' not in page[0]


# --- the ledger of events ------------------------------------------------------------------------
EVENTS = reverse("admin:orders_orderevent_changelist")
WAITING = reverse("admin:orders_waitingevent_changelist")


@pytest.fixture
def events(ledger: None) -> None:
    """ORD-1 refunded in part (by items, with a reason) then cancelled; ORD-10 refunded."""
    record_batch(
        sqs_message("m1", event_body("RF-1", "ORD-1", items=[("P001", 1)], reason="<b>late</b>")),
        sqs_message("m2", event_body("CX-1", "ORD-1", kind="cancelled",
                                     occurred_at="2025-08-11T00:00:00Z")),
        sqs_message("m3", event_body("RF-2", "ORD-10", amount="5.00")),
    )  # fmt: skip


def test_an_accepted_orders_page_lists_its_events(admin_client: Client, events: None) -> None:
    html = admin_client.get(change_url("ORD-1")).content.decode()

    table = html.split('id="order-events"')[1].split("</table>")[0]
    assert table.index(">RF-1</a>") < table.index(">CX-1</a>")  # in the order they occurred
    for text in ("refunded", "19.99", "1 x P001 at 19.99", "2025-08-10 09:30:00 UTC",
                 "&lt;b&gt;late&lt;/b&gt;", "cancelled", "89.98"):  # fmt: skip
        assert text in table
    assert "<p>cancelled: 109.97 refunded, 0.00 left</p>" in html
    assert f'href="{EVENTS}?q=RF-1"' in table
    assert "none" in admin_client.get(change_url("ORD-2")).content.decode()


def test_events_are_read_only_like_the_ledger(admin_client: Client, events: None) -> None:
    event = OrderEvent.objects.get(event_id="RF-1")
    url = reverse("admin:orders_orderevent_change", args=[event.pk])

    page = admin_client.get(url)
    assert page.status_code == 200
    assert list(page.context["adminform"].form.fields) == []
    assert "1 x" not in page.content.decode()  # its own items table, not the order's summary
    assert admin_client.get(reverse("admin:orders_orderevent_add")).status_code == 403
    assert admin_client.post(url, {"reason": "changed"}).status_code == 403
    delete = reverse("admin:orders_orderevent_delete", args=[event.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert OrderEvent.objects.get(pk=event.pk).reason == "<b>late</b>"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("RF-1", ["RF-1"], id="event-id"),
        pytest.param("ORD-1", ["RF-2", "CX-1", "RF-1"], id="order-id-exact-and-prefix"),
        pytest.param("U-ALICE", ["CX-1", "RF-1"], id="user-id"),
        pytest.param("RF", [], id="no-event-id-prefix"),
    ],
)
def test_events_are_found_by_event_order_or_user_id(
    admin_client: Client, events: None, query: str, expected: list[str]
) -> None:
    response = admin_client.get(EVENTS, {"q": query})

    assert response.status_code == 200
    assert [e.event_id for e in response.context["cl"].result_list] == expected


def test_waiting_events_have_a_list_of_their_own_with_the_orphans_flagged(
    admin_client: Client, settings: Any
) -> None:
    settings.ORPHAN_EVENT_DAYS = 10
    now = datetime.now(UTC)
    for event_id, days in (("OLD", 11), ("NEW", 1)):
        record_batch(sqs_message(f"m-{event_id}", event_body(event_id, f"NEVER-{event_id}",
                                                              amount="1.00")),
                     received_at=now - timedelta(days=days))  # fmt: skip

    def listed_events(**params: str) -> list[str]:
        response = admin_client.get(WAITING, params)
        assert response.status_code == 200
        return [e.event_id for e in response.context["cl"].result_list]

    assert listed_events() == ["OLD", "NEW"]  # oldest first
    assert listed_events(orphan="yes") == ["OLD"]
    assert listed_events(orphan="no") == ["NEW"]
    assert listed_events(q="NEVER-NEW") == ["NEW"]
    html = admin_client.get(WAITING).content.decode()
    assert "over 10 days: order never came" in html
    assert html.count('alt="True"') == 1  # the orphan's flag
    row = WaitingEvent.objects.get(event_id="OLD")
    page = admin_client.get(reverse("admin:orders_waitingevent_change", args=[row.pk]))
    assert list(page.context["adminform"].form.fields) == []
    assert "&quot;event_id&quot;: &quot;OLD&quot;" in page.content.decode()  # the body
    assert admin_client.get(reverse("admin:orders_waitingevent_add")).status_code == 403
    delete = reverse("admin:orders_waitingevent_delete", args=[row.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert WaitingEvent.objects.count() == 2
