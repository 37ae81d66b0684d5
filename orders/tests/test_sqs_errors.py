"""SQS errors that retrying cannot cure stop the consumer; the others are outages."""

from __future__ import annotations

import logging
import threading

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from django.core.management import call_command
from django.core.management.base import CommandError

from orders import sqs
from orders.consumer_threads import VisibilityKeeper
from tests.ingestion_helpers import wait_until


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": code},
            "ResponseMetadata": {
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "HostId": "",
                "RequestId": "",
                "RetryAttempts": 0,
            },
        },
        "ReceiveMessage",
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("Throttling"), True),
        (client_error("RequestThrottled", 403), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("SomethingNew", 500), True),  # any 5xx: SQS's own trouble
        (EndpointConnectionError(endpoint_url="http://sqs"), True),
        (ReadTimeoutError(endpoint_url="http://sqs"), True),
        (client_error("AccessDenied", 403), False),
        (client_error("InvalidClientTokenId", 403), False),
        (client_error("SignatureDoesNotMatch", 403), False),
        (client_error("AWS.SimpleQueueService.NonExistentQueue"), False),
        (NoCredentialsError(), False),
    ],
)
def test_which_sqs_errors_are_outages(error: Exception, transient: bool) -> None:
    assert sqs.is_transient(error) is transient


@pytest.mark.django_db
def test_consume_orders_exits_with_one_line_on_access_denied(
    settings, fake_store, aws_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOCALSTACK_URL = "http://127.0.0.1:9"  # never reached: the stub answers
    client = sqs.make_client()
    stubber = Stubber(client)
    stubber.add_client_error(
        "get_queue_url",
        service_error_code="AccessDenied",
        service_message="User is not authorized to perform: sqs:getqueueurl",
        http_status_code=403,
    )
    stubber.activate()
    monkeypatch.setattr(sqs, "make_client", lambda *a, **k: client)

    with pytest.raises(CommandError) as refused:
        call_command("consume_orders", "--once")

    assert str(refused.value).startswith("SQS: An error occurred (AccessDenied)")
    assert "\n" not in str(refused.value)


class RefusingQueue:
    """Extensions SQS refuses entry by entry (the call itself succeeds)."""

    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def extend_visibility(self, handles, timeout):
        self.calls += 1
        self.done.set()
        return [{"Id": "0", "Code": "ReceiptHandleIsInvalid", "Message": "expired"}]


def test_the_visibility_keeper_logs_the_entries_sqs_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = RefusingQueue()
    keeper = VisibilityKeeper(queue, timeout=1, is_transient=sqs.is_transient)
    with caplog.at_level(logging.INFO, logger="orders.consumer"):
        keeper.track(["h1"])
        assert queue.done.wait(5)
        assert wait_until(lambda: "ReceiptHandleIsInvalid" in caplog.text, 5)
        keeper.release(["h1"])
    assert "SQS refused to extend the visibility of a message in hand" in caplog.text
    assert "extended visibility of" not in caplog.text  # not reported as done
