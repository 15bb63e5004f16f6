"""Kafka in and out for Torghut dataflows: a sink that never drops silently, and envelope serde.

Why our own sink: Bytewax's ``KafkaSink`` ignores delivery failures (no delivery callback, the
result of ``flush()`` is thrown away), so a broker outage loses data while the flow looks
healthy (bytewax-notes §3). :class:`KafkaSink` produces with ``enable.idempotence`` (hence
``acks=all``) and lz4, and raises :class:`KafkaDeliveryError` if any message failed or is
still undelivered: the flow fails loudly and, being at-least-once, re-sends after a restart.

Built for batches: a batch is handed to librdkafka with ``produce_batch`` (one C call per
chunk of :data:`CHUNK` messages, not one ``produce`` call per message), and delivery reports
are asked for failures only (``delivery.report.only.error``), so a healthy batch costs no
Python callback per message. The producer's queue is bounded (``queue.buffering.max.kbytes``
/ ``.messages``); a chunk that does not fit waits for the queue to drain and is retried in
order, so memory stays bounded and per-key order is kept.

Three delivery modes. Given to ``op.output``, ``write_batch`` by default waits for the batch's
acknowledgements (a blocking ``flush()``): safe where the flow's recovery snapshots input
positions at the end of an epoch, since a snapshot taken while messages sit in the producer's
queue would lose them on a crash — but every batch then stops the worker for ``linger.ms`` plus
a broker round trip, and with it every other step of the flow (the TA flow wrote its bars,
signals and status that way, one flush after the other). :func:`kafka_output` (the TA flow's
sinks) keeps that guarantee at the epoch instead: batches are handed over at once and the
sink's ``snapshot()``, Bytewax's end-of-epoch barrier, waits for the acknowledgements.
``await_each_batch=False`` hands the batch to librdkafka and returns: a
delivery failure or a fatal producer error then fails the flow at a later ``write_batch`` or at
``close`` (which flushes), so nothing is dropped silently. That is for sources that cannot
replay anyway (the Alpaca websocket of ``dataflows.ingest``): what sits in the producer's queue
at a crash is lost exactly like what sits in the flow, and waiting for each batch's round trip
only kept the worker from reading the next frames (it spent ~40 % of its time in ``flush()``,
one sink after the other).

Message key = the envelope's symbol, so one symbol's messages land in one partition, in order.
Values are JSON-encoded :class:`torghut.events.Envelope` s (the schemas in ``infra/schemas/``).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter

from torghut.dead_letters import DeadLetter
from torghut.events import Envelope
from torghut.logs import get_logger
from torghut.observability import tracing

__all__ = [
    "PRODUCER_DEFAULTS",
    "DecodedBatch",
    "EnvelopeDecoder",
    "KafkaDeliveryError",
    "KafkaSink",
    "encode_dead_letter",
    "encode_envelope",
    "encode_keyed",
    "kafka_output",
]

P = TypeVar("P")
log = get_logger("operators.kafka_io")

PRODUCER_DEFAULTS: dict[str, str] = {
    "enable.idempotence": "true",
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": "5",
    "message.timeout.ms": "30000",
    "queue.buffering.max.kbytes": "32768",
    "queue.buffering.max.messages": "200000",
}
"""Settings :class:`KafkaSink` applies unless the caller's config overrides them."""

PRODUCED = Counter(
    "torghut_kafka_produced_total", "Messages acknowledged by Kafka, by topic.", ["topic"]
)
DELIVERY_FAILURES = Counter(
    "torghut_kafka_delivery_failures_total",
    "Messages Kafka failed to deliver, by topic.",
    ["topic"],
)

_ENCODER = msgspec.json.Encoder()
_ERROR_SAMPLE = 5
CHUNK = 10_000
"""Messages handed to librdkafka per ``produce_batch`` call (well under the queue bound)."""


class KafkaDeliveryError(RuntimeError):
    """Kafka did not acknowledge every message of a batch; the flow must stop, not drop."""


def encode_envelope(env: Envelope[Any]) -> bytes:
    """JSON bytes of an envelope (the wire format of every Torghut topic)."""
    return _ENCODER.encode(env)


def encode_keyed(env: Envelope[Any]) -> tuple[str, bytes]:
    """``(symbol, json bytes)``: the item :class:`KafkaSink` expects."""
    return env.symbol, _ENCODER.encode(env)


def encode_dead_letter(dead: DeadLetter) -> tuple[str, bytes]:
    """``(symbol or stage, json bytes)`` of a dead letter, for the ``*.dlq.v1`` topics."""
    return dead.symbol or dead.stage, _ENCODER.encode(dead)


