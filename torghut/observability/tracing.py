"""OpenTelemetry spans for Kafka produce and consume, carried in the messages' headers.

Off by default (``TRACING_EXPORTER=none``) and then free: :data:`TRACER` stays ``None``, the
Kafka sink and source check it once per batch and add no span, no header, no allocation. On
(``otlp`` to a collector over HTTP, or ``console``), following the messaging semantic
conventions (the attribute names come from ``opentelemetry-semantic-conventions``, pinned with
the SDK):

* the sink (:class:`operators.kafka_io.KafkaSink`, used by ingest and TA) starts one ``send
  {topic}`` span (kind ``PRODUCER``) per message and writes its context into the message's
  ``traceparent`` header (W3C trace context). librdkafka sends asynchronously and reports
  only failures, so the span marks the hand-over to the client, not the acknowledgement.
  librdkafka's batch call takes no headers, so while tracing is on the sink produces one
  message per call (slower: tracing is for following messages, not for throughput runs);
* the source (:class:`operators.kafka_source.KafkaBatchSource`, the TA flow's input) starts one
  ``process {topic}`` span (kind ``CONSUMER``) per message it hands to the flow, whose parent
  is the producer's span read from the header: a trace runs from the ingest's send to the TA
  flow's intake. The TA operators work on batches of many symbols at once, so the trace ends
  there rather than pretending a per-message processing time.

Attributes: ``messaging.system=kafka``, ``messaging.operation.type`` / ``.name``
(``send``/``process``), ``messaging.destination.name`` (topic), ``messaging.kafka.message.key``,
and on the consumer side ``messaging.destination.partition.id`` and ``messaging.kafka.offset``.

Only ``opentelemetry-api`` is imported here at start; the SDK and exporters are imported when
tracing is configured on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from torghut.config import TracingSettings
from torghut.logs import get_logger

if TYPE_CHECKING:
    from confluent_kafka import Message, Producer
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["TRACER", "configure_tracing", "install", "produce_traced", "traced_consume"]

TRACER: Tracer | None = None
"""The tracer of the Kafka hooks; ``None`` = tracing off (the hooks' one check)."""

log = get_logger("torghut.observability")
_PROPAGATOR = TraceContextTextMapPropagator()
_KAFKA = msg.MessagingSystemValues.KAFKA.value
_SEND = msg.MessagingOperationTypeValues.SEND.value
_PROCESS = msg.MessagingOperationTypeValues.PROCESS.value

Headers = list[tuple[str, str | bytes | None]]


class _HeaderGetter(Getter[Headers]):
    """Reads W3C trace context from Kafka headers (``(name, bytes)`` pairs)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = [v.decode("latin-1") if isinstance(v, bytes) else v for k, v in carrier if k == key]
        return [v for v in found if v is not None] or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _HeaderGetter()


def configure_tracing(settings: TracingSettings, service: str) -> TracerProvider | None:
    """Turn tracing on for this process as ``service`` (e.g. ``torghut-ingest``), or leave it off.

    Spans are exported in batches off the hot path; the provider flushes them at exit.
    """
    if settings.exporter == "none":
        install(None)
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter: SpanExporter
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=10)
    else:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing_on", exporter=settings.exporter, service=service)
    return provider


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for the Kafka spans (``None`` = off). Tests pass an in-memory one."""
    global TRACER
    TRACER = None if provider is None else provider.get_tracer("torghut.kafka", schema_url=None)


def produce_traced(producer: Producer, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
    """Produce ``(key, value)`` items one by one, each with a ``send`` span whose context goes
    into the message's headers (librdkafka's batch call takes no headers, hence one call per
    message while tracing is on). A full queue is drained and the message retried, in order."""
    tracer = TRACER
    if tracer is None:
        raise RuntimeError("tracing is off: produce with produce_batch")
    name = f"send {topic}"
    for key, value in items:
        span = tracer.start_span(
            name,
            kind=SpanKind.PRODUCER,
            attributes={
                msg.MESSAGING_SYSTEM: _KAFKA,
                msg.MESSAGING_OPERATION_TYPE: _SEND,
                msg.MESSAGING_OPERATION_NAME: "send",
                msg.MESSAGING_DESTINATION_NAME: topic,
                msg.MESSAGING_KAFKA_MESSAGE_KEY: key,
            },
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        headers: Headers = [(k, v.encode()) for k, v in carrier.items()]
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                break
            except BufferError:
                producer.flush(1.0)
        span.end()


def traced_consume(topic: str, partition: int, messages: Sequence[Message]) -> None:
    """A ``process`` span per consumed message, child of the producer's span when it has one."""
    tracer = TRACER
    if tracer is None:
        return
    name = f"process {topic}"
    partition_id = str(partition)
    for m in messages:
        raw = m.headers()
        headers: Headers | None = list(raw.items()) if isinstance(raw, dict) else raw
        parent: Context | None = _PROPAGATOR.extract(headers, getter=_GETTER) if headers else None
        key = m.key()
        attributes: dict[str, str | int] = {
            msg.MESSAGING_SYSTEM: _KAFKA,
            msg.MESSAGING_OPERATION_TYPE: _PROCESS,
            msg.MESSAGING_OPERATION_NAME: "process",
            msg.MESSAGING_DESTINATION_NAME: topic,
            msg.MESSAGING_DESTINATION_PARTITION_ID: partition_id,
            msg.MESSAGING_KAFKA_OFFSET: m.offset() or 0,
        }
        if key is not None:
            attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = (
                key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            )
        tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes).end()
