"""The ledger's transaction per batch of 10 messages, in process, split by what the batch holds:
orders only, or orders plus at least one refund or cancellation (issue 19's mixed stream).

Usage:
    .venv/bin/python bench/ledger_batch_bench.py [--orders 3000] [--rounds 5]
        [--events-share 0.07] [--database-url postgres://postgres@127.0.0.1:5432/NAME]

Each round empties the ledger and records the mixed stream of ``ingest_bench.py``'s (e+e)
line batch by batch (``record_batch`` in its own transaction, in the order sent), timing every
batch and counting its statements; it prints, per kind of batch, the median over the rounds of
the mean wall and CPU time and the statements per batch. The two kinds run interleaved in the
same rounds, so the machine's load moves both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchsetup import setup_django

_tmp, DATABASE_URL, _pre = setup_django("bench", DEBUG="false", SECRET_KEY="bench")

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from ingest_bench import empty_ledger, event_ratios  # noqa: E402

from orders import ledger  # noqa: E402
from orders.commit import validate_batch  # noqa: E402
from orders.samples import SampleGenerator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(parents=[_pre])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events-share", type=float, default=0.07)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    messages = SampleGenerator(
        seed=42, users=1000, days=365, invalid_ratio=0.0, **event_ratios(args.events_share)
    ).messages(args.orders)
    received = datetime.now(UTC)
    sqs = [{"MessageId": f"m{i}", "Body": m.body} for i, m in enumerate(messages)]
    batches = [validate_batch(sqs[i : i + 10], received) for i in range(0, len(sqs), 10)]
    statements = 0

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    kinds = ("orders only", "with events")
    per_round: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        empty_ledger()
        sums = {k: [0.0, 0.0, 0, 0] for k in kinds}
        with connection.execute_wrapper(count):
            for batch in batches:
                statements = 0
                cpu, wall = time.process_time(), time.perf_counter()
                with transaction.atomic():
                    ledger.record_batch(batch.orders, batch.events, received)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                total = sums[kinds[1] if batch.events else kinds[0]]
                total[0] += wall
                total[1] += cpu
                total[2] += statements
                total[3] += 1
        for kind, (w, c, s, n) in sums.items():
            per_round[kind].append((w / n * 1000, c / n * 1000, s / n, int(n)))
    print(
        f"ledger on {connection.vendor}, {args.orders} orders + {args.events_share:.0%} events, "
        f"{len(batches)} batches of 10, median of {args.rounds} rounds"
    )
    for kind, rows in per_round.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        print(
            f"{kind:12s} {rows[0][3]:4d} batches: {wall:6.2f} ms wall, {cpu:5.2f} ms CPU, "
            f"{rows[0][2]:.1f} statements per batch "
            f"(wall by round: {', '.join(f'{r[0]:.2f}' for r in rows)})"
        )


if __name__ == "__main__":
    main()
