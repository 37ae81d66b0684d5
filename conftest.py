"""Fixtures shared by every test directory: real Redis and SQS server processes, fakes.

Real servers are started once per session on free ports (``TEST_REDIS_URL`` /
``TEST_REDIS_CLUSTER_URL`` / ``TEST_SQS_URL`` point at existing ones instead). Tests never
flush a Redis: each test gets its own key prefix and its own queue name, and cleans up only
what it created.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import pytest
import redis
from django_redis.pool import ConnectionFactory
from fakeredis.commands_mixins.scripting_mixin import ScriptingCommandsMixin
from redis.cluster import RedisCluster

from devtools.servers import MotoSQSServer, RedisServer, ValkeyCluster, aws_test_environment
from orderpipe.redis_cluster import ClusterConnectionFactory
from orders.sqs import OrderQueue, make_client
from stats.store import AggregateStore, get_store
from stats.store import servers as store_servers
from tests.ingestion_helpers import prefix_keys


@dataclass
class ExternalServer:
    """A server the suite did not start: used, never stopped or flushed."""

    url: str


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer | ExternalServer]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield ExternalServer(url)
        return
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ValkeyCluster | ExternalServer]:
    """A 3-primary Valkey cluster shared by the session (about 2 s to start); never stop
    one of its nodes in a test (``private_redis_cluster`` is for that)."""
    if url := os.environ.get("TEST_REDIS_CLUSTER_URL"):
        yield ExternalServer(url)
        return
    cluster = ValkeyCluster(nodes=3, data_dir=tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    """A 3-primary cluster of this test alone, for stopping and restarting its nodes.

    A 1 s node timeout: a stopped primary is declared failed (CLUSTERDOWN) within about 2 s
    and the cluster is ok again about 3 s after its restart.
    """
    cluster = ValkeyCluster(nodes=3, data_dir=tmp_path / "cluster", node_timeout_ms=1000)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[MotoSQSServer | ExternalServer]:
    if url := os.environ.get("TEST_SQS_URL"):
        yield ExternalServer(url)
        return
    server = MotoSQSServer()
    server.start()
    yield server
    server.stop()


def _drop_redis_pools() -> None:
    for pool in ConnectionFactory._pools.values():
        pool.disconnect()
    ConnectionFactory._pools.clear()
    ClusterConnectionFactory.close_all()
    store_servers._SERVERS.clear()


@pytest.fixture(autouse=True)
def fresh_redis_pools() -> Iterator[None]:
    """django-redis keeps one connection pool per URL for the whole process, and the store
    the servers' INFO per key prefix for a minute (``servers(max_age=…)``); without a reset
    a test would reach, or see, the server (or FakeServer) an earlier test configured."""
    _drop_redis_pools()
    yield
    _drop_redis_pools()


@pytest.fixture
def key_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def _delete_prefix(client: redis.Redis | RedisCluster, prefix: str) -> None:
    """A multi-key DELETE is split by slot on a cluster."""
    keys = sorted(prefix_keys(client, prefix))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def live_redis(settings, redis_server, key_prefix: str) -> Iterator[redis.Redis]:
    """Points django-redis at the real test server under a key prefix of this test only."""
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": redis_server.url},
    }
    settings.REDIS_URL = redis_server.url
    settings.REDIS_KEY_PREFIX = key_prefix
    client = redis.Redis.from_url(redis_server.url)
    yield client
    _delete_prefix(client, key_prefix)
    client.close()


@pytest.fixture
def live_redis_cluster(settings, redis_cluster, key_prefix: str) -> Iterator[RedisCluster]:
    """Like ``live_redis`` on the session's cluster: ``REDIS_CLUSTER`` on, django-redis (store,
    cache, throttle) on a ``RedisCluster``, cache keys under this test's prefix too."""
    default = settings.CACHES["default"]
    settings.CACHES = {
        "default": {
            **default,
            "LOCATION": redis_cluster.url,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": {**default["OPTIONS"], **settings.REDIS_CLUSTER_CACHE_OPTIONS},
        },
    }
    settings.REDIS_CLUSTER = True
    settings.REDIS_URL = redis_cluster.url
    settings.REDIS_KEY_PREFIX = key_prefix
    client = RedisCluster.from_url(redis_cluster.url)
    yield client
    _delete_prefix(client, key_prefix)
    client.close()


@pytest.fixture
def cluster_store(live_redis_cluster: RedisCluster, key_prefix: str) -> AggregateStore:
    """An aggregate store with 8 shards on the session's 3-primary cluster."""
    return AggregateStore(live_redis_cluster, prefix=key_prefix, dedup_ttl=3600, shards=8)


@pytest.fixture
def store(live_redis: redis.Redis, key_prefix: str) -> AggregateStore:
    """An aggregate store on the real Redis server."""
    return AggregateStore(live_redis, prefix=key_prefix, dedup_ttl=3600)


