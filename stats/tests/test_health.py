"""/health over the fake store: what it keeps of the primaries' INFO, and for how long.

Who sees the nodes, and the INFO read at most once a minute on a real server and cluster, are
in tests/test_api_live.py; the database down in test_database_down.py.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from stats.store import ServerInfo

pytestmark = pytest.mark.django_db


def test_health_sees_a_primary_come_back_at_the_next_call(
    fake_store, api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primaries' INFO is kept a minute, but not an answer with one unreachable: its
    return must not leave the site unhealthy for a minute more."""
    answers = iter([False, True, True])
    names: list[str] = []

    def info(client: object, name: str, target: object = None) -> ServerInfo:
        names.append(name)
        reachable = next(answers)
        error = None if reachable else "ConnectionError: Connection refused"
        return ServerInfo(name, reachable, "redis 7.4.0", "7.4.0", "noeviction", error)

    monkeypatch.setattr("stats.store.servers._server_info", info)

    responses = [api.get("/health") for _ in range(3)]

    assert [r.status_code for r in responses] == [503, 200, 200]
    bodies = [r.json() for r in responses]
    for body in bodies:
        assert body.pop("timestamp") and isinstance(body.pop("redis_latency_ms"), float)
    node = {"node": names[0], "version": "redis 7.4.0", "eviction_policy": "noeviction"}
    down = {
        "status": "unhealthy",
        "redis": "connected",
        "redis_nodes": [node | {"reachable": False}],
        "database": "connected",
    }
    back = down | {"status": "healthy", "redis_nodes": [node | {"reachable": True}]}
    assert bodies == [down, back, back]
    assert len(names) == 2  # the third call used the kept answer
