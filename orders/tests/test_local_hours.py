"""The ledger's local hours (``ledger.hour_totals``): grouped by UTC quarter hour in the
database, named in Python, equal to naming each order's (and each refund's) own hour; old rows
of a zone's local mean time (an offset in seconds) streamed one by one."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from orderpipe.timeutils import hour_key
from orders import ledger
from orders.tests.conftest import accept, body_of, event_body, record, sqs_message, valid_doc

pytestmark = pytest.mark.django_db

INSTANTS = [
    datetime(1890, 6, 1, 4, 55, 30, tzinfo=UTC),  # New York's local mean time: -4:56:02
    datetime(1890, 6, 1, 4, 56, 30, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 44, 29, tzinfo=UTC),  # Monrovia's -0:44:30
    datetime(2025, 11, 2, 5, 59, 59, tzinfo=UTC),  # 01:59:59 EDT
    datetime(2025, 11, 2, 6, 0, tzinfo=UTC),  # 01:00 EST
    datetime(2025, 8, 9, 18, 29, 59, tzinfo=UTC),  # 23:59:59 IST
    datetime(2025, 8, 9, 18, 30, tzinfo=UTC),
    datetime(2025, 9, 27, 14, 10, 10, tzinfo=UTC),  # Chatham's skipped hour
    datetime(2025, 10, 4, 15, 55, 55, tzinfo=UTC),  # Lord Howe's half-hour change
]


@pytest.mark.parametrize(
    "zone",
    ["America/New_York", "Africa/Monrovia", "Asia/Kolkata", "Pacific/Chatham",
     "Australia/Lord_Howe", "UTC"],
)  # fmt: skip
@pytest.mark.parametrize("by_user", [False, True])
def test_hour_totals_name_each_orders_and_each_refunds_own_hour(zone: str, by_user: bool) -> None:
    """Each order refunded 1.00 at another order's instant: the refund counts in the hour it
    occurred, for its order's user."""
    tz = ZoneInfo(zone)
    placed: Counter[tuple[str, str]] = Counter()
    refunded: Counter[tuple[str, str]] = Counter()
    stamps = [instant + timedelta(seconds=i % 2) for i, instant in enumerate(INSTANTS * 2)]
    for i, stamp in enumerate(stamps):
        doc = valid_doc()
        user = f"U{i % 3}"
        doc.update(order_id=f"H{i}", user_id=user, order_timestamp=stamp.isoformat())
        accept(body_of(doc), message_id=f"m{i}")
        placed[(user if by_user else "", hour_key(stamp, tz))] += 1
    for i in range(len(stamps)):
        when = stamps[(i + 5) % len(stamps)] + timedelta(seconds=3)
        refund = event_body(f"E{i}", f"H{i}", amount="1.00", occurred_at=when.isoformat())
        record(sqs_message(f"e{i}", refund))
        refunded[(f"U{i % 3}" if by_user else "", hour_key(when, tz))] += 100

    found = {(u, h): (n, r, f) for u, h, n, r, f in ledger.hour_totals(tz, by_user)}

    assert found == {
        key: (placed[key], placed[key] * 10997, refunded[key]) for key in placed | refunded
    }
    assert sum(f for _n, _r, f in found.values()) == 100 * len(stamps)
