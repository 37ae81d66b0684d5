"""Every Redis key name orderpipe uses, built here and nowhere else. Pure: no I/O.

Shards and hash tags. A user's aggregates live in shard ``crc32(user_id) mod REDIS_SHARDS``
(a rejected message's count in the shard of its message id), and every key of shard ``s`` of
``N`` carries one hash tag ``T``: one script call per shard touches one hash slot (Redis
Cluster, ElastiCache Serverless), and two layouts (another ``N``) never share a key while
``rebuild_stats`` moves the aggregates from one to the other. With one shard on a single node
(the default) ``T`` is plain ``<prefix>``: the key names of earlier versions. Otherwise
``T = {<prefix>:<N>:<s>:<k>}`` with the smallest ``k`` whose slot lies in the middle eighth
of the ``s``-th ``N``-th of the 16,384 slots, so a cluster whose primaries hold contiguous
slot ranges gets the shards spread evenly, whatever the prefix (the slot of a tag chosen
anywhere in its range would land a shard that straddles two primaries on either); with
hand-assigned slots the spread follows the assignment. Key format 1 (earlier versions) used
``{<prefix>:<N>:<s>}``, whose slots fell at random; ``KeySpace(..., key_format=1)`` still
names those keys, so ``rebuild_stats`` can move the aggregates out of them. Key format 3
names the same keys as format 2 (``NAMING_FORMATS``); only the fields of the days and hours
hashes differ (format 2: three per day, ``YYYY-MM-DD:orders``, ``:revenue`` and ``:refunded``,
and as many per hour, ``<H>:orders``, ...), so ``rebuild_stats`` derives format 3 in a new
generation beside format 2's, as any rebuild.

Generations. Aggregates and the idempotency marks of the orders and events they count live
under a generation ``G`` (``T:g<G>:…``; generation 0 has no segment). ``rebuild_stats`` fills
a fresh one, marks included, and then switches ``T:gen`` to it, so a reader never sees a
half-built state and a rebuild that dies before its switch leaves the live generation and its
marks as they were; writers and readers check the generation they use.

======================================  ======  ============================================
key                                     type    content
======================================  ======  ============================================
``T[:gG]:user:<user_id>``               hash    orders, spend (gross cents), first, last
                                                (epoch ms), refunded (cents), cancelled
                                                (orders cancelled)
``T[:gG]:global``                       hash    the shard's orders, revenue (gross cents),
                                                users, refunded (cents), cancelled
``T[:gG]:rank:spend``                   zset    user_id scored by -(spend - refunded), the
                                                negated NET spend (cents)
``T[:gG]:rank:orders``                  zset    user_id scored by -order count (placed,
                                                cancelled ones included)
``T[:gG]:days``                         hash    one field per day of the shard,
                                                ``YYYY-MM-DD``: ``<orders>:<gross>:<refunded>``
                                                (integers; orders placed that day and their
                                                gross cents, cents refunded that day,
                                                whatever day their orders were)
``T[:gG]:products``                     hash    the shard's ``<product_id>:units``,
                                                ``<product_id>:revenue`` (cents): sold less
                                                refunded by items and cancelled (products of
                                                the shard's users' orders)
``T[:gG]:pdays:<YYYY-MM-DD>``           hash    the same fields for one day: sales on the
                                                order's day, refunds on the event's
``T[:gG]:hours``                        hash    one field per local hour of
                                                ``STATS_TIME_ZONE`` of the shard, ``<H>``
                                                (the UTC instant it began,
                                                ``YYYY-MM-DDTHH:MM``): the same three
                                                figures, orders placed in it and their
                                                gross cents, cents refunded in it
``T[:gG]:seen:<order_id>``              string  the order's fingerprint: counted in this
                                                generation; expires after ``ORDER_DEDUP_TTL``
                                                (0 = never)
``T[:gG]:event:<event_id>``             string  the event's fingerprint: counted in this
                                                generation (in the shard of its order's
                                                user); same expiry and window rule
``T:rejected:<message_id>``             string  "1": this rejected message is counted in
                                                ``T:ingest``; same expiry
``T:batch:<token>``                     string  the reply of a batch's script call (JSON),
                                                so a retry of that batch counts nothing twice;
                                                expires after an hour (``<token>`` ends in
                                                the reply's form, ``:r3``: with events, kept
                                                beside a digest of the call's items)
``T:ingest``                            hash    the shard's received, applied, duplicates,
                                                rejected, ``rejected:<code>``,
                                                events_received, events_applied,
                                                events_duplicates, last_batch_ms,
                                                heartbeat_ms
``T:gen``                               string  the shard's live generation, described:
                                                ``<G>;v<format>;n<shards>``, with
                                                ``;z<zone>;c<currency>`` unless UTC,
                                                USD (see ``layouts``); ``retired:<layout>`` once a
                                                rebuild moved the aggregates to that layout
                                                (never expires); absent = nothing written yet
``T:lock``                              string  a rebuild's or repair's token while it runs
                                                (a lease: expires unless refreshed); in a
                                                key format 1 layout a rebuild moved away
                                                from, ``retired:<shards>`` (for earlier
                                                versions, which read it there)
``<prefix>:consumers``                  hash    consumer id (host:pid) -> its last batch or
                                                empty poll (epoch ms); gone on a clean stop
``<prefix>:layout``                     string  the layout the aggregates are built for,
                                                ``v<format>;n<shards>[;z<zone>][;c<cur>]``
                                                (earlier versions: the shard count alone)
``<prefix>:generations``                hash    each generation being built or dropped, and
                                                each retired layout being dropped (JSON):
                                                what a rebuild that died left behind
``<prefix>:generation_seq``             string  the last generation number handed out
``<prefix>:reconcile``                  string  JSON: when the last reconcile ran, what it found
======================================  ======  ============================================

All days of a shard live in one hash, one field a day, so that any date range is one HMGET
of one field per day per shard (a product's days: one hash per day, so a range is one HGETALL
per day and shard), and
rankings use negated scores so that one ZRANGE returns the highest first with ties by user_id
ascending; merged shards keep both rules. Every key a script touches is passed to it in
``KEYS``: no key name is built inside a script either.
"""

