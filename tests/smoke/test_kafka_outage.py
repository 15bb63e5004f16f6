"""Kafka outage: clients fail with clear errors within their deadlines, never hang.

Runs against a *dedicated* broker (own ports, own INFRA_RUN under tmp_path) started and stopped
through ``infra/local/kafka.sh``, so the shared broker other tests (and other concurrent pytest
sessions) use is never disturbed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.helpers import wait_until
from tests.infra.services import (
    InfraConfig,
    free_ports,
    group_alive,
    listening_ports,
    start,
    stop,
)


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[InfraConfig]:
    kport, cport = free_ports(2)
    cfg = InfraConfig.from_env(
        {
            "INFRA_RUN": str(tmp_path / "infra"),
            "KAFKA_PORT": str(kport),
            "KAFKA_CONTROLLER_PORT": str(cport),
        }
    )
    start(["kafka"], cfg)
    try:
        yield cfg
    finally:
        pgid = int((cfg.run_dir / "kafka" / "kafka.pid").read_text())
        stop(["kafka"], cfg)
        assert not {kport, cport} & listening_ports()
        assert not group_alive(pgid), "the broker's process group must be gone"


def test_kafka_stop_fails_fast_and_restart_recovers(own_kafka: InfraConfig) -> None:
    bootstrap = own_kafka.kafka_bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "outage"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )
    wait_until(
        lambda: topic in admin.list_topics(timeout=5).topics,
        timeout=30,
        message="topic not visible",
    )

    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "message.timeout.ms": 3000,
            "socket.connection.setup.timeout.ms": 1000,
            "reconnect.backoff.max.ms": 500,
        }
    )
    for i in range(10):
        producer.produce(topic, value=f"before-{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert failures == []

    try:
        stop(["kafka"], own_kafka)  # the broker goes away under a connected producer
        assert own_kafka.kafka_port not in listening_ports()

        # producer: the delivery report carries a clear timeout error, within the deadline
        t0 = time.monotonic()
        producer.produce(topic, value=b"during-outage", on_delivery=on_delivery)
        remaining = producer.flush(10)
        elapsed = time.monotonic() - t0
        assert remaining == 0, "flush must not leave messages queued after message.timeout.ms"
        assert elapsed < 10
        assert [e.code() for e in failures] == [KafkaError._MSG_TIMED_OUT]

        # admin: metadata request times out with a KafkaException, not a hang
        t0 = time.monotonic()
        with pytest.raises(KafkaException) as exc:
            admin.list_topics(timeout=2)
        assert time.monotonic() - t0 < 5
        assert exc.value.args[0].code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT)

        # consumer: polls return within their timeout and the error callback reports the outage
        errors: list[KafkaError] = []
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "outage-group",
                "auto.offset.reset": "earliest",
                "socket.connection.setup.timeout.ms": 1000,
                "error_cb": errors.append,
            }
        )
        try:
            consumer.subscribe([topic])

            def outage_reported() -> bool:
                t = time.monotonic()
                msg = consumer.poll(0.2)
                assert time.monotonic() - t < 2, "poll blocked past its timeout"
                assert msg is None or msg.error() is not None
                return any(
                    e.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
                    for e in errors
                )

            wait_until(outage_reported, timeout=15, message=lambda: f"errors seen: {errors}")
        finally:
            consumer.close()
    finally:
        start(["kafka"], own_kafka)  # restart through the script; waits until ready

    # after the restart the data is still there and clients work again
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "after-restart",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        values: list[bytes] = []

        def all_back() -> bool:
            for m in consumer.consume(num_messages=10, timeout=0.5):
                assert m.error() is None, m.error()
                values.append(m.value() or b"")
            return len(values) >= 10

        wait_until(all_back, timeout=60, message=lambda: f"read {values}")
        assert values == [f"before-{i}".encode() for i in range(10)]
    finally:
        consumer.close()
    failures.clear()
    producer.produce(topic, value=b"after-restart", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert failures == []
