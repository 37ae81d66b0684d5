"""One backoff and one log policy for every wait on a dependency: a running consumer's
outage and consume_orders' start-up wait for a Redis or SQS that is not up yet."""

from __future__ import annotations

import logging
import threading

import pytest
from botocore.exceptions import ClientError
from django.core.management.base import CommandError

from orders.management.commands.consume_orders import Command
from orders.outages import Dependency, Outages
from stats.store import StoreUnavailableError


class _RecordingEvent(threading.Event):
    """An event whose waits return at once, noting each delay; set after ``set_after`` waits."""

    def __init__(self, waits: list[float | None], set_after: int | None) -> None:
        super().__init__()
        self.waits = waits
        self.set_after = set_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.set_after is not None and len(self.waits) >= self.set_after:
            self.set()
        return self.is_set()


def recording_event(waits: list[float | None], set_after: int | None = None) -> threading.Event:
    return _RecordingEvent(waits, set_after)


def failing(times: int, exc: Exception, result: object = "answer"):
    calls = iter(range(times + 1))

    def step() -> object:
        if next(calls) < times:
            raise exc
        return result

    return step


def test_start_up_waits_for_redis_with_the_consumers_backoff_one_error_one_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits: list[float | None] = []
    stop = recording_event(waits)
    step = failing(4, StoreUnavailableError("ConnectionError: refused"), result="store")

    with caplog.at_level(logging.DEBUG, logger="orders.consumer"):
        store = Command._until_answered(Outages(max_delay=3), stop, step)

    assert store == "store"
    assert waits == [0.5, 1.0, 2.0, 3.0]  # doubling, capped at --max-backoff
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2
    assert lines[0][0] == logging.ERROR
    assert lines[0][1].startswith("Redis unavailable (ConnectionError: refused); backing off")
    assert lines[1][0] == logging.INFO
    assert lines[1][1].startswith("Redis is back after ")


def test_start_up_that_answers_at_once_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float | None] = []

    with caplog.at_level(logging.DEBUG, logger="orders.consumer"):
        answer = Command._until_answered(Outages(), recording_event(waits), lambda: 7)

    assert answer == 7
    assert waits == []
    assert caplog.records == []


def test_a_stop_during_the_start_up_wait_gives_up_without_saying_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits: list[float | None] = []
    stop = recording_event(waits, set_after=2)
    step = failing(10, StoreUnavailableError("ConnectionError: refused"))

    with caplog.at_level(logging.INFO, logger="orders.consumer"):
        answer = Command._until_answered(Outages(), stop, step)

    assert answer is None
    assert waits == [0.5, 1.0]
    assert not any("is back" in r.getMessage() for r in caplog.records)


def test_a_start_up_failure_waiting_cannot_cure_stops_naming_the_dependency() -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetQueueUrl")
    waits: list[float | None] = []

    with pytest.raises(CommandError) as refused:
        Command._until_answered(Outages(), recording_event(waits), failing(1, denied))

    assert str(refused.value).startswith("SQS: An error occurred (AccessDenied)")
    assert waits == []


def test_retry_probes_before_trying_the_work_again_and_ends_the_outage_once() -> None:
    """With a probe, a wait lasts until the probe passes; only the work's success ends it."""
    waits: list[float | None] = []
    probes: list[Dependency] = []
    probe_failures = iter([StoreUnavailableError("still down")])

    def probe(dependency: Dependency) -> None:
        probes.append(dependency)
        if (failure := next(probe_failures, None)) is not None:
            raise failure

    outages = Outages()
    work = failing(1, StoreUnavailableError("down"))

    answer = outages.retry(work, recording_event(waits), lambda: 0.0, probe)

    assert answer == "answer"
    assert probes == [Dependency.REDIS, Dependency.REDIS]
    assert waits == [0.5, 1.0]
    assert outages.failed(Dependency.REDIS, StoreUnavailableError("new"), 0.0) == 0.5
