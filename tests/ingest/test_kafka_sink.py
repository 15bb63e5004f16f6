"""KafkaSink: everything acknowledged lands in key order; any loss fails the flow loudly."""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Callable

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.testing import TestingSource, run_main

from operators.kafka_io import KafkaDeliveryError, KafkaSink
from tests.helpers import wait_until
from tests.ingest.conftest import TopicReader


def sink_flow(
    items: list[tuple[str, bytes]],
    config: dict[str, str],
    topic: str,
    batch: int = 250,
    await_each_batch: bool = True,
) -> Dataflow:
    flow = Dataflow("kafka_sink_test")
    up = op.input("in", flow, TestingSource(items, batch_size=batch))
    op.output("out", up, KafkaSink(config, topic, await_each_batch=await_each_batch))
    return flow


both_modes = pytest.mark.parametrize(
    "await_each_batch", [True, False], ids=["await_each_batch", "pipelined"]
)


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@both_modes
def test_every_item_is_delivered_once_in_per_key_order(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    topic_reader: Callable[[str], TopicReader],
    await_each_batch: bool,
) -> None:
    topic = unique_topic("sink", partitions=3)
    items = [(f"SYM{i % 7}", f"{i}".encode()) for i in range(3000)]
    config = {"bootstrap.servers": kafka_bootstrap}
    run_main(sink_flow(items, config, topic, await_each_batch=await_each_batch))
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


@both_modes
def test_broker_rejection_fails_the_flow(
    kafka_bootstrap: str, unique_topic: Callable[..., str], await_each_batch: bool
) -> None:
    topic = unique_topic("small", config={"max.message.bytes": "2000"})
    items = [("AAPL", b"ok"), ("AAPL", os.urandom(20_000)), ("AAPL", b"ok")]
    config = {"bootstrap.servers": kafka_bootstrap}
    with pytest.raises(BytewaxRuntimeError) as info:
        run_main(sink_flow(items, config, topic, await_each_batch=await_each_batch))
    delivery = [e for e in causes(info.value) if isinstance(e, KafkaDeliveryError)]
    assert delivery, causes(info.value)
    assert "of 3 messages" in str(delivery[0])  # the broker rejects the whole record batch
    assert "too large" in str(delivery[0]).lower()


@both_modes
def test_unreachable_kafka_fails_the_flow_instead_of_dropping(await_each_batch: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"bootstrap.servers": f"127.0.0.1:{port}", "message.timeout.ms": "1500"}
    items = [("AAPL", b"x"), ("MSFT", b"y")]
    with pytest.raises(BytewaxRuntimeError) as info:
        run_main(sink_flow(items, config, "nowhere", await_each_batch=await_each_batch))
    delivery = [e for e in causes(info.value) if isinstance(e, KafkaDeliveryError)]
    assert delivery
    assert "2 of 2 messages to nowhere not delivered" in str(delivery[0])