from __future__ import annotations

import functools
import itertools
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# The keys outside every shard (read and written without scripts).
SHARED_KEYS = ("consumers", "layout", "reconcile", "generations", "generation_seq")
# The form of the keys this version writes: 1 had other hash tags, 2 three fields per day in
# the days hash and per hour in the hours hash, 3 one each (``orders:gross:refunded``).
KEY_FORMAT = 3
# The form of the key names each known key format uses: 2 and 3 name the same keys.
NAMING_FORMATS = {1: 1, 2: 2, 3: 2}


def naming_format(key_format: int) -> int:
    """The form of the key names of ``key_format`` (one it does not know: its own)."""
    return NAMING_FORMATS.get(key_format, key_format)


def shard_of(value: str, shards: int) -> int:
    """The shard of a user (or of a rejected message): stable across processes and versions."""
    if shards == 1:
        return 0
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % shards


@functools.lru_cache(maxsize=64)
def slot_tags(prefix: str, shards: int) -> tuple[str, ...]:
    """Each shard's hash tag, its slot in the middle eighth of the shard's share of the slots
    (at least one slot): about 8 x shards tries per shard, computed once per process."""
    tags = []
    for shard in range(shards):
        low = shard * REDIS_CLUSTER_HASH_SLOTS // shards
        high = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        middle, reach = (low + high) // 2, (high - low) // 16
        first, last = middle - reach, middle + reach
        candidates = (f"{prefix}:{shards}:{shard}:{k}" for k in itertools.count())
        tags.append(next(t for t in candidates if first <= key_slot(t.encode()) <= last))
    return tuple(f"{{{tag}}}" for tag in tags)


def glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


