"""The project's shared fixtures (tests/conftest.py), plus helpers for the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django_redis.pool import ConnectionFactory
from rest_framework.test import APIClient

from orders.validation import Item, Order
from stats.store import cents_to_decimal
from tests.conftest import (  # noqa: F401 - fixtures re-exported for this directory
    fake_redis,
    fake_store,
    key_prefix,
    live_redis,
    private_redis,
    redis_server,
    store,
)


def make_order(order_id: str, user_id: str, cents: int, when: datetime | None = None) -> Order:
    when = when or datetime(2025, 8, 9, 10, 15, tzinfo=UTC)
    return Order(order_id, user_id, cents, (Item("P001", 1, cents_to_decimal(cents)),), when, when)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def _drop_pools() -> None:
    for pool in ConnectionFactory._pools.values():
        pool.disconnect()
    ConnectionFactory._pools.clear()


@pytest.fixture(autouse=True)
def fresh_redis_pools() -> Iterator[None]:
    """django-redis caches connection pools per URL for the whole process, so without this
    every ``fake_redis`` test after the first would talk to the first test's FakeServer."""
    _drop_pools()
    yield
    _drop_pools()
