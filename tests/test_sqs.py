"""OrderQueue.ensure against a moto SQS server process: retention, DLQ, warnings."""

from __future__ import annotations

import logging
import uuid

import pytest

from orders.sqs import RETENTION_SECONDS, OrderQueue, make_client


def retention_of(queue: OrderQueue, url: str) -> int:
    attributes = queue.client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["MessageRetentionPeriod"]
    )["Attributes"]
    return int(attributes["MessageRetentionPeriod"])


def retention_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "orders.sqs" and r.levelno == logging.WARNING and "keeps messages" in r.message
    ]


def test_a_created_queue_and_its_dlq_keep_messages_14_days(make_queue) -> None:
    queue = make_queue()

    assert RETENTION_SECONDS == 1_209_600
    assert retention_of(queue, queue.url) == 1_209_600
    assert retention_of(queue, queue.dlq_url) == 1_209_600


def test_an_existing_queue_with_sqs_default_retention_gets_one_warning_naming_both(
    sqs_server, aws_env, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(sqs_server.url)
    name = f"elsewhere-{uuid.uuid4().hex[:10]}"
    client.create_queue(QueueName=name)  # SQS's default retention: 4 days
    queue = OrderQueue(client, name)

    with caplog.at_level(logging.WARNING, logger="orders.sqs"):
        queue.ensure()

    assert retention_warnings(caplog) == [
        f"queue {name} keeps messages 345600 s (4.0 days), less than the 1209600 s (14 days) "
        "ORDER_DEDUP_TTL is sized for: consumers stopped longer than that lose orders "
        "(set its MessageRetentionPeriod to 1209600)"
    ]
    assert retention_of(queue, queue.url) == 345_600  # used as it is, not altered


def test_an_existing_queue_with_14_days_retention_is_not_reported(
    make_queue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    again = OrderQueue(queue.client, queue.name)

    with caplog.at_level(logging.WARNING, logger="orders.sqs"):
        again.ensure()

    assert retention_warnings(caplog) == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
