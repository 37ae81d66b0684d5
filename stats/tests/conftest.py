"""Helpers for the API tests (the shared fixtures are in the root conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from orders.validation import Item, Order
from stats.store import cents_to_decimal


def make_order(order_id: str, user_id: str, cents: int, when: datetime | None = None) -> Order:
    when = when or datetime(2025, 8, 9, 10, 15, tzinfo=UTC)
    return Order(order_id, user_id, cents, (Item("P001", 1, cents_to_decimal(cents)),), when, when)


@pytest.fixture
def api() -> APIClient:
    return APIClient()
