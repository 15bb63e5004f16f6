"""Fixtures of the dead-letter store tests: a migrated Postgres database, Kafka settings whose
every topic is a fresh one on the real broker, and helpers to publish dead letters the way the
flows do (``operators.kafka_io.encode_dead_letter``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer

from dlq.store import DeadLetterStore, IncomingLetter
from operators.kafka_io import PRODUCER_DEFAULTS, encode_dead_letter
from tests.conftest import TopicFactory
from tests.helpers import wait_until
from torghut.config import KafkaSettings
from torghut.dead_letters import DeadLetter
from trading.adapters.store import create_engine, upgrade

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)


@pytest.fixture
def dlq_engine(pg_url: str) -> Iterator[sa.Engine]:
    upgrade(pg_url)
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(dlq_engine: sa.Engine) -> DeadLetterStore:
    return DeadLetterStore(dlq_engine)


@pytest.fixture
def kafka(kafka_bootstrap: str, unique_topic: TopicFactory) -> KafkaSettings:
    """Settings whose DLQ and market topics are all fresh topics of the real broker."""
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_ingest_dlq=unique_topic("ingest-dlq"),
        topic_ta_dlq=unique_topic("ta-dlq"),
        topic_trades=unique_topic("trades"),
        topic_quotes=unique_topic("quotes"),
        topic_bars=unique_topic("bars"),
        topic_status=unique_topic("status"),
    )


def dead(
    reason: str = "invalid_message",
    raw: bytes = b"\x81\xa1T\xa1t",
    *,
    stage: str = "alpaca_decode",
    seconds: int = 0,
    symbol: str | None = None,
    error: str = "bad",
) -> DeadLetter:
    return DeadLetter(stage, reason, error, raw, T0 + timedelta(seconds=seconds), symbol=symbol)


def publish(kafka: KafkaSettings, topic: str, items: Iterable[DeadLetter | bytes]) -> None:
    """Dead letters encoded as the flows encode them; bytes as they are."""
    producer = Producer({**PRODUCER_DEFAULTS, **kafka.client_config()})
    for item in items:
        key, value = encode_dead_letter(item) if isinstance(item, DeadLetter) else ("x", item)
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def incoming(
    topic: str,
    offset: int,
    *,
    stage: str,
    reason: str,
    raw: bytes,
    symbol: str | None = None,
    seconds: int = 0,
) -> IncomingLetter:
    return IncomingLetter(
        topic,
        0,
        offset,
        stage,
        reason,
        "bad",
        symbol,
        "alpaca",
        raw,
        T0 + timedelta(seconds=seconds),
    )


def read_all(kafka: KafkaSettings, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    """``expected`` messages of ``topic`` as (key, value), waiting for them with a deadline;
    fails if more arrive within a short grace read."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    got: list[tuple[bytes | None, bytes]] = []
    eof = False
    try:
        consumer.subscribe([topic])

        def done() -> bool:
            nonlocal eof
            for m in consumer.consume(100, 0.2):
                if m.error() is not None:
                    eof = True
                    continue
                got.append((m.key(), m.value() or b""))
            return len(got) >= expected and eof

        wait_until(done, timeout=30, message=lambda: f"{topic}: {len(got)} of {expected}")
    finally:
        consumer.close()
    return got
