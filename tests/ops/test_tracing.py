"""Kafka produce and consume spans (:mod:`torghut.observability.tracing`) through the real
sink and source the ingest and TA flows use, against the local Kafka, exported to memory:
the semantic-convention attributes, the context carried in the ``traceparent`` header, and the
consumer span's parent = the producer span. Off (the default), nothing is added."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Message
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from operators.kafka_io import KafkaSink
from operators.kafka_source import KafkaBatchSource, consumer_config
from tests.helpers import wait_until
from torghut.config import TracingSettings
from torghut.observability import tracing

ITEMS = [("AAPL", b'{"n": 1}'), ("MSFT", b'{"n": 2}'), ("AAPL", b'{"n": 3}')]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


def produce(bootstrap: str, topic: str) -> None:
    part = KafkaSink({"bootstrap.servers": bootstrap}, topic).build("out", 0, 1)
    part.write_batch(list(ITEMS))
    part.close()


def consume_with_the_ta_source(bootstrap: str, topic: str) -> list[bytes | None]:
    config = consumer_config({"bootstrap.servers": bootstrap}, batch_size=100, prefetch_kb=1024)
    source = KafkaBatchSource(config, [topic], batch_size=100, exit_at_end=True)
    part = source.build_part("in", f"0-{topic}", None)
    values: list[bytes | None] = []

    def read() -> bool:
        for batch in part.next_batch():
            values.extend(batch.values)
        return len(values) >= len(ITEMS)

    try:
        wait_until(read, timeout=30, message=lambda: f"{len(values)} of {len(ITEMS)} read")
    finally:
        part.close()
    return values


def raw_messages(bootstrap: str, topic: str) -> list[Message]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[Message] = []

    def poll() -> bool:
        got.extend(m for m in consumer.consume(10, 0.5) if m.error() is None)
        return len(got) >= len(ITEMS)

    try:
        wait_until(poll, timeout=30, message="messages not read back")
    finally:
        consumer.close()
    return got


def test_consumer_spans_are_children_of_the_producer_spans_across_kafka(
    kafka_bootstrap: str, unique_topic: Callable[..., str], spans: InMemorySpanExporter
) -> None:
    topic = unique_topic("traced")
    produce(kafka_bootstrap, topic)
    values = consume_with_the_ta_source(kafka_bootstrap, topic)
    assert values == [v for _, v in ITEMS]

    finished: tuple[ReadableSpan, ...] = spans.get_finished_spans()
    sends = [s for s in finished if s.kind is SpanKind.PRODUCER]
    processes = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert [s.name for s in sends] == [f"send {topic}"] * 3
    assert [s.name for s in processes] == [f"process {topic}"] * 3
    for i, (send, process) in enumerate(zip(sends, processes, strict=True)):
        key = ITEMS[i][0]
        assert dict(send.attributes or {}) == {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": key,
        }
        assert dict(process.attributes or {}) == {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": "0",
            "messaging.kafka.offset": i,
            "messaging.kafka.message.key": key,
        }
        assert send.context is not None
        assert process.context is not None
        assert process.parent is not None, "the consumer span must continue the producer's trace"
        assert process.parent.span_id == send.context.span_id
        assert process.context.trace_id == send.context.trace_id
    assert len({s.context.trace_id for s in sends if s.context is not None}) == 3


def test_the_context_travels_in_the_traceparent_header(
    kafka_bootstrap: str, unique_topic: Callable[..., str], spans: InMemorySpanExporter
) -> None:
    topic = unique_topic("traced-headers")
    produce(kafka_bootstrap, topic)
    sends = spans.get_finished_spans()
    for message, send in zip(raw_messages(kafka_bootstrap, topic), sends, strict=True):
        headers = dict(message.headers() or [])
        assert send.context is not None
        trace_id, span_id = f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}"
        version, tid, sid, flags = headers["traceparent"].decode().split("-")
        assert (version, tid, sid) == ("00", trace_id, span_id)
        assert int(flags, 16) & 1, "sampled"


def test_off_by_default_no_span_and_no_header(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    assert tracing.configure_tracing(TracingSettings(), "torghut-test") is None
    assert tracing.TRACER is None
    topic = unique_topic("untraced")
    produce(kafka_bootstrap, topic)
    assert all(m.headers() is None for m in raw_messages(kafka_bootstrap, topic))
    assert consume_with_the_ta_source(kafka_bootstrap, topic) == [v for _, v in ITEMS]


def test_console_exporter_turns_tracing_on(
    kafka_bootstrap: str, unique_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    provider = tracing.configure_tracing(TracingSettings(exporter="console"), "torghut-test")
    try:
        assert provider is not None
        assert tracing.TRACER is not None
        topic = unique_topic("traced-console")
        produce(kafka_bootstrap, topic)
        provider.force_flush()
        assert f'"name": "send {topic}"' in capsys.readouterr().err
    finally:
        tracing.install(None)
        if provider is not None:
            provider.shutdown()
