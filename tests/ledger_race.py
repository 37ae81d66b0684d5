"""A child process of tests/test_event_ledger_race.py: one consumer's ledger transaction.

``python -m tests.ledger_race SPEC`` validates the messages of SPEC (JSON: ``messages``,
``hold`` seconds) and records them as a batch's commit does (``orders.ledger.record_batch``),
prints ``recorded``, keeps its transaction open ``hold`` seconds (what a slow batch does, the
time another consumer has to step in), commits, and prints what the ledger decided as one
JSON line. The database is the one ``DATABASE_URL`` names (the test's).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime


def main(spec: dict[str, object]) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderpipe.settings")
    django.setup()
    from django.db import transaction

    from orders.commit import validate_batch
    from orders.ledger import record_batch

    received = datetime.now(UTC)
    messages = spec["messages"]
    assert isinstance(messages, list)
    batch = validate_batch(messages, received)
    with transaction.atomic():
        outcome = record_batch(batch.orders, batch.events, received, queue_name="orders")
        print("recorded", flush=True)
        time.sleep(float(str(spec.get("hold", 0))))
    decided = {
        "events": [e.event_id for e in outcome.events],
        "rejected": [
            [r.rejection.event_id, list(r.rejection.codes)] for r in outcome.event_rejections
        ],
        "waiting": outcome.waiting,
    }
    print(json.dumps(decided), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
