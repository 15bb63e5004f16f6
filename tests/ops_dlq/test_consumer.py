"""The dead-letter consumer against the real Kafka and Postgres: both DLQ topics land in the
table with their raw bytes, grouped (first/last seen, count), counted by reason; a record that is
not a dead letter is kept, not dropped; a restarted consumer resumes from the store's positions,
neither losing nor double-counting."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prometheus_client import REGISTRY

from dlq.consumer import DeadLetterConsumer, ReasonLabels
from dlq.store import DeadLetterQuery, DeadLetterStore
from tests.helpers import wait_until
from tests.ops_dlq.conftest import T0, dead, publish
from torghut.config import KafkaSettings


def _consumer(kafka: KafkaSettings, store: DeadLetterStore, group: str) -> DeadLetterConsumer:
    return DeadLetterConsumer(
        kafka.client_config(),
        [kafka.topic_ingest_dlq, kafka.topic_ta_dlq],
        store,
        group_id=group,
        batch_size=100,
        poll_timeout_s=0.2,
    )


def _drain(consumer: DeadLetterConsumer, store: DeadLetterStore, copies: int) -> None:
    """Poll until the store holds ``copies`` records in all (sum of counts)."""

    def stored() -> bool:
        consumer.poll_once()
        return sum(x.count for x in store.find(DeadLetterQuery(limit=1000))) >= copies

    wait_until(stored, timeout=60, message=f"fewer than {copies} records stored")


def _metric(topic: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "torghut_dead_letters_stored_total", {"topic": topic, "reason": reason}
    )
    return value or 0.0


def test_both_topics_are_stored_grouped_with_their_raw_bytes(
    kafka: KafkaSettings, store: DeadLetterStore
) -> None:
    binary = bytes(range(256))  # not UTF-8: must survive byte for byte
    publish(
        kafka,
        kafka.topic_ingest_dlq,
        [
            dead("invalid_message", binary, seconds=5, symbol="AAPL"),
            dead("invalid_message", binary, seconds=1, symbol="AAPL"),
            dead("invalid_message", binary, seconds=9, symbol="AAPL", error="latest error"),
            dead("malformed_frame", b"\xdd\x00", seconds=2),
        ],
    )
    publish(
        kafka,
        kafka.topic_ta_dlq,
        [
            dead("invalid_message", b'{"symbol":"MSFT"}', stage="ta_microbars", seconds=3),
            b"not a dead letter",
        ],
    )
    before = _metric(kafka.topic_ingest_dlq, "invalid_message")
    consumer = _consumer(kafka, store, f"g-{uuid.uuid4().hex[:8]}")
    try:
        _drain(consumer, store, 6)
    finally:
        consumer.close()

    rows = {(x.topic, x.stage, x.reason): x for x in store.find(DeadLetterQuery(limit=100))}
    assert len(rows) == 4
    grouped = rows[(kafka.topic_ingest_dlq, "alpaca_decode", "invalid_message")]
    assert grouped.raw == binary
    assert grouped.count == 3
    assert grouped.first_seen_at == T0 + timedelta(seconds=1)
    assert grouped.last_seen_at == T0 + timedelta(seconds=9)
    assert grouped.error == "latest error"
    assert grouped.symbol == "AAPL"
    assert (grouped.first_partition, grouped.first_offset) == (0, 0)
    assert rows[(kafka.topic_ingest_dlq, "alpaca_decode", "malformed_frame")].raw == b"\xdd\x00"
    ta = rows[(kafka.topic_ta_dlq, "ta_microbars", "invalid_message")]
    assert ta.raw == b'{"symbol":"MSFT"}'
    foreign = rows[(kafka.topic_ta_dlq, "dlq_store", "undecodable")]
    assert foreign.raw == b"not a dead letter"
    assert foreign.source == "kafka"
    assert (foreign.first_partition, foreign.first_offset) == (0, 1)
    assert _metric(kafka.topic_ingest_dlq, "invalid_message") == before + 3
    assert _metric(kafka.topic_ta_dlq, "undecodable") >= 1


def test_a_restarted_consumer_resumes_from_the_store_positions(
    kafka: KafkaSettings, store: DeadLetterStore
) -> None:
    publish(kafka, kafka.topic_ingest_dlq, [dead(seconds=i, raw=bytes([i])) for i in range(3)])
    first = _consumer(kafka, store, f"g-{uuid.uuid4().hex[:8]}")
    try:
        _drain(first, store, 3)
    finally:
        first.close()
    publish(kafka, kafka.topic_ingest_dlq, [dead(seconds=10, raw=bytes([0])), dead(raw=b"new")])
    # another group: Kafka has no offsets for it, only the store's positions prevent re-reading
    second = _consumer(kafka, store, f"g-{uuid.uuid4().hex[:8]}")
    try:
        _drain(second, store, 5)
        assert second.poll_once() == 0  # nothing left over, nothing read twice
    finally:
        second.close()
    counts = {x.raw: x.count for x in store.find(DeadLetterQuery(limit=100))}
    assert counts == {bytes([0]): 2, bytes([1]): 1, bytes([2]): 1, b"new": 1}
    assert store.positions([kafka.topic_ingest_dlq]) == {(kafka.topic_ingest_dlq, 0): 5}


def test_reason_labels_stay_bounded() -> None:
    reason_label = ReasonLabels(limit=32)
    assert reason_label("invalid_message") == "invalid_message"
    assert reason_label("a reason with spaces and \x00") == "other"
    assert reason_label("x" * 41) == "other"
    labels = {reason_label(f"r{i}") for i in range(100)}
    assert "other" in labels
    assert len(labels) <= 33
