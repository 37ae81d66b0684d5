"""The rebuild lock, a fenced lease: what lets ``rebuild_stats`` and ``reconcile_stats
--repair`` write while consumers keep their batches in hand.

Each shard has a lock key. A rebuild takes all of them (``SET NX PX``: all or none) under one
token and keeps extending them (``refresh_lock.lua``, only while they still hold its token);
consumers' scripts find the lock and write nothing meanwhile. A lease alone protects nothing
once it has run out (a stalled process, an unreachable Redis), so every write a rebuild or a
repair makes goes through ``fenced_write.lua``, which checks the token on the shard it writes
and writes nothing when it is gone: a rebuild that lost its lease cannot switch to a
generation that lacks what consumers applied meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stats.store.errors import LeaseLostError, unavailable_on_redis_error
from stats.store.layouts import RETIRED
from stats.store.scripts import LuaScript, ScriptCall, ScriptsMixin
from stats.store.values import text

RELEASE = LuaScript.named("release_lock")
REFRESH = LuaScript.named("refresh_lock")
FENCED_WRITE = LuaScript.named("fenced_write", "packed_figures")


@dataclass
class Fenced:
    """One fenced script call: the locks it checks, then its operations (command, key, args),
    every key in one hash slot (one shard), or any keys on one node."""

    locks: list[str]
    ops: list[tuple[str, str, Sequence[Any]]] = field(default_factory=list)

    def add(self, command: str, key: str, *args: Any) -> None:
        self.ops.append((command, key, args))

    def call(self, token: str) -> ScriptCall:
        args: list[Any] = [token, len(self.locks)]
        for command, _key, values in self.ops:
            args += [command, len(values), *values]
        return ScriptCall([*self.locks, *(key for _c, key, _v in self.ops)], args)


class LeaseMixin(ScriptsMixin):
    @unavailable_on_redis_error
    def acquire_rebuild_lock(self, token: str, ttl_ms: int) -> bool:
        """Hold every shard's lock (consumers then keep their batches); False when another
        rebuild holds one. A lock an earlier version retired is taken over."""
        taken: list[int] = []
        for shard in self._all():
            key = self.keys.lock(shard)
            if not self.client.set(key, token, nx=True, px=ttl_ms):
                held = self.client.get(key)
                if held is None or not text(held).startswith(RETIRED):
                    self._release_locks(token, taken)
                    return False
                self.client.set(key, token, px=ttl_ms)
            taken.append(shard)
        return True

    @unavailable_on_redis_error
    def refresh_rebuild_lock(self, token: str, ttl_ms: int) -> bool:
        """Extend the lease on every shard; False when any shard's lock is no longer ours."""
        calls = [ScriptCall([self.keys.lock(s)], [token, ttl_ms]) for s in self._all()]
        return all(int(held) for held in self._run_scripts(REFRESH, calls))

    @unavailable_on_redis_error
    def release_rebuild_lock(self, token: str) -> None:
        self._release_locks(token, self._all())

    @unavailable_on_redis_error
    def rebuild_in_progress(self) -> bool:
        pipe = self.client.pipeline(transaction=False)
        for shard in self._all():
            pipe.exists(self.keys.lock(shard))
        return any(pipe.execute())

    def _release_locks(self, token: str, shards: Iterable[int]) -> None:
        calls = [ScriptCall([self.keys.lock(s)], [token]) for s in shards]
        if calls:
            self._run_scripts(RELEASE, calls)

    def fenced(self, shard: int) -> Fenced:
        """A fenced call checking ``shard``'s lock."""
        return Fenced([self.keys.lock(shard)])

    @unavailable_on_redis_error
    def run_fenced(self, token: str, calls: Sequence[Fenced]) -> None:
        """Run the calls in one pipelined round trip; ``LeaseLostError`` when one found a lock
        that is not ``token``'s (it wrote nothing; calls on other shards may have)."""
        calls = [call for call in calls if call.ops]
        if not calls:
            return
        replies = self._run_scripts(FENCED_WRITE, [call.call(token) for call in calls])
        if not all(int(reply) for reply in replies):
            raise LeaseLostError(
                "the rebuild lock is no longer held (it expired, or another rebuild or repair "
                "took it): nothing more was written"
            )