class KafkaSink(DynamicSink[tuple[str, bytes]]):
    """Bytewax sink producing ``(key, value)`` items to one topic; fails the flow on loss.

    ``producer_config`` is librdkafka configuration (e.g. ``KafkaSettings.client_config()``);
    :data:`PRODUCER_DEFAULTS` fill in what it does not set. Every worker holding items gets
    its own producer. ``await_each_batch``: see the module docstring (``False`` only for sources
    that cannot replay). Given to :func:`kafka_output` instead of ``op.output``, it is the
    specification of that operator's producers (``config``, ``topic``), which wait at the end
    of each epoch rather than per batch.
    """

    def __init__(
        self, producer_config: dict[str, str], topic: str, *, await_each_batch: bool = True
    ) -> None:
        self.config = {**PRODUCER_DEFAULTS, **producer_config}
        self.topic = topic
        self._await = await_each_batch

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[tuple[str, bytes]]:
        client_id = f"{step_id}-{worker_index}"
        return _KafkaSinkPartition(self.config, self.topic, client_id, self._await)


_FAILED = threading.Event()
"""Set once a sink of the running flow raised :class:`KafkaDeliveryError` (see ``close``);
cleared when a flow builds its producers."""


class _Producer:
    """One producer of one topic: batches handed to librdkafka, losses counted and raised."""

    def __init__(self, config: dict[str, str], topic: str, client_id: str) -> None:
        _FAILED.clear()  # built when a flow starts, before anything could have failed
        self._topic = topic
        self._unsettled = 0  # handed to the producer, not yet counted as delivered or lost
        self._failures: list[str] = []
        self._failed = 0
        self._fatal: KafkaError | None = None
        self._producer = Producer(
            {
                "client.id": client_id,
                **config,
                "error_cb": self._on_error,
                "on_delivery": self._on_delivery,
                "delivery.report.only.error": True,  # _on_delivery counts failures only
            }
        )
        self._produced = PRODUCED.labels(topic)
        self._failed_counter = DELIVERY_FAILURES.labels(topic)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:  # only failures are reported (delivery.report.only.error)
            return
        self._failed += 1
        if len(self._failures) < _ERROR_SAMPLE:
            self._failures.append(str(err))

    def _mark_raised(self) -> None:
        _FAILED.set()

    def __len__(self) -> int:
        """Messages still queued or awaiting their acknowledgement."""
        return len(self._producer)

    def send(self, items: list[tuple[str, bytes]]) -> None:
        """Hand ``items`` to librdkafka in order; raise on what failed since the last call."""
        producer, topic = self._producer, self._topic
        for start in range(0, len(items), CHUNK):
            if tracing.TRACER is not None:  # off by default: one check per chunk
                tracing.produce_traced(producer, topic, items[start : start + CHUNK])
                continue
            pending: list[dict[str, Any]] = [
                {"key": k, "value": v} for k, v in items[start : start + CHUNK]
            ]
            while pending:
                producer.produce_batch(topic, pending)
                refused = [m for m in pending if "_error" in m]
                if not refused:
                    break
                if any(m["_error"].code() != KafkaError._QUEUE_FULL for m in refused):
                    self._refused(refused, len(items))
                producer.flush(1.0)  # the queue is full: let it drain, then retry in order
                pending = [{"key": m["key"], "value": m["value"]} for m in refused]
        self._unsettled += len(items)
        producer.poll(0)  # serve the delivery reports and errors that arrived meanwhile
        self._settle(len(producer), wait=False)

    def await_all(self) -> None:
        """Block until every message handed over so far is acknowledged; raise on any loss."""
        self._settle(self._producer.flush(), wait=True)

    def close(self) -> None:
        """Flush; raise on any loss — unless a sink of this process already raised: Bytewax
        closes the other sinks while it unwinds from that error, and a second exception
        there aborts the process instead of failing the flow (the loss is logged)."""
        failing = _FAILED.is_set()
        remaining = self._producer.flush()
        try:
            if remaining:
                self._mark_raised()
                raise KafkaDeliveryError(f"{remaining} messages to {self._topic} lost at close")
            self._settle(0, wait=True)
        except KafkaDeliveryError as exc:
            if failing:
                log.error("kafka_sink_lost_at_close", topic=self._topic, error=str(exc)[:500])
                return
            raise

    def _refused(self, refused: list[dict[str, Any]], sent: int) -> None:
        errors = [str(m["_error"]) for m in refused[:_ERROR_SAMPLE]]
        self._failed_counter.inc(len(refused))
        self._mark_raised()
        raise KafkaDeliveryError(
            f"{len(refused)} of {sent} messages to {self._topic} refused by the producer: {errors}"
        )

    def _settle(self, in_flight: int, *, wait: bool) -> None:
        """Count what left the producer's queue since the last call; raise on any loss.

        ``in_flight``: messages still queued or awaiting their acknowledgement. After a
        blocking flush (``wait``) they count as lost; otherwise a later call settles them.
        """
        if self._fatal is not None:
            self._mark_raised()
            raise KafkaDeliveryError(f"producer for {self._topic} failed fatally: {self._fatal}")
        failed, sent = self._failed, self._unsettled
        remaining = in_flight if wait else 0
        settled = sent if wait else sent - in_flight
        self._produced.inc(max(0, settled - failed - remaining))
        self._unsettled = sent - settled
        if not failed and not remaining:
            return
        sample = list(self._failures)
        self._failed_counter.inc(failed + remaining)
        self._failed, self._failures = 0, []
        self._mark_raised()
        raise KafkaDeliveryError(
            f"{failed + remaining} of {sent} messages to {self._topic} not delivered "
            f"({failed} failed, {remaining} still queued after flush); first errors: {sample}"
        )


