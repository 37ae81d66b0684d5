"""What the orders app adds to ``/metrics``: the refunds and cancellations waiting for their
order, from the database.

The stats app serves ``/metrics`` but never imports the orders app, so ``orderpipe/urls.py``
hands this function to its view (as it hands the orders panel to the dashboard). A database
that does not answer leaves the Redis figures standing: the waiting count is then unknown
(None, the gauges left out), never a 500 or a 503 of the whole scrape.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, InterfaceError

from orders.models import WaitingEvent
from stats.api.metrics import WaitingEvents

logger = logging.getLogger(__name__)


def waiting_events(now: datetime) -> WaitingEvents | None:
    """The waiting events and the orphans among them, in one query."""
    try:
        found = WaitingEvent.objects.summary(now, settings.ORPHAN_EVENT_DAYS)
    except (DatabaseError, InterfaceError) as exc:
        logger.warning("metrics: waiting events unavailable, the database did not answer: %s", exc)
        return None
    return WaitingEvents(found.count, found.orphans)
