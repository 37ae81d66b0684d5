"""Epoch milliseconds, the one time format both apps exchange.

SQS stamps messages in epoch milliseconds, and Redis keeps order times and heartbeats in them:
``orders`` and ``stats`` both convert, and neither app may import the other's modules for it.
Exact integer arithmetic (timedelta division), never floats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly."""
    return (moment - EPOCH) // _MILLISECOND


def from_epoch_ms(millis: int) -> datetime:
    """The UTC moment ``millis`` milliseconds after the Unix epoch."""
    return EPOCH + timedelta(milliseconds=millis)
