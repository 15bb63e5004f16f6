"""KafkaSink and kafka_output: everything acknowledged lands in key order; any loss fails the
flow loudly; kafka_output waits for the acknowledgements at the epoch's end, not per batch."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSource, run_main

from operators.kafka_io import KafkaDeliveryError, KafkaSink, _EpochProduce, kafka_output
from tests.helpers import wait_until
from tests.ingest.conftest import TopicReader

Mode = Literal["await_each_batch", "pipelined", "epoch"]


def sink_flow(
    items: list[tuple[str, bytes]],
    config: dict[str, str],
    topic: str,
    batch: int = 250,
    mode: Mode = "await_each_batch",
) -> Dataflow:
    flow = Dataflow("kafka_sink_test")
    up = op.input("in", flow, TestingSource(items, batch_size=batch))
    if mode == "epoch":
        kafka_output("out", up, KafkaSink(config, topic), shards=2)
    else:
        sink = KafkaSink(config, topic, await_each_batch=mode == "await_each_batch")
        op.output("out", up, sink)
    return flow


all_modes = pytest.mark.parametrize("mode", ["await_each_batch", "pipelined", "epoch"])


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@all_modes
def test_every_item_is_delivered_once_in_per_key_order(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    topic_reader: Callable[[str], TopicReader],
    mode: Mode,
) -> None:
    topic = unique_topic("sink", partitions=3)
    items = [(f"SYM{i % 7}", f"{i}".encode()) for i in range(3000)]
    config = {"bootstrap.servers": kafka_bootstrap}
    run_main(sink_flow(items, config, topic, mode=mode))
    reader = topic_reader(topic)
    wait_until(lambda: reader.poll() >= len(items), timeout=30)
    assert reader.poll() == len(items)
    by_key: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for partition, key, value in reader.records:
        by_key[key].append(int(value))
        partitions[key].add(partition)
    for key, values in by_key.items():
        assert values == [int(v) for k, v in items if k == key]
        assert len(partitions[key]) == 1


def test_a_batch_beyond_the_bounded_producer_queue_is_delivered_whole_in_order(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    topic = unique_topic("sink-bounded", partitions=2)
    items = [(f"SYM{i % 5}", f"{i}".encode()) for i in range(4000)]
    config = {"bootstrap.servers": kafka_bootstrap, "queue.buffering.max.messages": "300"}
    run_main(sink_flow(items, config, topic, batch=4000))  # one batch, 13x the queue bound
    reader = topic_reader(topic)
    wait_until(lambda: reader.poll() >= len(items), timeout=30)
    assert reader.poll() == len(items)
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, key, value in reader.records:
        by_key[key].append(int(value))
    for key, values in by_key.items():
        assert values == [int(v) for k, v in items if k == key]


@all_modes
def test_broker_rejection_fails_the_flow(
    kafka_bootstrap: str, unique_topic: Callable[..., str], mode: Mode
) -> None:
    topic = unique_topic("small", config={"max.message.bytes": "2000"})
    items = [("AAPL", b"ok"), ("AAPL", os.urandom(20_000)), ("AAPL", b"ok")]
    config = {"bootstrap.servers": kafka_bootstrap}
    with pytest.raises(BytewaxRuntimeError) as info:
        run_main(sink_flow(items, config, topic, mode=mode))
    delivery = [e for e in causes(info.value) if isinstance(e, KafkaDeliveryError)]
    assert delivery, causes(info.value)
    assert "of 3 messages" in str(delivery[0])  # the broker rejects the whole record batch
    assert "too large" in str(delivery[0]).lower()


@all_modes
def test_unreachable_kafka_fails_the_flow_instead_of_dropping(mode: Mode) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"bootstrap.servers": f"127.0.0.1:{port}", "message.timeout.ms": "1500"}
    items = [("AAPL", b"x"), ("MSFT", b"y")]
    with pytest.raises(BytewaxRuntimeError) as info:
        run_main(sink_flow(items, config, "nowhere", mode=mode))
    delivery = [e for e in causes(info.value) if isinstance(e, KafkaDeliveryError)]
    assert delivery
    assert re.search(r"\d of \d messages to nowhere not delivered", str(delivery[0]))


class _Gate(StatefulSourcePartition[tuple[str, bytes], int]):
    """Emits one batch, then nothing until the test has looked at the topic: the epoch of
    the batch cannot end before that (the source's next batch holds it open)."""

    def __init__(self, items: list[tuple[str, bytes]], looked: threading.Event) -> None:
        self._items, self._looked = items, looked
        self._sent = False

    def next_batch(self) -> list[tuple[str, bytes]]:
        if not self._sent:
            self._sent = True
            return self._items
        if self._looked.is_set():
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        return None if not self._sent else datetime.now(UTC) + timedelta(milliseconds=5)

    def snapshot(self) -> int:
        return int(self._sent)


class _GateSource(FixedPartitionedSource[tuple[str, bytes], int]):
    def __init__(self, items: list[tuple[str, bytes]], looked: threading.Event) -> None:
        self._items, self._looked = items, looked

    def list_parts(self) -> list[str]:
        return ["gate"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Gate:
        return _Gate(self._items, self._looked)


def test_kafka_output_does_not_wait_per_batch_and_delivers_by_the_epoch_end(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    """The batch reaches the broker while its epoch is still open (the worker went on without
    waiting; a 30 s epoch never ended), and everything is delivered when the flow ends."""
    topic = unique_topic("sink-epoch", partitions=2)
    items = [(f"SYM{i % 3}", f"{i}".encode()) for i in range(500)]
    looked = threading.Event()
    flow = Dataflow("kafka_epoch_test")
    up = op.input("in", flow, _GateSource(items, looked))
    kafka_output("out", up, KafkaSink({"bootstrap.servers": kafka_bootstrap}, topic))
    reader = topic_reader(topic)
    runner = threading.Thread(
        target=run_main, args=(flow,), kwargs={"epoch_interval": timedelta(seconds=30)}
    )
    runner.start()
    try:
        wait_until(lambda: reader.poll() >= len(items), timeout=20)
    finally:
        looked.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert sorted(int(v) for _p, _k, v in reader.records) == list(range(len(items)))


def test_kafka_output_partition_returns_at_once_and_its_snapshot_is_the_barrier(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    """``write_batch`` leaves the messages with librdkafka (a 60 s linger keeps them queued);
    ``snapshot()`` returns only once every one is acknowledged."""
    topic = unique_topic("sink-barrier")
    items = [(f"SYM{i % 3}", f"{i}".encode()) for i in range(200)]
    config = {
        "bootstrap.servers": kafka_bootstrap,
        "linger.ms": "60000",
        "message.timeout.ms": "90000",
    }
    part = _EpochProduce(KafkaSink(config, topic), 1).build_part("out", "0", None)
    try:
        part.write_batch(items)
        assert len(part._producer) == len(items)  # returned without waiting for any of them
        part.snapshot()
        assert len(part._producer) == 0
        reader = topic_reader(topic)
        wait_until(lambda: reader.poll() >= len(items), timeout=20)
        assert [v for _p, _k, v in reader.records] == [v for _k, v in items]
    finally:
        part.close()
