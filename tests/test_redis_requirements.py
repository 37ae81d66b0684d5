"""A Redis that would silently lose marks or aggregates, or cannot run the scripts, is refused.

``consume_orders`` checks every primary before it receives anything: Redis 7.0 or newer and
``maxmemory-policy noeviction``, read from INFO (managed services often disable CONFIG). Here
against a real server set to evict; the rules themselves are in stats/tests/test_servers.py.
"""

from __future__ import annotations

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

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
