"""What Redis says, and what it means to orderpipe: an outage or a refusal.

Every Redis error leaves the store as a ``StoreUnavailableError``. An outage (the server will
serve again by itself) is one; a refusal no retry can cure is its subclass
``StoreCommandError``. The consumer keeps its batch and backs off on the first and stops loudly
on the second, instead of cycling every message towards the dead-letter queue; the API answers
503 to both. The table below decides which is which, one comment per entry.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis
from redis.exceptions import RedisClusterException

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailableError(Exception):
    """Redis cannot serve right now and will again by itself (see ``_TRANSIENT``).

    Callers back off and retry the same work (the consumer) or answer 503 (the API).
    """


class RebuildInProgressError(StoreUnavailableError):
    """``rebuild_stats`` holds the lock: writers keep their batch and try again shortly."""


class StoreCommandError(StoreUnavailableError):
    """Redis refused a command for a reason that retrying cannot cure (see ``_PERMANENT``):
    the consumer stops loudly instead of cycling every message towards the dead-letter queue.
    The API still answers 503."""


class LeaseLostError(Exception):
    """A rebuild or repair no longer holds its lock (it expired while the command stalled, or
    another took it): its fenced writes wrote nothing, and it must stop before its switch."""


# Refusals that end by themselves: the consumer keeps its batch, backs off and retries it.
_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # unreachable, reset, pool exhausted; BusyLoadingError = LOADING
    redis.TimeoutError,  # no answer within REDIS_SOCKET_TIMEOUT
    redis.exceptions.ReadOnlyError,  # READONLY: a replica, e.g. an old primary in a failover
    redis.exceptions.TryAgainError,  # TRYAGAIN: multi-key command during a slot migration
    redis.exceptions.ClusterDownError,  # CLUSTERDOWN (and MASTERDOWN, its subclass)
    redis.exceptions.ClusterError,  # "TTL exhausted": redirections (TRYAGAIN) that did not end
    redis.exceptions.OutOfMemoryError,  # OOM under noeviction: lifts when memory is freed
    redis.exceptions.SlotNotCoveredError,  # cluster: a slot's primary is gone, not yet replaced
)
# redis-py's cluster client, when it (re)builds its slot map and no node it knows answers.
_CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"
# Plain ResponseErrors recognised by their code (a pipeline prefixes the reply with
# "Command # N (…) of pipeline caused error: ").
_TRANSIENT_CODES = re.compile(
    r"(?:^|caused error: )(?:"
    r"BUSY"  # another client's script runs long; ends with it (or SCRIPT KILL)
    r"|MISCONF"  # writes refused until a failed background save succeeds
    r"|NOREPLICAS"  # fewer replicas than min-replicas-to-write are connected
    r"|LOADING"  # a restart replaying its data
    r") "
)
# Never retried, although some are ConnectionErrors: they need an operator.
_PERMANENT: tuple[type[BaseException], ...] = (
    redis.AuthenticationError,  # wrong password
    redis.exceptions.AuthorizationError,  # the user may not run this
    redis.exceptions.NoPermissionError,  # NOPERM: ACL forbids a command or key
)
# Everything else (WRONGTYPE, CROSSSLOT, an unknown command on an old server, a script
# error) is permanent too.


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, RedisClusterException) and str(exc).startswith(_CLUSTER_UNREACHABLE):
        return True
    return isinstance(exc, _TRANSIENT) or _TRANSIENT_CODES.search(str(exc)) is not None


def is_unreachable(exc: BaseException) -> bool:
    """No answer came: a server that refuses (a wrong password, an ACL, a renamed command)
    did answer, so it is reachable."""
    unanswered = redis.ConnectionError | redis.TimeoutError | RedisClusterException
    return isinstance(exc, unanswered) and not isinstance(exc, _PERMANENT)


def store_error(exc: redis.RedisError | RedisClusterException) -> StoreUnavailableError:
    """The store's exception for a Redis error (raise it ``from exc``)."""
    kind = StoreUnavailableError if is_transient(exc) else StoreCommandError
    return kind(f"{type(exc).__name__}: {exc}")


def unavailable_on_redis_error(method: Callable[P, R]) -> Callable[P, R]:
    """Let no Redis error out of ``method`` but as the store's own (see ``store_error``);
    out of a generator's iteration too."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                yield from method(*args, **kwargs)
            except (redis.RedisError, RedisClusterException) as exc:
                raise store_error(exc) from exc

        return generator

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.RedisError, RedisClusterException) as exc:
            raise store_error(exc) from exc

    return wrapper
