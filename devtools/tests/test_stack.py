"""The ``make run`` launcher's plan: which processes it runs for which options (nothing is
started here; the launcher itself is run in tests/test_stack.py)."""

from __future__ import annotations

import argparse

from devtools import stack


def _options(*argv: str) -> argparse.Namespace:
    return stack.parse_args(["--web-port", "8123", *argv])


def test_plan_runs_only_the_commands_that_exist() -> None:
    plan = stack.plan_processes({"runserver"}, _options(), local_sqs=True)
    assert list(plan.processes) == ["web"]
    assert "runserver 127.0.0.1:8123" in plan.processes["web"]
    assert len(plan.missing) == 2

    everything = {"runserver", "consume_orders", "populate_sqs"}
    plan = stack.plan_processes(everything, _options("--no-reload"), local_sqs=True)
    assert list(plan.processes) == ["web", "worker", "feeder"]
    assert plan.processes["web"].endswith("--noreload")
    assert plan.processes["worker"].startswith("exec ")
    assert plan.processes["worker"].endswith("consume_orders --wait-time 5")
    assert (
        "populate_sqs --count 100000 --no-progress --max-backlog 200 &&" in plan.processes["feeder"]
    )
    assert plan.processes["feeder"].endswith("&& exec tail -f /dev/null")


def test_no_sample_orders_are_sent_to_real_aws_unless_asked() -> None:
    everything = {"runserver", "consume_orders", "populate_sqs"}
    plan = stack.plan_processes(everything, _options(), local_sqs=False)
    assert "feeder" not in plan.processes
    assert plan.processes["worker"].endswith("consume_orders")  # AWS: the command's default
    plan = stack.plan_processes(everything, _options("--feed"), local_sqs=False)
    assert "feeder" in plan.processes
    plan = stack.plan_processes(everything, _options("--no-feed"), local_sqs=True)
    assert "feeder" not in plan.processes
