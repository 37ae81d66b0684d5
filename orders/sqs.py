"""SQS access for orderpipe: the boto3 client, queue + dead-letter queue, batched calls.

Knows nothing about orders: bodies are opaque strings. Everything that talks to SQS goes
through ``OrderQueue`` so tests can hand it a client bound to a moto server or mock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from django.conf import settings

if TYPE_CHECKING:  # boto3-stubs: a dev requirement, only the type checker reads it
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        BatchResultErrorEntryTypeDef,
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

logger = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10  # SendMessageBatch / DeleteMessageBatch / ReceiveMessage maximum

# --- Which SQS errors retrying can cure ------------------------------------------------------
# An outage (the consumer keeps its batch and backs off) or a reason to stop with exit 1:
# retrying what needs an operator would only cycle every message into the dead-letter queue.
# Error codes SQS answers when it is busy or failing on its side: back off and retry.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",  # request rate above the account's limit
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ServiceUnavailable",  # 503: SQS itself is degraded
        "InternalError",  # 500: SQS's own failure
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMS.ThrottlingException",  # an encrypted queue's key service is throttling
    }
)
# Client-side errors no retry cures: missing or wrong configuration.
_PERMANENT_CLIENT_ERRORS = (
    NoCredentialsError,  # no credentials anywhere in boto3's chain
    PartialCredentialsError,
    NoRegionError,
    ParamValidationError,  # a bug: a malformed request
)
# Everything else a ClientError carries (AccessDenied, InvalidClientTokenId,
# SignatureDoesNotMatch, AWS.SimpleQueueService.NonExistentQueue, …) needs an operator.


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """True when SQS (or the way to it) fails in a way that ends by itself: throttling, a 5xx,
    a connection or timeout error. Credentials, permissions and a missing queue are not."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(exc) in _TRANSIENT_CODES or int(status) >= 500
    if isinstance(exc, BotoCoreError):
        return not isinstance(exc, _PERMANENT_CLIENT_ERRORS)
    return False


def is_missing_queue(exc: BaseException) -> bool:
    code = error_code(exc) if isinstance(exc, ClientError) else ""
    return "NonExistentQueue" in code or "QueueDoesNotExist" in code


# SQS's maximum retention (14 days), for the queue and its DLQ. ORDER_DEDUP_TTL (15 days by
# default) outlives it, so a message redelivered as late as SQS allows still finds its mark.
RETENTION_SECONDS = 14 * 24 * 3600


def make_client(endpoint_url: str | None = None, region: str | None = None) -> SQSClient:
    """A boto3 SQS client for ``LOCALSTACK_URL`` (local endpoint) or real AWS when empty."""
    endpoint = settings.LOCALSTACK_URL if endpoint_url is None else endpoint_url
    kwargs: dict[str, Any] = {
        "region_name": region or settings.AWS_REGION,
        "config": Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            # Long polls last up to 20 s; the read timeout must outlast them.
            read_timeout=30,
            max_pool_connections=32,
        ),
    }
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        # Local endpoints accept any credentials; do not require a real AWS profile.
        session = boto3.session.Session()
        if session.get_credentials() is None:
            kwargs["aws_access_key_id"] = "test"
            kwargs["aws_secret_access_key"] = "test"  # noqa: S105
    return boto3.client("sqs", **kwargs)


# Message attribute that carries a message's first SentTimestamp through a redrive, so an
# order without order_timestamp keeps the day it was first sent.
ORIGINAL_SENT_TIMESTAMP = "orderpipe.SentTimestamp"


def dating_attributes(message: dict[str, Any]) -> dict[str, str]:
    """The system attributes of a received message, ``SentTimestamp`` being the first send's."""
    attributes = dict(message.get("Attributes", {}))
    original = message.get("MessageAttributes", {}).get(ORIGINAL_SENT_TIMESTAMP, {})
    if original.get("StringValue"):
        attributes["SentTimestamp"] = original["StringValue"]
    return attributes


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int
    dlq_visible: int | None


def _plain(messages: list[MessageTypeDef]) -> list[dict[str, Any]]:
    """Received messages as the code passes them on: boto3's dicts, typed as plain ones (the
    consumer, the ledger, a redrive and the tests build and read them as such)."""
    return cast(list[dict[str, Any]], messages)


