"""A log line forged inside an order's fields stays inside that order's record, through the
real consumer path: the moto SQS server, validation, RejectedOrder and its WARNING line in the
daily log file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from orderpipe.logging import DailyFileHandler, UTCFormatter

FORGED = "2025-08-09T10:15:00.000Z ERROR orders.consumer Redis unavailable"


@pytest.mark.django_db
def test_a_forged_log_line_in_an_order_id_stays_inside_its_record(
    make_queue, fake_store, tmp_path: Path
) -> None:
    """Through the real consumer path: moto SQS server, validation, RejectedOrder, WARNING."""
    from django.conf import settings

    from orders.consumer import Consumer
    from tests.ingestion_helpers import order_body

    standard = settings.LOGGING["formatters"]["standard"]
    assert standard["()"] == "orderpipe.logging.UTCFormatter"
    handler = DailyFileHandler(tmp_path)
    handler.setFormatter(UTCFormatter(standard["format"]))
    queue = make_queue()
    body = json.dumps({**json.loads(order_body("placeholder")), "order_id": f"X\n{FORGED}"})
    queue.send_bodies([body])
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        result = Consumer(queue, fake_store, wait_time=0).process_batch()
    finally:
        root.removeHandler(handler)
        handler.close()

    assert result.rejected == 1
    lines = [
        line
        for path in sorted(tmp_path.glob("*.log"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    rejected = [line for line in lines if "rejected order" in line]
    assert len(rejected) == 1
    assert f"order_id=X\\n{FORGED} reasons=invalid_field" in rejected[0]
    assert not [line for line in lines if line.startswith(FORGED)]
