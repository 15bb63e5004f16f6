"""Kafka smoke tests: the broker is a real Apache Kafka 4.x (KRaft)."""

from __future__ import annotations

import uuid

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from tests.conftest import TopicFactory
from tests.helpers import wait_until


def test_idempotent_producer_and_consumer_group_round_trip(
    kafka_bootstrap: str, kafka_admin: AdminClient, unique_topic: TopicFactory
) -> None:
    topic = unique_topic("roundtrip", partitions=3)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    errors: list[KafkaError] = []
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg)

    n = 300
    for i in range(n):
        producer.produce(topic, key=f"k{i % 7}", value=f"v{i}", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []
    assert len(delivered) == n
    assert {m.partition() for m in delivered} == {0, 1, 2}

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list[Message] = []

        def consumed_all() -> bool:
            for m in consumer.consume(num_messages=n, timeout=0.5):
                assert m.error() is None, m.error()
                got.append(m)
            return len(got) >= n

        wait_until(consumed_all, timeout=60, message=lambda: f"consumed {len(got)}/{n}")
        values = [(m.key() or b"", m.value() or b"") for m in got]
        assert sorted(v for _, v in values) == sorted(f"v{i}".encode() for i in range(n))
        # per key, order is preserved (same key -> same partition)
        for k in range(7):
            vals = [int(v[1:]) for key, v in values if key == f"k{k}".encode()]
            assert vals == sorted(vals)
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert sum(tp.offset for tp in committed) == n
    finally:
        consumer.close()

    # the group's offsets are stored by the broker's group coordinator
    fut = kafka_admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    offsets = fut.result(timeout=30).topic_partitions
    assert sum(tp.offset for tp in offsets if tp.topic == topic) == n


def test_compact_delete_topic_configs_read_back(
    kafka_admin: AdminClient, unique_topic: TopicFactory
) -> None:
    config = {
        "cleanup.policy": "compact,delete",
        "retention.ms": "3600000",
        "segment.ms": "60000",
        "min.cleanable.dirty.ratio": "0.01",
    }
    topic = unique_topic("compact", partitions=2, config=config)
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = kafka_admin.describe_configs([res])[res].result(timeout=30)
    for key, value in config.items():
        assert entries[key].value == value, key
        assert entries[key].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, key
    # a broker default comes back as such
    assert entries["max.message.bytes"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
