"""RejectedOrder storage: idempotent batches, lossless bodies, storable text, logging."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders.models import RejectedOrder, RejectedOrderCode, RejectionRecord
from orders.samples import POISON_EXPECTED_CODES, poison_bodies
from orders.validation import Rejection, validate_message

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 8, 9, 10, 15, tzinfo=UTC)


def record(message_id: str, body: str | bytes, receive_count: int = 1) -> RejectionRecord:
    result = validate_message(body, {"SentTimestamp": "1723198500000"})
    assert isinstance(result, Rejection)
    return RejectionRecord(
        message_id=message_id,
        body=body,
        rejection=result,
        queue_name="orders",
        receive_count=receive_count,
        received_at=T0,
    )


def test_record_many_creates_rows() -> None:
    created = RejectedOrder.objects.record_many(
        [record("m1", "{"), record("m2", '{"order_id": "ORD1", "user_id": 5}')]
    )
    assert created == ["m1", "m2"]
    m1 = RejectedOrder.objects.get(message_id="m1")
    assert m1.codes == ["invalid_json"]
    assert m1.reason_codes == ",invalid_json,"
    assert m1.body_bytes == b"{"
    assert m1.status == RejectedOrder.Status.NEW
    assert m1.received_at == T0
    assert m1.queue_name == "orders"
    m2 = RejectedOrder.objects.get(message_id="m2")
    assert m2.order_id == "ORD1"
    assert m2.user_id is None
    assert m2.codes == ["invalid_field", "missing_field"]
    assert {r["code"] for r in m2.reasons} == {"invalid_field", "missing_field"}
    assert all(set(r) == {"code", "field", "message"} for r in m2.reasons)


def test_record_many_is_idempotent_and_keeps_the_highest_receive_count() -> None:
    RejectedOrder.objects.record_many([record("m1", "{", 1)])
    created = RejectedOrder.objects.record_many(
        [record("m1", "{", 3), record("m1", "{", 2), record("m2", "[", 1)]
    )
    assert created == ["m2"]
    assert RejectedOrder.objects.count() == 2
    row = RejectedOrder.objects.get(message_id="m1")
    assert row.receive_count == 3
    assert row.received_at == T0
    RejectedOrder.objects.record_many([record("m1", "{", 2)])
    row.refresh_from_db()
    assert row.receive_count == 3


def test_record_many_uses_constant_queries() -> None:
    RejectedOrder.objects.record_many([record("old0", "{")])
    batch = [record(f"m{i}", "{") for i in range(10)] + [record("old0", "{", 5)]
    with CaptureQueriesContext(connection) as queries:
        RejectedOrder.objects.record_many(batch)
    statements = [
        q["sql"] for q in queries if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) <= 5, statements


def test_record_many_empty_batch() -> None:
    assert RejectedOrder.objects.record_many([]) == []


def test_body_is_stored_losslessly() -> None:
    raw = b"\xff\xfe\x00not utf-8 \xed\xa0\x80"
    surrogate_text = '{"order_id": "\ud800"}'  # a str body carrying a raw lone surrogate
    RejectedOrder.objects.record_many([record("b", raw), record("s", surrogate_text)])
    assert RejectedOrder.objects.get(message_id="b").body_bytes == raw
    stored = RejectedOrder.objects.get(message_id="s").body_bytes
    assert stored.decode("utf-8", "surrogatepass") == surrogate_text
    assert "\\xff" in RejectedOrder.objects.get(message_id="b").body_text


@pytest.mark.parametrize("name", sorted(POISON_EXPECTED_CODES))
def test_poison_bodies_are_storable(name: str) -> None:
    body = poison_bodies()[name]
    RejectedOrder.objects.record_many([record(name, body)])
    row = RejectedOrder.objects.get(message_id=name)
    assert row.codes == [POISON_EXPECTED_CODES[name]]
    assert row.body_bytes == body.encode("utf-8")
    for text in (row.order_id or "", row.user_id or "", str(row.reasons)):
        text.encode("utf-8")
        assert "\x00" not in text
    row.pretty_body().encode("utf-8")


def test_poison_ids_are_escaped_for_search() -> None:
    bodies = poison_bodies()
    RejectedOrder.objects.record_many(
        [record("sur", bodies["lone_surrogate_ids"]), record("nul", bodies["nul_in_ids"])]
    )
    assert RejectedOrder.objects.get(message_id="sur").order_id == "\\ud800"
    assert RejectedOrder.objects.get(message_id="nul").order_id == "ORD\\x00X"


def test_each_rejection_is_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="orders.rejections"):
        RejectedOrder.objects.record_many([record("m9", '{"order_id": "ORD9", "items": []}')])
    [entry] = [r for r in caplog.records if r.name == "orders.rejections"]
    assert entry.levelno == logging.WARNING
    text = entry.getMessage()
    assert "m9" in text and "ORD9" in text and "invalid_items" in text and "missing_field" in text


def test_record_many_stores_one_code_row_per_code_and_the_sent_timestamp() -> None:
    RejectedOrder.objects.record_many(
        [record("m1", "{"), record("m2", '{"order_id": "ORD1", "user_id": 5}')]
    )
    rows = RejectedOrderCode.objects.order_by("rejected_order__message_id", "code")
    assert [(r.rejected_order.message_id, r.code) for r in rows] == [
        ("m1", "invalid_json"),
        ("m2", "invalid_field"),
        ("m2", "missing_field"),
    ]
    assert RejectedOrder.objects.get(message_id="m1").sent_at == datetime(
        2024, 8, 9, 10, 15, tzinfo=UTC
    )


def test_a_row_created_on_its_own_gets_its_code_rows() -> None:
    row = RejectedOrder.objects.create(
        message_id="x", body=b"{}", reason_codes=",invalid_json,value_mismatch,", received_at=T0
    )
    assert sorted(row.code_rows.values_list("code", flat=True)) == [
        "invalid_json",
        "value_mismatch",
    ]


def test_count_by_code_counts_every_row_or_the_filtered_ones() -> None:
    RejectedOrder.objects.record_many(
        [record("a", "{"), record("b", "[]"), record("c", '{"order_id": 1}'), record("d", "{")]
    )
    RejectedOrder.objects.filter(message_id="d").update(status=RejectedOrder.Status.REVIEWED)

    assert RejectedOrder.objects.count_by_code() == {
        "invalid_json": 2,
        "not_an_object": 1,
        "invalid_field": 1,
        "missing_field": 1,
    }
    assert RejectedOrder.objects.filter(status="new").count_by_code() == {
        "invalid_json": 1,
        "not_an_object": 1,
        "invalid_field": 1,
        "missing_field": 1,
    }
    assert RejectedOrder.objects.none().count_by_code() == {}


def test_with_code_matches_whole_codes() -> None:
    RejectedOrder.objects.record_many(
        [record("a", "{"), record("b", "[]"), record("c", '{"order_id": 1}')]
    )
    assert list(
        RejectedOrder.objects.with_code("invalid_json").values_list("message_id", flat=True)
    ) == ["a"]
    assert RejectedOrder.objects.with_code("invalid").count() == 0
    assert RejectedOrder.objects.with_code("missing_field").count() == 1


def test_pretty_body_keeps_number_digits() -> None:
    body = '{"order_value": 19.990, "n": 1e2, "items": [], "s": "<b>"}'
    RejectedOrder.objects.record_many([record("p", body)])
    pretty = RejectedOrder.objects.get(message_id="p").pretty_body()
    assert '"order_value": 19.990' in pretty
    assert '"n": 1e2' in pretty
    assert pretty.startswith("{\n  ")


def test_pretty_body_falls_back_to_text() -> None:
    bodies: dict[str, str | bytes] = {
        "deep": poison_bodies()["deep_nesting"],
        "bad": "{not json",
        "bin": b"\xff",
    }
    RejectedOrder.objects.record_many([record(k, v) for k, v in bodies.items()])
    assert RejectedOrder.objects.get(message_id="bad").pretty_body() == "{not json"
    assert RejectedOrder.objects.get(message_id="bin").pretty_body() == "\\xff"
    deep = RejectedOrder.objects.get(message_id="deep").pretty_body()
    assert deep.startswith("[[[[") and deep.endswith("(truncated for display)")


def test_pretty_body_shows_both_values_of_a_duplicate_key() -> None:
    RejectedOrder.objects.record_many(
        [record("dup", '{"order_value": 10, "items": [{"q": 1, "q": 2}], "order_value": 5}')]
    )
    pretty = RejectedOrder.objects.get(message_id="dup").pretty_body()
    assert pretty == (
        "{\n"
        '  "order_value": 10,\n'
        '  "items": [\n'
        "    {\n"
        '      "q": 1,\n'
        '      "q": 2\n'
        "    }\n"
        "  ],\n"
        '  "order_value": 5\n'
        "}"
    )


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_rows_already_stored_their_code_rows() -> None:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    [codes] = [n for n in graph.nodes if n[0] == "orders" and n[1].endswith("_rejectedordercode")]
    [parent] = [p.key for p in graph.node_map[codes].parents if p.key[0] == "orders"]
    before, after = [parent], [codes]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("orders", "RejectedOrder")
    old.objects.create(
        message_id="old", body=b"{}", reason_codes=",invalid_items,value_mismatch,", received_at=T0
    )
    old.objects.create(message_id="none", body=b"{}", reason_codes="", received_at=T0)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)

    assert sorted(RejectedOrderCode.objects.values_list("rejected_order__message_id", "code")) == [
        ("old", "invalid_items"),
        ("old", "value_mismatch"),
    ]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
