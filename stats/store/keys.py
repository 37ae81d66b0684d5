"""Every Redis key name orderpipe uses, built here and nowhere else. Pure: no I/O.

Shards and hash tags. A user's aggregates live in shard ``crc32(user_id) mod REDIS_SHARDS``
(a rejected message's count in the shard of its message id), and every key of shard ``s`` of
``N`` carries the tag ``T = {<prefix>:<N>:<s>}``: one script call per shard touches one hash
slot (Redis Cluster, ElastiCache Serverless), a cluster spreads the shards over its primaries,
and two layouts (another ``N``) never share a key while ``rebuild_stats`` moves the aggregates
from one to the other. With one shard on a single node (the default) ``T`` is plain
``<prefix>``: the key names of earlier versions.

Generations. Aggregates live under a generation ``G`` (``T:g<G>:…``; generation 0 has no
segment). ``rebuild_stats`` fills a fresh one and then switches ``T:gen`` to it, so a reader
never sees a half-built state; writers and readers check the generation they use.

======================================  ======  ============================================
key                                     type    content
======================================  ======  ============================================
``T[:gG]:user:<user_id>``               hash    orders, spend (cents), first, last (epoch ms)
``T[:gG]:global``                       hash    the shard's orders, revenue (cents), users
``T[:gG]:rank:spend``                   zset    user_id scored by -spend (cents)
``T[:gG]:rank:orders``                  zset    user_id scored by -order count
``T[:gG]:days``                         hash    the shard's ``YYYY-MM-DD:orders``,
                                                ``YYYY-MM-DD:revenue``
``T:seen:<order_id>``                   string  the order's fingerprint: applied; expires
                                                after ``ORDER_DEDUP_TTL`` (0 = never)
``T:rejected:<message_id>``             string  "1": this rejected message is counted in
                                                ``T:ingest``; same expiry
``T:ingest``                            hash    the shard's received, applied, duplicates,
                                                rejected, ``rejected:<code>``,
                                                last_batch_ms, heartbeat_ms
``T:gen``                               string  the shard's live generation (absent = 0)
``T:lock``                              string  a rebuild's token while it runs (expires), or
                                                ``retired:<shards>`` for a layout a rebuild
                                                moved away from (never expires)
``<prefix>:consumers``                  hash    consumer id (host:pid) -> its last batch or
                                                empty poll (epoch ms); gone on a clean stop
``<prefix>:layout``                     string  the shard count the aggregates are laid out for
``<prefix>:reconcile``                  string  JSON: when the last reconcile ran, what it found
======================================  ======  ============================================

All days of a shard live in one hash so that any date range is one HMGET per shard, and
rankings use negated scores so that one ZRANGE returns the highest first with ties by user_id
ascending; merged shards keep both rules. Every key a script touches is passed to it in
``KEYS``: no key name is built inside a script either.
"""

from __future__ import annotations

import zlib

# The keys outside every shard (read and written without scripts).
SHARED_KEYS = ("consumers", "layout", "reconcile")


def shard_of(value: str, shards: int) -> int:
    """The shard of a user (or of a rejected message): stable across processes and versions."""
    if shards == 1:
        return 0
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % shards


def glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


class KeySpace:
    """The key names of one prefix laid out over ``shards`` shards, on a cluster or not.

    The named methods follow the table above; ``key``, ``aggregate`` and ``shared`` are the
    three forms every name takes (per shard; per shard and generation; outside the shards).
    """

    def __init__(self, prefix: str, shards: int = 1, cluster: bool = False) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.prefix = prefix
        self.shards = shards
        self.cluster = cluster
        # One node and one shard: the key names of earlier versions, no hash tag.
        self._tags = (
            [prefix]
            if shards == 1 and not cluster
            else [f"{{{prefix}:{shards}:{s}}}" for s in range(shards)]
        )

    def shard_of(self, value: str) -> int:
        return shard_of(value, self.shards)

    # --- the three forms ---------------------------------------------------------------------
    def key(self, *parts: str, shard: int = 0) -> str:
        """A per-shard key that is not part of a generation (marks, ingest, gen, lock)."""
        return ":".join((self._tags[shard], *parts))

    def aggregate(self, *parts: str, shard: int = 0, generation: int = 0) -> str:
        """A key of one generation's aggregates."""
        base = self._tags[shard] if generation == 0 else f"{self._tags[shard]}:g{generation}"
        return ":".join((base, *parts))

    def shared(self, name: str) -> str:
        """A key outside every shard (one of ``SHARED_KEYS``)."""
        return f"{self.prefix}:{name}"

    # --- a generation's aggregates -----------------------------------------------------------
    def user(self, user_id: str, shard: int, generation: int) -> str:
        return self.aggregate("user", user_id, shard=shard, generation=generation)

    def totals(self, shard: int, generation: int) -> str:
        """The shard's ``global`` hash."""
        return self.aggregate("global", shard=shard, generation=generation)

    def days(self, shard: int, generation: int) -> str:
        return self.aggregate("days", shard=shard, generation=generation)

    def ranking(self, name: str, shard: int, generation: int) -> str:
        """``name`` is ``spend`` or ``orders``."""
        return self.aggregate("rank", name, shard=shard, generation=generation)

    def aggregates(self, shard: int, generation: int) -> list[str]:
        """The keys of a generation's shard other than its user hashes."""
        return [
            self.totals(shard, generation),
            self.days(shard, generation),
            self.ranking("spend", shard, generation),
            self.ranking("orders", shard, generation),
        ]

    def users_pattern(self, shard: int, generation: int) -> str:
        """SCAN MATCH for every user hash of a generation's shard."""
        return glob_escape(self.user("", shard, generation)) + "*"

    def user_id_of(self, key: str, shard: int, generation: int) -> str:
        """The user id in a key ``users_pattern`` found."""
        return key[len(self.user("", shard, generation)) :]

    # --- per shard, outside the generations --------------------------------------------------
    def mark(self, order_id: str, shard: int) -> str:
        """An order's idempotency mark."""
        return self.key("seen", order_id, shard=shard)

    def rejected(self, message_id: str, shard: int) -> str:
        """A rejected message's counted-once mark."""
        return self.key("rejected", message_id, shard=shard)

    def ingest(self, shard: int) -> str:
        return self.key("ingest", shard=shard)

    def generation(self, shard: int) -> str:
        """The shard's live generation."""
        return self.key("gen", shard=shard)

    def lock(self, shard: int) -> str:
        """The shard's rebuild lock."""
        return self.key("lock", shard=shard)

    def shard_pattern(self, shard: int) -> str:
        """SCAN MATCH for every key of a shard; on a one-shard node it also matches the shared
        keys, which share its bare-prefix tag."""
        return glob_escape(self._tags[shard]) + ":*"
