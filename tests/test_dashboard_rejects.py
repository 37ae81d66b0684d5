"""The staff dashboard with the orders app's rejects panel below the stats app's figures
(wired in orderpipe/urls.py): rejected orders by reason with links that filter the orders
admin, and the panel still shown when Redis is down."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime

import pytest
from django.test import Client

from orders.models import RejectedOrder
from stats.store import AggregateStore

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"


def reject(message_id: str, codes: str, status: str = RejectedOrder.Status.NEW) -> None:
    RejectedOrder.objects.create(
        message_id=message_id,
        body=b"{}",
        reason_codes=codes,
        received_at=datetime(2025, 8, 9, tzinfo=UTC),
        status=status,
    )


def test_dashboard_lists_rejected_orders_by_reason_with_changelist_links(
    admin_client: Client, app_store: AggregateStore
) -> None:
    reject("m1", ",invalid_json,")
    reject("m2", ",missing_field,value_mismatch,", RejectedOrder.Status.REVIEWED)
    reject("m3", ",value_mismatch,", RejectedOrder.Status.RESUBMITTED)

    response = admin_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "<h2>Rejected orders: 3</h2>" in html
    reasons = re.findall(
        r'<a href="([^"]+)" class="reason-link" data-code="(\w+)"><code>\w+</code></a></td>'
        r'<td class="num">(\d+)</td>',
        html,
    )
    changelist = "/admin/orders/rejectedorder/"
    assert reasons == [  # in the order of the contract's table of codes
        (f"{changelist}?reason=invalid_json", "invalid_json", "1"),
        (f"{changelist}?reason=missing_field", "missing_field", "1"),
        (f"{changelist}?reason=value_mismatch", "value_mismatch", "2"),
    ]
    assert f'<a href="{changelist}?status__exact=reviewed" class="status-link">Reviewed: ' in html
    # The links really filter: the changelist shows the two value_mismatch rows.
    filtered = admin_client.get(f"{changelist}?reason=value_mismatch")
    assert filtered.status_code == 200
    assert filtered.context["cl"].result_count == 2


def test_redis_down_shows_a_message_not_a_500(admin_client: Client, settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
    reject("m1", ",invalid_json,")

    response = admin_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="stats-error">Statistics are unavailable right now: Redis did not answer' in html
    assert 'class="dashboard-chart"' not in html
    assert "<h2>Rejected orders: 1</h2>" in html
