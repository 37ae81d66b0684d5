"""The days and hours hashes of key format 3: one field per day and per local hour,
``<orders>:<gross cents>:<refunded cents>``, as the apply script and a repair's fenced writes
leave them, summed exactly, on one real node, on fakeredis and on 8 shards of a real cluster
(``any_store``)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import pytest

from stats.store import AggregateStore, LeaseLostError, PendingEvent, StoreCommandError
from stats.store.scripts import LUA_DIR
from tests.ingestion_helpers import make_event, make_order, prefix_keys

ORDER_DAY, REFUND_DAY = date(2025, 8, 9), date(2025, 8, 12)  # make_order's, make_event's


def days_hash(store: AggregateStore, user_id: str = "U1", name: str = "days") -> dict[str, str]:
    """The days (or hours) hash of ``user_id``'s shard, as Redis holds it."""
    shard = store.shard_of(user_id)
    raw = store.client.hgetall(store.aggregate_key(name, shard=shard))
    return {field.decode(): value.decode() for field, value in raw.items()}


def test_the_hours_hash_holds_one_field_per_hour_orders_gross_refunded(
    any_store: AggregateStore,
) -> None:
    late = datetime(2025, 8, 9, 23, 59, 59, tzinfo=UTC)
    orders = [make_order("O1", "U1", 10000), make_order("O2", "U1", 250)]
    any_store.apply_orders([*orders, make_order("O3", "U1", 5, late)])
    events = [
        make_event("E1", orders[0], 99, datetime(2025, 8, 9, 23, 30, tzinfo=UTC)),
        make_event("E2", orders[1], 0, kind="cancelled"),  # 0 cents: no field
    ]
    any_store.apply_batch([], events=[PendingEvent(e, None, True) for e in events])

    assert days_hash(any_store, name="hours") == {
        "2025-08-09T10:00": "2:10250:0", "2025-08-09T23:00": "1:5:99",
    }  # fmt: skip
    hours = {h.start.hour: (h.total_orders, h.gross_revenue_cents, h.refunded_cents)
             for h in any_store.by_hour(ORDER_DAY, ORDER_DAY)}  # fmt: skip
    assert (len(hours), hours[10], hours[11], hours[23]) == (
        24, (2, 10250, 0), (0, 0, 0), (1, 5, 99),
    )  # fmt: skip
    assert any_store.all_hours() == {
        "2025-08-09T10:00": (2, 10250, 0), "2025-08-09T23:00": (1, 5, 99),
    }  # fmt: skip


def test_the_days_hash_holds_one_field_per_day_orders_gross_refunded(
    any_store: AggregateStore,
) -> None:
    first, second = make_order("O1", "U1", 10000), make_order("O2", "U1", 250)
    any_store.apply_orders([first, second])
    events = [
        make_event("E1", first, 2500),
        make_event("E2", second, 250, kind="cancelled"),
        make_event("E3", first, 99, datetime(2025, 8, 9, 18, 0, tzinfo=UTC)),  # its own day
    ]
    any_store.apply_batch([], events=[PendingEvent(e, None, e.counted) for e in events])

    assert days_hash(any_store) == {"2025-08-09": "2:10250:99", "2025-08-12": "0:0:2750"}
    days = any_store.by_date(ORDER_DAY, REFUND_DAY)
    assert [(d.total_orders, d.gross_revenue_cents, d.refunded_cents) for d in days] == [
        (2, 10250, 99), (0, 0, 0), (0, 0, 0), (0, 0, 2750),
    ]  # fmt: skip
    assert any_store.all_days() == {ORDER_DAY: (2, 10250, 99), REFUND_DAY: (0, 0, 2750)}


def test_days_of_several_shards_are_summed_per_day(any_store: AggregateStore) -> None:
    users = [f"U{n}" for n in range(12)]
    any_store.apply_orders([make_order(f"O{n}", user, 100 + n) for n, user in enumerate(users)])

    (day,) = any_store.by_date(ORDER_DAY, ORDER_DAY)

    assert (day.total_orders, day.gross_revenue_cents) == (12, sum(100 + n for n in range(12)))
    assert any_store.all_days() == {ORDER_DAY: (12, 1266, 0)}
    shares = [
        any_store.client.hgetall(any_store.aggregate_key("days", shard=shard))
        for shard in range(any_store.shards)
    ]
    assert {name for share in shares for name in share} == {b"2025-08-09"}
    counted = [tuple(map(int, v.split(b":"))) for share in shares for v in share.values()]
    assert tuple(map(sum, zip(*counted, strict=True))) == (12, 1266, 0)


