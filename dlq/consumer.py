"""Copy the dead-letter topics into the dead-letter store, exactly once per record.

Positions are the store's (:meth:`dlq.store.DeadLetterStore.record` writes rows and next offsets
in one transaction): on every assignment the consumer seeks to them, so Kafka's group offsets
only decide which process reads which partition. They are committed too, after the store's
transaction, so consumer-lag monitoring sees this group like any other.

A record that is not a :class:`torghut.dead_letters.DeadLetter` (a producer bug, a foreign
writer) is not dropped: it is stored with reason ``undecodable``, its whole message value as
the raw bytes and the message's timestamp as its time.

Counted in ``torghut_dead_letters_stored_total{topic, reason}`` (reasons bounded, see
:class:`ReasonLabels`); alert on its rate.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter

from dlq.store import DeadLetterStore, IncomingLetter
from torghut.dead_letters import DeadLetter
from torghut.logs import get_logger

__all__ = ["STORED", "DeadLetterConsumer", "ReasonLabels", "decode"]

log = get_logger("dlq.consumer")

STORED = Counter(
    "torghut_dead_letters_stored_total",
    "Dead letters copied from a DLQ topic into the dead-letter store, by topic and reason.",
    ["topic", "reason"],
)

UNDECODABLE = "undecodable"
_STAGE = "dlq_store"
_DECODER = msgspec.json.Decoder(DeadLetter)


class ReasonLabels:
    """Reasons as metric labels: the first ``limit`` distinct short ``snake_case`` reasons
    seen, ``other`` for anything else, so garbled records cannot grow the metric without bound
    (one consumer per process, so the bound is the process's)."""

    def __init__(self, limit: int = 32) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, reason: str) -> str:
        if not (reason.isascii() and reason.replace("_", "").isalnum() and len(reason) <= 40):
            return "other"
        if reason in self._seen:
            return reason
        if len(self._seen) < self._limit:
            self._seen.add(reason)
            return reason
        return "other"


def decode(msg: Message) -> IncomingLetter:
    """The store's view of one DLQ message; an undecodable one keeps its bytes (see above)."""
    topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
    value = msg.value() or b""
    try:
        d = _DECODER.decode(value)
    except msgspec.DecodeError as exc:
        _, ts_ms = msg.timestamp()
        return IncomingLetter(
            topic,
            partition,
            offset,
            _STAGE,
            UNDECODABLE,
            str(exc)[:300],
            None,
            "kafka",
            value,
            datetime.fromtimestamp(max(ts_ms, 0) / 1000, UTC),
        )
    received = d.received_at if d.received_at.tzinfo else d.received_at.replace(tzinfo=UTC)
    return IncomingLetter(
        topic, partition, offset, d.stage, d.reason, d.error, d.symbol, d.source, d.raw, received
    )


class DeadLetterConsumer:
    """Reads ``topics`` in group ``group_id`` and stores every record (see the module doc)."""

    def __init__(
        self,
        client_config: dict[str, str],
        topics: Sequence[str],
        store: DeadLetterStore,
        *,
        group_id: str,
        batch_size: int = 500,
        poll_timeout_s: float = 1.0,
    ) -> None:
        self._store = store
        self._topics = list(topics)
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._fatal: KafkaError | None = None
        self._labels = ReasonLabels()
        config: dict[str, Any] = {
            **client_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "error_cb": self._on_error,
        }
        self._consumer = Consumer(config)
        self._consumer.subscribe(self._topics, on_assign=self._on_assign)

    def poll_once(self) -> int:
        """Read at most one batch, store it; the number of records stored."""
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        msgs = self._consumer.consume(self._batch_size, self._poll_timeout_s)
        letters: list[IncomingLetter] = []
        positions: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            letter = decode(m)
            letters.append(letter)
            positions[(letter.topic, letter.partition)] = letter.offset + 1
        if not positions:
            return 0
        self._store.record(letters, positions)
        for x in letters:
            STORED.labels(x.topic, self._labels(x.reason)).inc()
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
            asynchronous=True,
        )
        log.info("dead_letters_stored", count=len(letters), partitions=len(positions))
        return len(letters)

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            self.poll_once()

    def close(self) -> None:
        self._consumer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start every assigned partition at the store's position (earliest if none)."""
        stored = self._store.positions({tp.topic for tp in partitions})
        for tp in partitions:
            position = stored.get((tp.topic, tp.partition))
            if position is not None:
                tp.offset = position
        consumer.assign(partitions)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        log.warning("dlq_consumer_kafka_error", error=err.str())