def _eval_without_shebang(original: Callable[..., object]) -> Callable[..., object]:
    """fakeredis runs a script's text as plain Lua; Redis 7 reads a first ``#!lua …`` line as
    the script's flags. Blank that line (keeping line numbers) so the store's scripts run."""

    def eval_(self: object, script: bytes, numkeys: int, *keys_and_args: bytes) -> object:
        if script.startswith(b"#!"):
            script = b"--" + script[2:]
        return original(self, script, numkeys, *keys_and_args)

    eval_.__name__ = original.__name__
    return eval_


@pytest.fixture
def fake_redis(settings, monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """django-redis wired to an in-process fakeredis server (with Lua) for fast unit tests."""
    monkeypatch.setattr(
        ScriptingCommandsMixin, "eval", _eval_without_shebang(ScriptingCommandsMixin.eval)
    )
    server = fakeredis.FakeServer()
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "OPTIONS": {
                **settings.CACHES["default"]["OPTIONS"],
                "CONNECTION_POOL_KWARGS": {
                    "connection_class": fakeredis.FakeRedisConnection,
                    "server": server,
                },
            },
        }
    }
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def fake_store(fake_redis: fakeredis.FakeRedis, settings) -> AggregateStore:
    return AggregateStore(fake_redis, prefix=settings.REDIS_KEY_PREFIX, dedup_ttl=3600)


@pytest.fixture
def app_store(fake_redis, settings, key_prefix: str) -> AggregateStore:
    """The store the view itself uses (get_store), on fakeredis under this test's prefix."""
    settings.REDIS_KEY_PREFIX = key_prefix
    return get_store()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = aws_test_environment()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def make_queue(settings, sqs_server, aws_env) -> Callable[..., OrderQueue]:
    """Creates fresh orders queues (and DLQs) on the moto server process, unique to this test."""

    def make(visibility_timeout: int = 30, max_receive_count: int = 5) -> OrderQueue:
        settings.LOCALSTACK_URL = sqs_server.url
        settings.QUEUE_NAME = f"orders-{uuid.uuid4().hex[:10]}"
        queue = OrderQueue(make_client(sqs_server.url), settings.QUEUE_NAME)
        queue.ensure(max_receive_count=max_receive_count, visibility_timeout=visibility_timeout)
        return queue

    return make


@pytest.fixture
def sqs_queue(make_queue) -> OrderQueue:
    return make_queue()


def database_url(settings_dict: dict) -> str:
    """The URL of the (test) database Django is connected to, for child processes."""
    if "sqlite" in settings_dict["ENGINE"]:
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def child_env(settings, tmp_path: Path, aws_env) -> Callable[..., dict[str, str]]:
    """Environment for a manage.py child process sharing this test's Redis, queue and DB.

    Needs ``transactional_db`` in the test so the child sees committed rows.
    """
    from django.db import connection

    def make(**overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            **aws_env,
            "DJANGO_SETTINGS_MODULE": "orderpipe.settings",
            "DEBUG": "true",
            "SECRET_KEY": "tests-only-child-secret",
            "DATABASE_URL": database_url(connection.settings_dict),
            "REDIS_URL": settings.REDIS_URL,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "LOCALSTACK_URL": settings.LOCALSTACK_URL,
            "QUEUE_NAME": settings.QUEUE_NAME,
            "LOG_DIR": str(tmp_path / "logs"),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(overrides)
        return env

    return make


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test alone, for stopping, killing and restarting it."""
    server = RedisServer(data_dir=tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# --- API clients and accounts for the APIs' access rules (STATS_API_AUTH) -----------------------
@pytest.fixture
def api():  # -> APIClient
    from rest_framework.test import APIClient

    return APIClient()


TEST_PASSWORD = "a-long-test-password"  # noqa: S105 (test accounts only)


@pytest.fixture
def customer(db):  # -> User (imported lazily: this module loads before Django's apps)
    """An account without the permission: what a shop's customer login would be."""
    from django.contrib.auth.models import User

    return User.objects.create_user("customer", password=TEST_PASSWORD)


@pytest.fixture
def analyst(db):
    """Holds stats.view_stats through a group, the way an admin grants it."""
    from django.contrib.auth.models import Group, Permission, User

    user = User.objects.create_user("analyst", password=TEST_PASSWORD)
    group = Group.objects.create(name="analysts")
    group.permissions.add(
        Permission.objects.get(codename="view_stats", content_type__app_label="stats")
    )
    user.groups.add(group)
    return user


@pytest.fixture
def client_as(db) -> Callable[..., object]:
    """``client_as(user, "token" | "session")``: an APIClient that presents ``user`` the way
    that STATS_API_AUTH mode expects (an ``Authorization: Token`` header, or a login)."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user, mode: str) -> APIClient:
        client = APIClient()
        if mode == "token":
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        else:
            assert client.login(username=user.username, password=TEST_PASSWORD)
        return client

    return make
