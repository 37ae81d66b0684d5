"""Helpers of the rebuild and reconcile tests: orders through the real commit path, the
commands as an operator runs them, everything the API serves."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, date, datetime

from django.core.management import call_command
from django.core.management.base import CommandError

from orders.commit import BatchCommitter, BatchResult
from stats.store import AggregateStore
from tests.ingestion_helpers import order_body, prefix_keys

# The commands read the real clock (the store's): "now" is now, and the past is in the past.
NOW = datetime.now(UTC)
DAY = date(2025, 8, 9)


def message(order_id: str, user_id: str = "U1", price: str = "19.99", **kwargs) -> dict:
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "h",
        "Body": order_body(order_id, user_id=user_id, price=price, **kwargs),
        "Attributes": {"SentTimestamp": "1754734500000", "ApproximateReceiveCount": "1"},
    }


def event_message(
    event_id: str,
    order_id: str,
    amount: str | None = None,
    kind: str = "refunded",
    occurred_at: str = "2025-08-10T09:30:00Z",
) -> dict:
    """A refund (an amount) or a cancellation of ``order_id`` as SQS hands it over."""
    from orders.tests.conftest import event_body

    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "h",
        "Body": event_body(event_id, order_id, kind=kind, amount=amount, occurred_at=occurred_at),
        "Attributes": {"SentTimestamp": "1754734500000", "ApproximateReceiveCount": "1"},
    }


# The kinds of keys a generation holds (aggregates and marks): ``whole_state`` compares them.
_GENERATION_KINDS = (
    "user", "global", "days", "hours", "rank", "seen", "event", "products", "pdays",
)  # fmt: skip


def whole_state(store: AggregateStore) -> dict[str, object]:
    """Every key of the live generation(s) of ``store``'s prefix, the generation number taken
    out of its name: hashes whole, rankings with their scores, marks' values and whether they
    expire. What a rebuild must reproduce of what consumers applied, key for key (a shard's
    global hash of zeros is left out)."""
    state: dict[str, object] = {}
    client = store.client
    for raw in sorted(prefix_keys(client, store.prefix)):
        key = raw.decode()
        if key.startswith("{"):
            tag, _, rest = key.partition("}:")
        else:
            tag, rest = store.prefix, key[len(store.prefix) + 1 :]
        rest = re.sub(r"^g\d+:", "", rest)
        if rest.split(":", 1)[0] not in _GENERATION_KINDS:
            continue
        name = f"{tag}:{rest}"
        kind = client.type(raw).decode()
        if kind == "hash":
            fields = {k.decode(): v.decode() for k, v in client.hgetall(raw).items()}
            if rest == "global" and set(fields.values()) == {"0"}:
                continue  # a shard without users: rebuild writes zeros, consumers nothing
            state[name] = fields
        elif kind == "zset":
            state[name] = client.zrange(raw, 0, -1, withscores=True)
        else:
            state[name] = (client.get(raw), client.ttl(raw) > 0)
    return state


def as_key_format_2_wrote_it(store: AggregateStore) -> None:
    """What consumers of key format 2 leave under the same names: each day three fields
    (``<day>:orders`` and ``:revenue`` when orders were placed, ``:refunded`` when refunds
    occurred), each hour as many (``<hour>:orders``, ...), ``v2`` in every ``T:gen`` and in
    the recorded layout."""
    client, code = store.client, f"v2;n{store.shards}"
    for shard, generation in enumerate(store.generations()):
        key = store.keys.hours(shard, generation)
        hours = {name.decode(): value.decode() for name, value in client.hgetall(key).items()}
        client.delete(key)
        for hour, value in hours.items():
            client.hset(key, mapping=_format_2_fields(hour, value))
        key = store.keys.days(shard, generation)
        days = {name.decode(): value.decode() for name, value in client.hgetall(key).items()}
        client.delete(key)
        for day, value in days.items():
            client.hset(key, mapping=_format_2_fields(day, value))
        client.set(store.keys.generation(shard), f"{generation};{code}")
    client.set(store.keys.shared("layout"), code)


def _format_2_fields(name: str, value: str) -> dict[str, str]:
    orders, gross, refunded = value.split(":")
    fields = {f"{name}:orders": orders, f"{name}:revenue": gross} if orders != "0" else {}
    if refunded != "0":
        fields[f"{name}:refunded"] = refunded
    return fields


def received(messages: list[dict]) -> list[dict]:
    """The messages as one receive hands them over: a receipt handle of that receive (a
    redelivery is another receive, with other handles)."""
    return [{**m, "ReceiptHandle": uuid.uuid4().hex} for m in messages]


def commit(store: AggregateStore, messages: list[dict], at: datetime = NOW) -> BatchResult:
    """Deliver ``messages`` (a new receive) and commit them as a consumer does."""
    store.clock = lambda: at.timestamp()
    return BatchCommitter(store, "orders").commit(received(messages), at)


def aggregates(store: AggregateStore) -> dict:
    """Everything the API serves, for comparing before and after."""
    users = {u: store.user_stats(u) for u in ("U1", "U2", "U3", "U4", "U5")}
    return {
        "global": store.global_stats(),
        "users": users,
        "spenders": store.top_spenders(10),
        "buyers": store.top_buyers(10),
        "days": store.by_date(date(2025, 8, 1), date(2025, 8, 31)),
    }


def reconcile(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("reconcile_stats", "--no-progress", *args, stdout=out)
    except CommandError as exc:
        return 1, out.getvalue() + str(exc)
    return 0, out.getvalue()


def rebuild(*args: str) -> str:
    out = io.StringIO()
    call_command("rebuild_stats", "--no-progress", *args, stdout=out)
    return out.getvalue()
