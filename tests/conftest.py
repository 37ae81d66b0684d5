"""Fixtures of the integration tests in this directory (the servers: the root conftest)."""

from __future__ import annotations

import pytest

from stats.store import AggregateStore
from tests.projection_helpers import commit, message


@pytest.fixture(params=["real", "fake", "cluster"])
def any_store(request) -> AggregateStore:
    """The store on one real node, on fakeredis, and with 8 shards on a real 3-primary
    cluster: every behaviour of the store's tests holds on all three."""
    fixture = {"real": "store", "fake": "fake_store", "cluster": "cluster_store"}[request.param]
    return request.getfixturevalue(fixture)


@pytest.fixture
def filled(store: AggregateStore) -> AggregateStore:
    """Thirteen orders of five users through the real commit path (ledger, then Redis)."""
    store.dedup_ttl = 15 * 24 * 3600
    commit(
        store, [message(f"O{i}", user_id=f"U{i % 5 + 1}", price=f"{i + 1}.25") for i in range(12)]
    )
    commit(store, [message("X1", "U2", "0.99", timestamp="2025-08-20T23:59:59Z")])
    return store
