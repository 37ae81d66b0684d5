"""The Redis servers themselves: their version and eviction policy (from INFO), and latency.

``consume_orders`` refuses a server orderpipe must not write to (``ServerInfo.problems``)
before it receives anything; ``pipeline_status``, ``/health`` and ``/metrics`` show them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from stats.store.base import StoreBase
from stats.store.errors import is_unreachable, unavailable_on_redis_error

# Both scripts in stats/lua start with a ``#!lua`` shebang line, which Redis and Valkey accept
# from 7.0 on (older servers refuse to compile the script). The shebang is what makes a server
# under OOM refuse the apply script whole instead of stopping it at its first write.
MIN_REDIS_VERSION = (7, 0)
# prefix -> (monotonic time, every primary's INFO) for ``servers(max_age=…)``.
_SERVERS: dict[str, tuple[float, list[ServerInfo]]] = {}


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One Redis primary as ``pipeline_status`` and ``/health`` show it."""

    node: str
    reachable: bool
    version: str | None = None  # as the server names itself: "valkey 9.1.2", "redis 7.0.15"
    redis_version: str | None = None  # the Redis version it is compatible with
    eviction_policy: str | None = None
    error: str | None = None

    def problems(self) -> list[str]:
        """Why orderpipe must not write to this server (empty when it may)."""
        if not self.reachable:
            return []  # an outage, not a misconfiguration
        found = []
        if self.redis_version and _version_tuple(self.redis_version) < MIN_REDIS_VERSION:
            found.append(
                f"Redis {self.node} is version {self.redis_version}; orderpipe needs 7.0 or newer "
                "(its Lua scripts start with a #!lua line, which older servers refuse to run)"
            )
        if self.eviction_policy not in (None, "noeviction"):
            found.append(
                f"Redis {self.node} has maxmemory-policy {self.eviction_policy}: it would evict "
                "idempotency marks (a redelivery counted twice) or aggregates (money lost). "
                "Set it to noeviction (redis.conf `maxmemory-policy noeviction`, "
                "`CONFIG SET maxmemory-policy noeviction`, or the parameter group of a "
                "managed service)"
            )
        return found


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _node_name(client: Any) -> str:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


class ServersMixin(StoreBase):
    # The clock of ``servers(max_age=…)``; a test swaps it.
    monotonic: Callable[[], float] = staticmethod(time.monotonic)

    @unavailable_on_redis_error
    def ping(self) -> float:
        """Round-trip latency to Redis in milliseconds."""
        started = time.perf_counter()
        self.client.ping()
        return (time.perf_counter() - started) * 1000

    def servers(self, max_age: float = 0.0) -> list[ServerInfo]:
        """Version and eviction policy of every primary, from INFO (managed services often
        disable CONFIG); an unreachable one is reported, not raised.

        ``max_age`` > 0 reuses this process's last answer for that many seconds: /metrics
        and /health show configuration, which does not change between two calls, and two INFO
        per primary on every call of an open /health cost every primary work for nothing. An
        answer with an unreachable primary is not kept, so its return shows at the next call.
        """
        if max_age > 0:
            cached = _SERVERS.get(self.prefix)
            now = self.monotonic()
            if cached is not None and now - cached[0] <= max_age:
                return cached[1]
            servers = self.servers()
            if all(server.reachable for server in servers):
                _SERVERS[self.prefix] = (now, servers)
            else:
                _SERVERS.pop(self.prefix, None)
            return servers
        client = self.client
        if not isinstance(client, RedisCluster):
            return [_server_info(client, _node_name(client))]
        return [_server_info(client, node.name, target=node) for node in client.get_primaries()]


def _server_info(client: Any, name: str, target: Any = None) -> ServerInfo:
    try:
        if target is None:
            info = client.info("server") | client.info("memory")
        else:
            info = client.info("server", target_nodes=target) | client.info(
                "memory", target_nodes=target
            )
    except (redis.RedisError, RedisClusterException) as exc:
        # A server that answers but refuses INFO (an ACL, a renamed command) is reachable;
        # what it did not tell stays unknown.
        return ServerInfo(
            name, reachable=not is_unreachable(exc), error=f"{type(exc).__name__}: {exc}"
        )
    redis_version = str(info["redis_version"]) if "redis_version" in info else None
    version: str | None
    if "valkey_version" in info:  # Valkey also reports the Redis version it matches
        version = f"valkey {info['valkey_version']}"
    else:
        version = f"redis {redis_version}" if redis_version else None
    policy = info.get("maxmemory_policy")
    return ServerInfo(
        name,
        reachable=True,
        version=version,
        redis_version=redis_version,
        eviction_policy=str(policy) if policy is not None else None,
    )