class _KafkaSinkPartition(StatelessSinkPartition[tuple[str, bytes]]):
    def __init__(
        self, config: dict[str, str], topic: str, client_id: str, await_each_batch: bool
    ) -> None:
        self._producer = _Producer(config, topic, client_id)
        self._await = await_each_batch

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        self._producer.send(items)
        if self._await:
            self._producer.await_all()

    def close(self) -> None:
        self._producer.close()


@operator
def kafka_output(
    step_id: str, up: Stream[tuple[str, bytes]], sink: KafkaSink, shards: int = 1
) -> None:
    """Produce ``(key, value)`` items without waiting per batch; the epoch is the barrier.

    Where ``op.output(step_id, up, sink)`` would wait for each batch's acknowledgements:
    every batch is handed to librdkafka at once and the worker goes on (the messages leave
    after ``linger.ms``), and the sink partition's ``snapshot()``, which Bytewax calls at the
    end of every epoch before it commits the epoch, waits until every message handed over so
    far is acknowledged and raises :class:`KafkaDeliveryError` on any loss. So recovery stays
    at-least-once (a crash before that replays the epoch) while a slow acknowledgement never
    stops the flow between epochs. ``shards`` spreads the producing over that many sink
    partitions (by ``crc32`` of the key; with several workers Bytewax spreads the partitions
    over them); 1 keeps one producer per topic.

    >>> # kafka_output("bars_kafka", encoded_bars, KafkaSink(producer_config, "ta.bars.v1"))
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    keyed = op.flat_map_batch("shard", up, _shard_by_key(shards))
    op.output("produce", keyed, _EpochProduce(sink, shards))


def _shard_by_key(
    shards: int,
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, tuple[str, bytes]]]]:
    keys = [str(i) for i in range(shards)]

    def shard(batch: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes]]]:
        if shards == 1:
            return [("0", kv) for kv in batch]
        return [(keys[zlib.crc32(kv[0].encode()) % shards], kv) for kv in batch]

    return shard


class _EpochProduce(FixedPartitionedSink[tuple[str, bytes], None]):
    """One producing partition per shard (see :func:`kafka_output`)."""

    def __init__(self, sink: KafkaSink, shards: int) -> None:
        self._sink = sink
        self._shards = shards

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self._shards)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _EpochPartition:
        client_id = f"{step_id}-{for_part}"
        return _EpochPartition(_Producer(self._sink.config, self._sink.topic, client_id))


class _EpochPartition(StatefulSinkPartition[tuple[str, bytes], None]):
    def __init__(self, producer: _Producer) -> None:
        self._producer = producer

    def write_batch(self, values: list[tuple[str, bytes]]) -> None:
        self._producer.send(values)

    def snapshot(self) -> None:
        """The epoch's barrier: every message handed over so far is acknowledged."""
        self._producer.await_all()

    def close(self) -> None:
        self._producer.close()


class DecodedBatch(msgspec.Struct, Generic[P]):
    """Result of :meth:`EnvelopeDecoder.decode_batch`: envelopes, and ``(raw, error)`` rejects."""

    ok: list[Envelope[P]]
    bad: list[tuple[bytes, str]]


class EnvelopeDecoder(Generic[P]):
    """Decodes JSON envelopes of one payload type from Kafka message values, a batch at a time.

    >>> from datetime import UTC, datetime
    >>> from torghut.events import Trade
    >>> env = Envelope(datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC),
    ...                "AAPL", 1, Trade(1, "V", 10.0, 5.0))
    >>> batch = EnvelopeDecoder(Trade).decode_batch([encode_envelope(env), b"{"])
    >>> batch.ok == [env], batch.bad[0][0]
    (True, b'{')
    """

    def __init__(self, payload_type: type[P] | Any) -> None:
        self._decoder: msgspec.json.Decoder[Envelope[P]] = msgspec.json.Decoder(
            Envelope[payload_type]  # type: ignore[valid-type]
        )

    def decode(self, value: bytes) -> Envelope[P]:
        """One envelope; raises ``msgspec.DecodeError`` (incl. validation errors) on bad input."""
        return self._decoder.decode(value)

    def decode_batch(self, values: Iterable[bytes | None]) -> DecodedBatch[P]:
        """Decode many values; bad or empty ones are returned with their error, never raised."""
        decode = self._decoder.decode
        ok: list[Envelope[P]] = []
        bad: list[tuple[bytes, str]] = []
        for value in values:
            if value is None:
                bad.append((b"", "empty message value"))
                continue
            try:
                ok.append(decode(value))
            except msgspec.DecodeError as exc:
                bad.append((value, str(exc)))
        return DecodedBatch(ok, bad)

    def decode_messages(self, messages: Sequence[Any]) -> DecodedBatch[P]:
        """Decode the ``value`` of Kafka messages (confluent ``Message`` or Bytewax's)."""
        return self.decode_batch(m.value() if callable(m.value) else m.value for m in messages)
