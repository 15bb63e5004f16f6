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

Two delivery modes. By default ``write_batch`` waits for the batch's acknowledgements (a
blocking ``flush()``): needed where the flow's recovery snapshots input positions at the end of
an epoch (the TA flow), since a snapshot taken while messages sit in the producer's queue would
lose them on a crash. ``await_each_batch=False`` hands the batch to librdkafka and returns: a
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

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter

from torghut.dead_letters import DeadLetter
from torghut.events import Envelope
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
]

P = TypeVar("P")

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
    that cannot replay).
    """

    def __init__(
        self, producer_config: dict[str, str], topic: str, *, await_each_batch: bool = True
    ) -> None:
        self._config = {**PRODUCER_DEFAULTS, **producer_config}
        self._topic = topic
        self._await = await_each_batch

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[tuple[str, bytes]]:
        client_id = f"{step_id}-{worker_index}"
        return _KafkaSinkPartition(self._config, self._topic, client_id, self._await)


class _KafkaSinkPartition(StatelessSinkPartition[tuple[str, bytes]]):
    def __init__(
        self, config: dict[str, str], topic: str, client_id: str, await_each_batch: bool
    ) -> None:
        self._topic = topic
        self._await = await_each_batch
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

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
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
        if self._await:
            self._settle(producer.flush())
            return
        producer.poll(0)  # serve the delivery reports and errors that arrived meanwhile
        self._settle(len(producer))

    def _refused(self, refused: list[dict[str, Any]], sent: int) -> None:
        errors = [str(m["_error"]) for m in refused[:_ERROR_SAMPLE]]
        self._failed_counter.inc(len(refused))
        raise KafkaDeliveryError(
            f"{len(refused)} of {sent} messages to {self._topic} refused by the producer: {errors}"
        )

    def _settle(self, in_flight: int) -> None:
        """Count what left the producer's queue since the last call; raise on any loss.

        ``in_flight``: messages still queued or awaiting their acknowledgement. After a
        blocking flush they count as lost; otherwise a later call settles them.
        """
        if self._fatal is not None:
            raise KafkaDeliveryError(f"producer for {self._topic} failed fatally: {self._fatal}")
        failed, sent = self._failed, self._unsettled
        remaining = in_flight if self._await else 0
        settled = sent if self._await else sent - in_flight
        self._produced.inc(max(0, settled - failed - remaining))
        self._unsettled = sent - settled
        if not failed and not remaining:
            return
        sample = list(self._failures)
        self._failed_counter.inc(failed + remaining)
        self._failed, self._failures = 0, []
        raise KafkaDeliveryError(
            f"{failed + remaining} of {sent} messages to {self._topic} not delivered "
            f"({failed} failed, {remaining} still queued after flush); first errors: {sample}"
        )

    def close(self) -> None:
        remaining = self._producer.flush()
        if remaining:
            raise KafkaDeliveryError(f"{remaining} messages to {self._topic} lost at close")
        self._settle(0)


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