class KeySpace:
    """The key names of one prefix laid out over ``shards`` shards, on a cluster or not.

    The named methods follow the table above; ``key``, ``aggregate`` and ``shared`` are the
    three forms every name takes (per shard; per shard and generation; outside the shards).
    """

    def __init__(
        self, prefix: str, shards: int = 1, cluster: bool = False, key_format: int = KEY_FORMAT
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        if key_format not in NAMING_FORMATS:
            raise ValueError(f"unknown key format {key_format}")
        self.prefix = prefix
        self.shards = shards
        self.cluster = cluster
        self.key_format = key_format
        # One node and one shard: the key names of earlier versions, no hash tag.
        if shards == 1 and not cluster:
            self._tags: tuple[str, ...] = (prefix,)
        elif naming_format(key_format) == 1:
            self._tags = tuple(f"{{{prefix}:{shards}:{s}}}" for s in range(shards))
        else:
            self._tags = slot_tags(prefix, shards)

    def tag(self, shard: int) -> str:
        return self._tags[shard]

    def shard_of(self, value: str) -> int:
        return shard_of(value, self.shards)

    # --- the three forms ---------------------------------------------------------------------
    def key(self, *parts: str, shard: int = 0) -> str:
        """A per-shard key that is not part of a generation (ingest, gen, lock, ...)."""
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

    def products(self, shard: int, generation: int) -> str:
        """The shard's products (net units and revenue per product)."""
        return self.aggregate("products", shard=shard, generation=generation)

    def product_day(self, day: str, shard: int, generation: int) -> str:
        """The shard's products on one day (``YYYY-MM-DD``)."""
        return self.aggregate("pdays", day, shard=shard, generation=generation)

    def hours(self, shard: int, generation: int) -> str:
        return self.aggregate("hours", shard=shard, generation=generation)

    def ranking(self, name: str, shard: int, generation: int) -> str:
        """``name`` is ``spend`` or ``orders``."""
        return self.aggregate("rank", name, shard=shard, generation=generation)

    def aggregates(self, shard: int, generation: int) -> list[str]:
        """The keys of a generation's shard other than its user hashes."""
        return [
            self.totals(shard, generation),
            self.days(shard, generation),
            self.hours(shard, generation),
            self.ranking("spend", shard, generation),
            self.ranking("orders", shard, generation),
            self.products(shard, generation),
        ]

    def users_pattern(self, shard: int, generation: int) -> str:
        """SCAN MATCH for every user hash of a generation's shard."""
        return glob_escape(self.user("", shard, generation)) + "*"

    def mark(self, order_id: str, shard: int, generation: int) -> str:
        """An order's idempotency mark: counted in this generation."""
        return self.aggregate("seen", order_id, shard=shard, generation=generation)

    def event_mark(self, event_id: str, shard: int, generation: int) -> str:
        """An event's idempotency mark (in the shard of its order's user): counted in this
        generation."""
        return self.aggregate("event", event_id, shard=shard, generation=generation)

    def generation_patterns(self, shard: int, generation: int) -> list[str]:
        """SCAN MATCH patterns that find every key of a generation's shard (with
        ``aggregates``): one for a numbered generation, users and both kinds of marks for
        generation 0, whose keys have no segment of their own."""
        if generation:
            return [glob_escape(self.aggregate(shard=shard, generation=generation)) + ":*"]
        return [
            self.users_pattern(shard, 0),
            glob_escape(self.mark("", shard, 0)) + "*",
            glob_escape(self.event_mark("", shard, 0)) + "*",
            glob_escape(self.product_day("", shard, 0)) + "*",
        ]

    def user_id_of(self, key: str, shard: int, generation: int) -> str:
        """The user id in a key ``users_pattern`` found."""
        return key[len(self.user("", shard, generation)) :]

    # --- per shard, outside the generations --------------------------------------------------
    def rejected(self, message_id: str, shard: int) -> str:
        """A rejected message's counted-once mark."""
        return self.key("rejected", message_id, shard=shard)

    def batch(self, token: str, shard: int) -> str:
        """The stored reply of one batch's script call on this shard."""
        return self.key("batch", token, shard=shard)

    def ingest(self, shard: int) -> str:
        return self.key("ingest", shard=shard)

    def generation(self, shard: int) -> str:
        """The shard's live generation."""
        return self.key("gen", shard=shard)

    def lock(self, shard: int) -> str:
        """The shard's rebuild lock."""
        return self.key("lock", shard=shard)

    def key_pattern(self, name: str, shard: int) -> str:
        """SCAN MATCH for every ``T:<name>:…`` key of a shard (rejected marks, batch
        replies)."""
        return glob_escape(self.key(name, "", shard=shard)) + "*"
