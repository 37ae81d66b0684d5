"""A rejected order fixed and resubmitted in the admin, then counted by the consumer in the
aggregate store: the admin's fixtures and helpers are those of orders/tests/test_admin.py."""

from __future__ import annotations

import pytest
from django.test import Client

from orders.models import RejectedOrder
from orders.sqs import OrderQueue
from orders.tests import test_admin
from orders.tests.test_admin import fix, run_action

pytestmark = pytest.mark.django_db

# The admin tests' rejected rows and in-process SQS queue, the same fixtures by the same names.
rows = test_admin.rows
mocked_queue = test_admin.mocked_queue


def test_an_undated_corrected_order_counts_on_the_day_it_was_first_sent(
    admin_client: Client, rows: dict[str, RejectedOrder], mocked_queue: OrderQueue, fake_store
) -> None:
    """Rejected on 2024-08-09, fixed today: the consumer counts it on 2024-08-09."""
    from datetime import date

    from orders.consumer import Consumer

    fixed = fix(rows["mismatch"], mocked_queue, order_timestamp=None)  # its own ids
    run_action(admin_client, "resubmit_corrected", [fixed])

    result = Consumer(mocked_queue, fake_store, wait_time=0).process_batch()

    assert (result.received, result.applied) == (1, 1)
    [day] = fake_store.by_date(date(2024, 8, 9), date(2024, 8, 9))
    assert (day.total_orders, day.total_revenue_cents) == (1, 10997)
