"""What the aggregates are built for, as Redis records it: the layout and the generation.

A **layout** is everything the key names and the values depend on besides the generation:
the key format (``KEY_FORMAT``: the key names, and how the days and hours hashes lay out their
fields) and
the shard count (``REDIS_SHARDS``), and the calendar and money the values are counted in, the
time zone (``STATS_TIME_ZONE``) and the currency (``STATS_CURRENCY``); it reads ``v3;n8``, or
``v3;n8;zAsia/Kolkata;cJPY``: UTC and USD are left out, so what earlier versions wrote (built
in UTC and USD) still reads, and is still written, the same. Key formats 2 and 3 name the
same keys (``naming``): aggregates of format 2 are refused like those of another zone, and
``rebuild_stats`` derives format 3 beside them in a new generation, never moving them.
``T:gen`` holds each shard's live generation *described*: ``7;v3;n8``. A writer
(the apply script) compares the whole description with the one it expects and writes nothing
on a mismatch; a reader compares it too. So a process configured for another layout never
writes beside the aggregates, nor serves zeros: it finds the difference and says which
setting differs and what to do. Another *number* alone only means that a rebuild switched;
the caller plans again. ``retired:<layout>`` marks a layout ``rebuild_stats`` moved away
from. A bare number was written by an earlier version, whose marks were outside the
generations and whose days and hours took several fields each: readers and writers refuse it until
``rebuild_stats`` runs.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from stats.store.errors import StoreCommandError
from stats.store.keys import KEY_FORMAT, naming_format

RETIRED = "retired:"
# What aggregates were counted in before the zone and currency were recorded (left out of a
# layout's code).
DEFAULT_ZONE = "UTC"
DEFAULT_CURRENCY = "USD"


class LayoutError(StoreCommandError):
    """This process is configured for other aggregates than Redis holds: no retry cures it
    (the consumer stops, the API answers 503 with the message, which says what to do)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    shards: int
    key_format: int = KEY_FORMAT
    zone: str = DEFAULT_ZONE  # the IANA name of the calendar the days are counted in
    currency: str = DEFAULT_CURRENCY  # the ISO 4217 code the amounts are counted in

    def code(self) -> str:
        text = f"v{self.key_format};n{self.shards}"
        if self.zone != DEFAULT_ZONE:
            text += f";z{self.zone}"
        if self.currency != DEFAULT_CURRENCY:
            text += f";c{self.currency}"
        return text

    @classmethod
    def parse(cls, text: str) -> Layout | None:
        """``v3;n8`` or ``v3;n8;zAsia/Kolkata;cJPY`` (no zone: UTC, no currency: USD); an
        earlier version's bare shard count is format 1; None if unreadable."""
        if text.isdigit():
            return cls(int(text), key_format=1)
        fields = {part[0]: part[1:] for part in text.split(";") if part[1:]}
        if not all(fields.get(name, "").isdigit() for name in "vn"):
            return None
        return cls(
            int(fields["n"]),
            int(fields["v"]),
            fields.get("z", DEFAULT_ZONE),
            fields.get("c", DEFAULT_CURRENCY),
        )

    def naming(self) -> Layout:
        """This layout with only what names the keys (shards, the key names' format): two
        layouts that differ only in zone or currency, or in key format 2 against 3 (the days
        hash's fields), hold their aggregates under the same names."""
        return Layout(self.shards, naming_format(self.key_format))

    def same_names(self, other: Layout, cluster: bool) -> bool:
        """Whether both name the same keys: one shard on one node is named alike in every key
        format (the bare prefix), formats 2 and 3 alike everywhere; the zone and currency name
        no key."""
        if self.shards == other.shards == 1 and not cluster:
            return True
        return self.naming() == other.naming()

    def same_values(self, other: Layout) -> bool:
        """Whether both count in the same calendar and money."""
        return (self.zone, self.currency) == (other.zone, other.currency)

    def refusal(self, found: Layout, cluster: bool) -> str:
        """Why a process configured for ``self`` must not use aggregates built for ``found``,
        and what to do."""
        if found.currency != self.currency:
            return (
                f"the aggregates in Redis are counted in {found.currency} but this process has "
                f"STATS_CURRENCY={self.currency}: a shop's amounts cannot change currency under "
                f"its aggregates (nothing converts them); restart it with STATS_CURRENCY="
                f"{found.currency}, or, when the ledger holds only {self.currency} orders, run "
                f"`manage.py rebuild_stats` with STATS_CURRENCY={self.currency}"
            )
        if found.zone != self.zone:
            return (
                f"the aggregates in Redis count the days of time zone {found.zone} but this "
                f"process has STATS_TIME_ZONE={self.zone}: restart it with STATS_TIME_ZONE="
                f"{found.zone}, or run `manage.py rebuild_stats` with STATS_TIME_ZONE="
                f"{self.zone} to derive them again in that zone"
            )
        if found.shards != self.shards:
            return (
                f"the aggregates in Redis are laid out for {found.shards} shard(s) but this "
                f"process has REDIS_SHARDS={self.shards}: restart it with REDIS_SHARDS="
                f"{found.shards}, or run `manage.py rebuild_stats` with REDIS_SHARDS="
                f"{self.shards} to move them"
            )
        if found.key_format < self.key_format:
            return (
                f"the aggregates in Redis were built by an earlier orderpipe (key format "
                f"{found.key_format}, this version writes {self.key_format}): run "
                "`manage.py rebuild_stats` to derive them again from the ledger"
            )
        return (
            f"the aggregates in Redis were built by a newer orderpipe (key format "
            f"{found.key_format}, this version knows {self.key_format}): upgrade this process"
        )


