"""Key names are a stored format: Redis keeps what earlier versions wrote under them, so each
form in the key table of ``stats/store/keys.py`` is pinned here, literally."""

from __future__ import annotations

import fakeredis
import pytest
from redis.crc import key_slot

from stats.store.keys import SHARED_KEYS, KeySpace, glob_escape, shard_of


def test_one_shard_on_one_node_keeps_the_names_of_earlier_versions() -> None:
    keys = KeySpace("orderpipe")
    assert [
        keys.user("U1", 0, 0),
        keys.totals(0, 0),
        keys.ranking("spend", 0, 0),
        keys.ranking("orders", 0, 0),
        keys.days(0, 0),
        keys.mark("O1", 0, 0),
        keys.rejected("m1", 0),
        keys.ingest(0),
        keys.generation(0),
        keys.lock(0),
    ] == [
        "orderpipe:user:U1",
        "orderpipe:global",
        "orderpipe:rank:spend",
        "orderpipe:rank:orders",
        "orderpipe:days",
        "orderpipe:seen:O1",
        "orderpipe:rejected:m1",
        "orderpipe:ingest",
        "orderpipe:gen",
        "orderpipe:lock",
    ]


def test_shards_carry_a_hash_tag_and_generations_a_segment() -> None:
    keys = KeySpace("p", shards=8)
    assert keys.user("U1", 3, 2) == "{p:8:3:55}:g2:user:U1"
    assert keys.aggregates(5, 1) == [
        "{p:8:5:54}:g1:global",
        "{p:8:5:54}:g1:days",
        "{p:8:5:54}:g1:hours",
        "{p:8:5:54}:g1:rank:spend",
        "{p:8:5:54}:g1:rank:orders",
        "{p:8:5:54}:g1:products",
    ]
    assert keys.product_day("2025-08-09", 5, 1) == "{p:8:5:54}:g1:pdays:2025-08-09"
    assert keys.mark("O1", 3, 2) == "{p:8:3:55}:g2:seen:O1"  # marks belong to a generation
    assert keys.mark("O1", 3, 0) == "{p:8:3:55}:seen:O1"
    assert keys.generation(7) == "{p:8:7:4}:gen"
    assert keys.batch("t", 3) == "{p:8:3:55}:batch:t"


def test_the_key_format_of_earlier_versions_is_still_named() -> None:
    """So that rebuild_stats can move the aggregates out of it."""
    legacy = KeySpace("p", shards=8, key_format=1)
    assert legacy.user("U1", 3, 2) == "{p:8:3}:g2:user:U1"
    assert legacy.generation(7) == "{p:8:7}:gen"
    assert KeySpace("p", key_format=1).user("U1", 0, 0) == "p:user:U1"


def test_key_format_2_names_the_keys_format_3_names() -> None:
    """Only the days hash's fields differ: a rebuild from format 2 writes a new generation
    beside it under the same names (and drops the old generation, not a layout)."""
    for shards, cluster in ((1, False), (8, False), (8, True)):
        v2, v3 = (KeySpace("p", shards, cluster, key_format=f) for f in (2, 3))
        assert v2._tags == v3._tags
        assert v2.days(shards - 1, 4) == v3.days(shards - 1, 4)
    with pytest.raises(ValueError, match="unknown key format 4"):
        KeySpace("p", key_format=4)


def test_each_shard_tag_hashes_to_the_middle_of_its_share_of_the_slots() -> None:
    for shards in (1, 3, 8, 16, 100):
        width = 16384 / shards
        for shard, tag in enumerate(KeySpace("orderpipe", shards, cluster=True)._tags):
            middle = (shard + 0.5) * width
            assert abs(key_slot(tag[1:-1].encode()) - middle) <= width / 16 + 1


def test_a_cluster_tags_even_one_shard() -> None:
    assert KeySpace("p", 1, cluster=True).user("U1", 0, 0) == "{p:1:0:22}:user:U1"


def test_shared_keys_stay_outside_every_shard() -> None:
    keys = KeySpace("p", shards=4, cluster=True)
    assert [keys.shared(n) for n in SHARED_KEYS] == [
        "p:consumers",
        "p:layout",
        "p:reconcile",
        "p:generations",
        "p:generation_seq",
    ]


def test_a_user_belongs_to_the_same_shard_in_every_process_and_version() -> None:
    assert [shard_of(u, 8) for u in ("U1", "U2", "m1", "ü")] == [4, 6, 7, 5]
    assert shard_of("anything", 1) == 0
    assert KeySpace("p", shards=8).shard_of("U1") == 4


def test_scan_patterns_match_their_keys_literally() -> None:
    """A prefix with glob characters matches itself only (SCAN MATCH as Redis runs it)."""
    client = fakeredis.FakeRedis()
    keys, other = KeySpace("a*b[c]", shards=2), KeySpace("aXbc", shards=2)
    for space in (keys, other):
        client.set(space.user("U?1", 1, 3), 1)
        client.set(space.ingest(0), 1)
        client.set(space.user("U2", 1, 0), 1)  # another generation
        client.set(space.mark("O1", 1, 3), 1)
        client.set(space.mark("O2", 1, 0), 1)
        client.set(space.event_mark("E1", 1, 3), 1)
        client.set(space.event_mark("E2", 1, 0), 1)
        client.set(space.product_day("2025-08-09", 1, 3), 1)
        client.set(space.product_day("2025-08-09", 1, 0), 1)
        client.set(space.rejected("m1", 1), 1)

    def scanned(pattern: str) -> set[str]:
        return {k.decode() for k in client.scan_iter(match=pattern)}

    found = [k.decode() for k in client.scan_iter(match=keys.users_pattern(1, 3))]
    assert found == [keys.user("U?1", 1, 3)]
    assert keys.user_id_of(found[0], 1, 3) == "U?1"
    assert set().union(*map(scanned, keys.generation_patterns(1, 3))) == {
        keys.user("U?1", 1, 3),
        keys.mark("O1", 1, 3),
        keys.event_mark("E1", 1, 3),
        keys.product_day("2025-08-09", 1, 3),
    }
    assert set().union(*map(scanned, keys.generation_patterns(1, 0))) == {
        keys.user("U2", 1, 0),
        keys.mark("O2", 1, 0),
        keys.event_mark("E2", 1, 0),
        keys.product_day("2025-08-09", 1, 0),  # a product's days: dropped with generation 0
    }
    assert scanned(keys.key_pattern("rejected", 1)) == {keys.rejected("m1", 1)}
    assert glob_escape("x*?[]\\y") == "x\\*\\?\\[\\]\\\\y"


def test_a_layout_needs_a_shard() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeySpace("p", shards=0)