def _chunks(items: Sequence[Any], size: int = SQS_BATCH_LIMIT) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class OrderQueue:
    """One orders queue and its ``<name>-dlq`` dead-letter queue."""

    def __init__(self, client: SQSClient, queue_name: str) -> None:
        self.client = client
        self.name = queue_name
        self.dlq_name = f"{queue_name}-dlq"
        self._url: str | None = None

    @classmethod
    def from_settings(
        cls, queue_name: str | None = None, client: SQSClient | None = None
    ) -> OrderQueue:
        return cls(client or make_client(), queue_name or settings.QUEUE_NAME)

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.client.get_queue_url(QueueName=self.name)["QueueUrl"]
        return self._url

    def _lookup(self, name: str) -> str | None:
        try:
            return self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if is_missing_queue(exc):
                return None
            raise

    def ensure(self, max_receive_count: int = 5, visibility_timeout: int = 30) -> str:
        """Create the DLQ and the queue (with its redrive policy) when missing.

        Both keep messages ``RETENTION_SECONDS`` (14 days, SQS's maximum): with SQS's default
        of 4 days, consumers down for 5 days would silently lose orders. An existing queue is
        used as it is: its attributes belong to whoever created it (its DLQ is still created
        when missing; a missing redrive policy or a shorter retention is reported).
        """
        url = self._lookup(self.name)
        if url is not None:
            self._url = url
            self._ensure_dlq()
            self._warn_about_attributes(url)
            return url
        dlq_url = self._ensure_dlq()
        dlq_arn = self.client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        self._url = self.client.create_queue(
            QueueName=self.name,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "MessageRetentionPeriod": str(RETENTION_SECONDS),
                "RedrivePolicy": json.dumps(policy),
            },
        )["QueueUrl"]
        logger.info("created queue %s with dead-letter queue %s", self.name, self.dlq_name)
        return self._url

    def _ensure_dlq(self) -> str:
        url = self._lookup(self.dlq_name)
        if url is None:
            url = self.client.create_queue(
                QueueName=self.dlq_name,
                Attributes={"MessageRetentionPeriod": str(RETENTION_SECONDS)},
            )["QueueUrl"]
            logger.info("created dead-letter queue %s", self.dlq_name)
        return url

    def _warn_about_attributes(self, url: str) -> None:
        attributes = self.client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["RedrivePolicy", "MessageRetentionPeriod"]
        ).get("Attributes", {})
        if "RedrivePolicy" not in attributes:
            logger.warning(
                "queue %s has no redrive policy: a message that keeps failing is never moved "
                "to %s (set one, e.g. maxReceiveCount 5)",
                self.name,
                self.dlq_name,
            )
        try:
            retention = int(attributes.get("MessageRetentionPeriod", RETENTION_SECONDS))
        except ValueError:
            retention = RETENTION_SECONDS
        if retention < RETENTION_SECONDS:
            logger.warning(
                "queue %s keeps messages %d s (%.1f days), less than the %d s (14 days) "
                "ORDER_DEDUP_TTL is sized for: consumers stopped longer than that lose orders "
                "(set its MessageRetentionPeriod to %d)",
                self.name,
                retention,
                retention / 86400,
                RETENTION_SECONDS,
                RETENTION_SECONDS,
            )

    def receive(
        self,
        max_messages: int = SQS_BATCH_LIMIT,
        wait_time: int = 20,
        visibility_timeout: int | None = None,
    ) -> list[dict[str, Any]]:
        """``visibility_timeout`` overrides the queue's own, so whoever extends visibility
        knows when the received messages would reappear."""
        extra: dict[str, Any] = (
            {} if visibility_timeout is None else {"VisibilityTimeout": visibility_timeout}
        )
        response = self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_time,
            MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
            **extra,
        )
        return _plain(response.get("Messages", []))

    def delete(self, receipt_handles: Sequence[str]) -> int:
        """Delete in batches of 10; returns how many deletions SQS reported as failed."""
        return self.delete_from(self.url, receipt_handles)

    def extend_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[BatchResultErrorEntryTypeDef]:
        """Returns the entries SQS refused (e.g. a handle past SQS's 12-hour limit)."""
        return self.change_visibility_in(self.url, receipt_handles, timeout)

    def send_bodies(self, bodies: Sequence[str]) -> int:
        """SendMessageBatch in tens, resending entries SQS reports as failed; returns count sent."""
        sent = 0
        for chunk in _chunks(list(bodies)):
            pending = {str(i): body for i, body in enumerate(chunk)}
            for _attempt in range(5):
                response = self.client.send_message_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": k, "MessageBody": v} for k, v in pending.items()],
                )
                for ok in response.get("Successful", []):
                    pending.pop(ok["Id"], None)
                    sent += 1
                if not pending:
                    break
            if pending:
                raise RuntimeError(f"SQS refused {len(pending)} messages after 5 attempts")
        return sent

    def depth(self) -> QueueDepth:
        names: list[QueueAttributeNameType] = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attrs = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)[
            "Attributes"
        ]
        dlq_url = self._lookup(self.dlq_name)
        dlq_visible = None
        if dlq_url is not None:
            dlq_visible = int(
                self.client.get_queue_attributes(
                    QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
        return QueueDepth(
            visible=int(attrs.get(names[0], 0)),
            in_flight=int(attrs.get(names[1], 0)),
            delayed=int(attrs.get(names[2], 0)),
            dlq_visible=dlq_visible,
        )

    # --- any queue by URL: the dead-letter queue for ops commands ---------------------------
    @property
    def dlq_url(self) -> str:
        """URL of ``<name>-dlq``; raises ClientError (QueueDoesNotExist) when it is missing."""
        return self.client.get_queue_url(QueueName=self.dlq_name)["QueueUrl"]

    def receive_from(
        self,
        url: str,
        max_messages: int = SQS_BATCH_LIMIT,
        wait_time: int = 0,
        visibility_timeout: int | None = None,
    ) -> list[dict[str, Any]]:
        """ReceiveMessage on ``url`` with every attribute, so a redrive can carry them over."""
        kwargs: dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max(1, min(max_messages, SQS_BATCH_LIMIT)),
            "WaitTimeSeconds": wait_time,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        return _plain(self.client.receive_message(**kwargs).get("Messages", []))

    def send_messages_to(self, url: str, messages: Sequence[dict[str, Any]]) -> set[str]:
        """SendMessageBatch of received ``messages`` (at most 10) to ``url``, bodies and message
        attributes unchanged; returns the MessageIds SQS accepted.

        No retry here: the caller deletes only what was accepted, so a refused entry stays
        where it was and is simply tried again on the next run.
        """
        if not messages:
            return set()
        if len(messages) > SQS_BATCH_LIMIT:
            raise ValueError(f"at most {SQS_BATCH_LIMIT} messages per batch")
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for i, message in enumerate(messages):
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": str(i),
                "MessageBody": message["Body"],
            }
            attributes = dict(message.get("MessageAttributes") or {})
            sent = message.get("Attributes", {}).get("SentTimestamp")
            if sent and ORIGINAL_SENT_TIMESTAMP not in attributes:
                # Re-sending gives a new SentTimestamp; keep the first one (see dating_attributes).
                attributes[ORIGINAL_SENT_TIMESTAMP] = {"DataType": "Number", "StringValue": sent}
            if attributes:
                entry["MessageAttributes"] = attributes
            entries.append(entry)
        response = self.client.send_message_batch(QueueUrl=url, Entries=entries)
        for failure in response.get("Failed", []):
            logger.warning("send to %s failed: %s", url, failure)
        return {messages[int(ok["Id"])]["MessageId"] for ok in response.get("Successful", [])}

    def delete_from(self, url: str, receipt_handles: Sequence[str]) -> int:
        """DeleteMessageBatch on ``url`` in tens; returns how many deletions failed."""
        failed = 0
        for chunk in _chunks(list(receipt_handles)):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)
            ]
            response = self.client.delete_message_batch(QueueUrl=url, Entries=entries)
            for failure in response.get("Failed", []):
                failed += 1
                logger.warning("delete from %s failed: %s", url, failure)
        return failed

    def change_visibility_in(
        self, url: str, receipt_handles: Sequence[str], timeout: int
    ) -> list[BatchResultErrorEntryTypeDef]:
        """ChangeMessageVisibilityBatch on ``url``; timeout 0 makes messages visible again.

        Returns the ``Failed`` entries SQS reported (the call as a whole succeeded).
        """
        failed: list[BatchResultErrorEntryTypeDef] = []
        for chunk in _chunks(list(receipt_handles)):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout}
                for i, h in enumerate(chunk)
            ]
            response = self.client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
            failed += response.get("Failed", [])
        return failed