def test_day_figures_beyond_a_doubles_exact_integers_stay_exact(any_store: AggregateStore) -> None:
    """Lua numbers are doubles (exact below 2^53); HINCRBY counted in 64-bit integers."""
    any_store.apply_orders([make_order("O1", "U1", 2**52 + 1), make_order("O2", "U1", 2**52)])
    assert days_hash(any_store) == {"2025-08-09": f"2:{2**53 + 1}:0"}

    shard = any_store.shard_of("U1")
    any_store.client.hset(
        any_store.aggregate_key("days", shard=shard), "2025-08-09", f"1:{2**62}:0"
    )
    order = make_order("O3", "U1", 999_999_999)
    any_store.apply_orders([order])
    any_store.apply_batch([], events=[PendingEvent(make_event("E1", order, 7), None, True)])

    assert days_hash(any_store) == {
        "2025-08-09": f"2:{2**62 + 999_999_999}:0",
        "2025-08-12": "0:0:7",
    }
    (day,) = any_store.by_date(ORDER_DAY, ORDER_DAY)
    assert day.gross_revenue_cents == 2**62 + 999_999_999


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("days", "2025-08-09", "12"),
        ("days", "2025-08-09", "1:2:x"),
        ("hours", "2025-08-09T10:00", "1:2"),
    ],
)
def test_a_day_or_hour_field_of_another_form_fails_the_batch_whole(
    any_store: AggregateStore, name: str, field: str, value: str
) -> None:
    """Checked before the script's first write, as the keys' types are: no mark is left
    without its figures."""
    shard = any_store.shard_of("U1")
    key = any_store.aggregate_key(name, shard=shard)
    any_store.client.hset(key, field, value)

    with pytest.raises(StoreCommandError, match=field):
        any_store.apply_orders([make_order("O1", "U1", 100)])

    assert {k.decode() for k in prefix_keys(any_store.client, any_store.prefix)} == {key}


def test_a_repair_adds_to_a_day_under_its_lease_and_not_after_it(
    any_store: AggregateStore,
) -> None:
    any_store.apply_orders([make_order("O1", "U1", 10000)])
    shard = any_store.shard_of("U1")
    assert any_store.acquire_rebuild_lock("repair", 30_000)
    writer = any_store.writer(None, "repair")
    writer.add_to_day(shard, ORDER_DAY, 2, 700)
    writer.add_to_day(shard, REFUND_DAY, 0, 0, 250)
    writer.add_to_day(shard, REFUND_DAY, 0, 0, 50)
    writer.add_to_hour(shard, "2025-08-09T10:00", 2, 700)
    writer.add_to_hour(shard, "2025-08-09T11:00", 0, 0, 1)
    writer.close()

    assert days_hash(any_store) == {"2025-08-09": "3:10700:0", "2025-08-12": "0:0:300"}
    assert days_hash(any_store, name="hours") == {
        "2025-08-09T10:00": "3:10700:0", "2025-08-09T11:00": "0:0:1",
    }  # fmt: skip

    any_store.release_rebuild_lock("repair")
    late = any_store.writer(None, "repair")
    late.add_to_day(shard, ORDER_DAY, 1, 1, 1)
    with pytest.raises(LeaseLostError):
        late.close()
    assert days_hash(any_store) == {"2025-08-09": "3:10700:0", "2025-08-12": "0:0:300"}


def test_figures_are_added_exactly_whatever_their_size_and_sign(any_store: AggregateStore) -> None:
    """The scripts' addition (``lib/packed_figures.lua``): in one double below 10^15, in two
    exact parts above, with carries and signs; the sum written out as Python writes it."""
    rng = random.Random(20)
    cases = [
        (2**53, 1), (-(2**62), 2**62 - 1), (10**15, -1), (-1, 10**9), (999_999_999, 1),
        (-(10**18), 10**18 + 10**9), (0, -5), (123, 0), (-(10**9), 10**9), (2**63, 2**63),
    ]  # fmt: skip
    for _ in range(200):
        digits = rng.randrange(1, 21), rng.randrange(1, 21)
        cases.append(tuple(rng.choice((-1, 1)) * rng.randrange(10**d) for d in digits))
    script = (LUA_DIR / "lib" / "packed_figures.lua").read_text() + (
        "local out = {} for i = 1, #ARGV, 2 do out[#out + 1] = figure_plus(ARGV[i], ARGV[i + 1])"
        " end return out"
    )

    sums = any_store.client.eval(script, 0, *(str(n) for case in cases for n in case))

    assert [s.decode() for s in sums] == [str(a + b) for a, b in cases]
