"""What the layout key and ``T:gen`` say the aggregates were built for, zone and currency
included, and the refusals that name the setting that differs."""

from __future__ import annotations

import pytest

from stats.store.layouts import (
    Generation,
    Layout,
    LayoutError,
    State,
    live_number,
    parse_generation,
)


def test_a_utc_usd_layout_reads_and_writes_as_earlier_versions_wrote_it() -> None:
    assert Layout(8).code() == "v3;n8"
    assert Layout.parse("v2;n8") == Layout(8, 2, "UTC", "USD")
    assert parse_generation(b"7;v3;n1") == Generation(State.LIVE, 7, Layout(1), "7;v3;n1")


def test_a_zone_and_currency_are_recorded_in_the_layout_and_read_back() -> None:
    layout = Layout(8, 2, "America/Argentina/Buenos_Aires", "JPY")
    assert layout.code() == "v2;n8;zAmerica/Argentina/Buenos_Aires;cJPY"
    assert Layout.parse(layout.code()) == layout
    assert Layout.parse("v2;n1;zEtc/GMT+5") == Layout(1, 2, "Etc/GMT+5", "USD")
    found = parse_generation("3;v2;n1;zAsia/Kolkata;cKWD")
    assert (found.state, found.number, found.layout) == (
        State.LIVE, 3, Layout(1, 2, "Asia/Kolkata", "KWD"),
    )  # fmt: skip


def test_zone_and_currency_name_no_key() -> None:
    assert Layout(8, zone="Asia/Kolkata").same_names(Layout(8), cluster=True)
    assert not Layout(8, zone="Asia/Kolkata").same_values(Layout(8))
    assert Layout(8, zone="Asia/Kolkata").naming() == Layout(8).naming()


def test_a_process_in_another_zone_is_refused_and_told_to_rebuild() -> None:
    found = parse_generation("4;v3;n1;zAmerica/New_York")
    with pytest.raises(LayoutError) as refused:
        live_number(found, Layout(1, zone="Asia/Kolkata"), cluster=False, writing=True)
    assert str(refused.value) == (
        "the aggregates in Redis count the days of time zone America/New_York but this process "
        "has STATS_TIME_ZONE=Asia/Kolkata: restart it with STATS_TIME_ZONE=America/New_York, "
        "or run `manage.py rebuild_stats` with STATS_TIME_ZONE=Asia/Kolkata to derive them "
        "again in that zone"
    )
    with pytest.raises(LayoutError, match="STATS_TIME_ZONE=UTC"):
        live_number(found, Layout(1), cluster=False, writing=False)  # a reader too


def test_a_process_in_another_currency_is_refused() -> None:
    with pytest.raises(LayoutError) as refused:
        live_number(parse_generation("4;v3;n1"), Layout(1, currency="JPY"), False, True)
    assert str(refused.value) == (
        "the aggregates in Redis are counted in USD but this process has STATS_CURRENCY=JPY: "
        "a shop's amounts cannot change currency under its aggregates (nothing converts "
        "them); restart it with STATS_CURRENCY=USD, or, when the ledger holds only JPY "
        "orders, run `manage.py rebuild_stats` with STATS_CURRENCY=JPY"
    )


def test_key_formats_2_and_3_name_the_same_keys_and_lay_out_other_days() -> None:
    # Format 3 changed only the days hash's fields: a rebuild from 2 derives a new generation
    # under the same names, it moves nothing (and drops no live key as an old layout's).
    assert Layout(8, 2).same_names(Layout(8, 3), cluster=True)
    assert Layout(8, 2).naming() == Layout(8, 3).naming()
    assert not Layout(8, 2).same_names(Layout(8, 1), cluster=True)
    assert not Layout(8, 2).same_names(Layout(4, 3), cluster=True)
    assert Layout(8, 2) != Layout(8, 3)


@pytest.mark.parametrize("writing", [True, False])
def test_aggregates_of_key_format_2_are_refused_with_the_advice_to_rebuild(writing: bool) -> None:
    with pytest.raises(LayoutError) as refused:
        live_number(parse_generation("5;v2;n8"), Layout(8), cluster=False, writing=writing)
    assert str(refused.value) == (
        "the aggregates in Redis were built by an earlier orderpipe (key format 2, this "
        "version writes 3): run `manage.py rebuild_stats` to derive them again from the ledger"
    )


def test_a_key_format_2_process_refuses_aggregates_of_key_format_3() -> None:
    with pytest.raises(LayoutError) as refused:
        live_number(parse_generation("6;v3;n1"), Layout(1, 2), cluster=False, writing=True)
    assert str(refused.value) == (
        "the aggregates in Redis were built by a newer orderpipe (key format 3, this version "
        "knows 2): upgrade this process"
    )
