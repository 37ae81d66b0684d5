"""A Redis that would silently lose marks or aggregates, or cannot run the scripts, is refused.

``consume_orders`` checks every primary before it receives anything: Redis 7.0 or newer and
``maxmemory-policy noeviction``, read from INFO (managed services often disable CONFIG).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from stats.store import ServerInfo

LUA_SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "stats" / "lua").glob("*.lua"))

pytestmark = pytest.mark.django_db


@pytest.fixture
def evicting(settings, private_redis) -> redis.Redis:
    settings.REDIS_URL = private_redis.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    return client


def test_consume_orders_refuses_a_redis_that_evicts(evicting: redis.Redis) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("consume_orders", "--once")
    message = str(refused.value)
    assert "maxmemory-policy allkeys-lru" in message
    assert "noeviction" in message
    assert "\n" not in message  # one line
    assert evicting.dbsize() == 0  # nothing written, nothing received


def test_pipeline_status_names_the_eviction_policy_as_a_problem(
    evicting: redis.Redis, sqs_queue
) -> None:
    with pytest.raises(CommandError, match="maxmemory-policy allkeys-lru"):
        call_command("pipeline_status", stdout=None)


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        (ServerInfo("n:1", True, "redis 6.2.14", "6.2.14", "noeviction"), "version 6.2.14"),
        (ServerInfo("n:1", True, "valkey 9.1.2", "7.2.4", "volatile-lru"), "volatile-lru"),
        (ServerInfo("n:1", True, "valkey 9.1.2", "7.2.4", "noeviction"), None),
        (ServerInfo("n:1", True, None, None, None), None),  # INFO refused: a warning instead
        (ServerInfo("n:1", False, error="refused"), None),  # down: an outage, not refused
    ],
)
def test_what_refuses_a_server(server: ServerInfo, problem: str | None) -> None:
    found = server.problems()
    assert (problem in found[0]) if problem else not found


def test_an_old_server_is_told_what_needs_7_0() -> None:
    (problem,) = ServerInfo("n:1", True, "redis 6.2.14", "6.2.14", "noeviction").problems()
    assert problem == (
        "Redis n:1 is version 6.2.14; orderpipe needs 7.0 or newer (its Lua scripts start "
        "with a #!lua line, which older servers refuse to run)"
    )


def test_every_script_starts_with_the_shebang_that_needs_7_0() -> None:
    """What the message above says of the scripts; without the shebang a script under OOM
    would stop at its first write instead of being refused whole."""
    assert [p.name for p in LUA_SCRIPTS] == ["apply_batch.lua", "release_lock.lua"]
    assert all(p.read_text().startswith("#!lua\n") for p in LUA_SCRIPTS)


def test_a_redis_that_hides_its_policy_gets_one_warning(
    fake_redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fakeredis has no INFO, like a managed service that hides it: consume_orders goes on
    with a single WARNING (and then, here, stops at the missing SQS queue)."""
    from orders.management.commands import consume_orders

    monkeypatch.setattr(
        consume_orders.Command, "_ensure_queue", lambda self, consumer, options: consumer.stop.set()
    )
    with caplog.at_level(logging.WARNING, logger="orders.consumer"):
        call_command("consume_orders", "--once")
    warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1
    assert "does not report its maxmemory-policy" in warnings[0]