class State(enum.Enum):
    ABSENT = "absent"  # nothing written for this layout on this shard yet
    LIVE = "live"  # a generation of a layout
    LEGACY = "legacy"  # a generation number written by an earlier version
    RETIRED = "retired"  # rebuild_stats moved the aggregates to another layout
    UNKNOWN = "unknown"  # not a value any version writes


@dataclasses.dataclass(frozen=True, slots=True)
class Generation:
    """What one shard's ``T:gen`` holds, read."""

    state: State
    number: int = 0
    layout: Layout | None = None  # LIVE: its layout; RETIRED: where the aggregates went
    raw: str = ""


_DESCRIBED = re.compile(r"(\d+);(.+)")


def describe(number: int, layout: Layout) -> str:
    return f"{number};{layout.code()}"


def retired(successor: Layout) -> str:
    return f"{RETIRED}{successor.code()}"


def parse_generation(value: bytes | str | None) -> Generation:
    if value is None or value in (b"", ""):
        return Generation(State.ABSENT)
    text = value.decode() if isinstance(value, bytes) else value
    if text.startswith(RETIRED):
        return Generation(State.RETIRED, layout=Layout.parse(text[len(RETIRED) :]), raw=text)
    if text.isdigit():
        return Generation(State.LEGACY, int(text), raw=text)
    found = _DESCRIBED.fullmatch(text)
    layout = Layout.parse(found.group(2)) if found else None
    if found is None or layout is None:
        return Generation(State.UNKNOWN, raw=text)
    return Generation(State.LIVE, int(found.group(1)), layout, text)


def live_number(found: Generation, mine: Layout, cluster: bool, writing: bool) -> int:
    """The generation number ``found`` names for a process configured for ``mine``, or the
    refusal (``LayoutError``) saying what to do. An earlier version's bare number names the
    same keys, but their days are laid out in three fields and their marks are elsewhere."""
    if found.state is State.ABSENT:
        return 0
    if found.state is State.LIVE and found.layout is not None:
        if found.layout != mine:
            raise LayoutError(mine.refusal(found.layout, cluster))
        return found.number
    if found.state is State.LEGACY and not writing:
        raise LayoutError(
            f"the aggregates in Redis (generation {found.number}) were built by an earlier "
            f"orderpipe (key format 1, this version writes {mine.key_format}): run "
            "`manage.py rebuild_stats` to derive them again from the ledger"
        )
    if found.state is State.LEGACY:
        raise LayoutError(
            f"the aggregates in Redis (generation {found.number}) were built by an earlier "
            "orderpipe, whose idempotency marks are not kept per generation: run "
            "`manage.py rebuild_stats` once before consuming"
        )
    if found.state is State.RETIRED:
        successor = found.layout
        if successor is not None and successor.shards != mine.shards:
            raise LayoutError(
                f"these aggregates were moved to {successor.shards} shard(s) by rebuild_stats; "
                f"this process has REDIS_SHARDS={mine.shards}: restart it with REDIS_SHARDS="
                f"{successor.shards}"
            )
        raise LayoutError(
            f"these aggregates were moved to another layout ({found.raw}) by rebuild_stats: "
            "restart this process with the settings it was moved for"
        )
    raise LayoutError(f"the generation key holds {found.raw!r}, which no orderpipe writes")
