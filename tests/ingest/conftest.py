"""Fixtures for the ingest tests: the market simulator, ingest settings on fresh topics, a flow
runner with a clean stop, and a Kafka reader."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import cluster_main, run_main
from confluent_kafka import Consumer, TopicPartition

from torghut.config import (
    AlpacaSettings,
    KafkaSettings,
    Settings,
)
from torghut.sim.market import MarketSimulator

SYMBOLS = ("AAPL", "MSFT", "NVDA", "SPY")


@dataclass
class IngestTopics:
    trades: str
    quotes: str
    bars: str
    status: str
    dlq: str

    def kafka_settings(self, bootstrap: str) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            topic_trades=self.trades,
            topic_quotes=self.quotes,
            topic_bars=self.bars,
            topic_status=self.status,
            topic_ingest_dlq=self.dlq,
        )


@pytest.fixture
def ingest_topics(unique_topic: Callable[..., str]) -> IngestTopics:
    return IngestTopics(
        trades=unique_topic("trades", partitions=3),
        quotes=unique_topic("quotes", partitions=3),
        bars=unique_topic("bars"),
        status=unique_topic("status"),
        dlq=unique_topic("dlq"),
    )


def make_settings(
    kafka: KafkaSettings, url: str, symbols: tuple[str, ...] = SYMBOLS, **alpaca: Any
) -> Settings:
    """Settings for an ingest against the simulator with test-sized back-offs."""
    alpaca_settings = AlpacaSettings(
        data_ws_url=url,
        symbols=symbols,
        reconnect_initial_s=alpaca.pop("reconnect_initial_s", 0.05),
        reconnect_max_s=alpaca.pop("reconnect_max_s", 0.5),
        connection_limited_backoff_s=alpaca.pop("connection_limited_backoff_s", 0.5),
        heartbeat_interval_s=alpaca.pop("heartbeat_interval_s", 0.2),
        **alpaca,
    )
    return Settings(kafka=kafka, alpaca=alpaca_settings)


@pytest.fixture
def run_sim() -> Iterator[Callable[[MarketSimulator], str]]:
    """Start simulators in threads for the test; stopped at teardown."""
    stack: list[Any] = []

    def start(sim: MarketSimulator) -> str:
        ctx = sim.run_in_thread()
        url = ctx.__enter__()
        stack.append(ctx)
        return url

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@dataclass
class RunningFlow:
    """A dataflow run by ``run_main`` in a thread; ``stop()`` ends it via the source's event."""

    stop_event: threading.Event
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "flow did not stop after its source was told to"
        if self.errors:
            raise self.errors[0]

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


@pytest.fixture
def run_flow() -> Iterator[Callable[..., RunningFlow]]:
    """Run a flow in a thread: ``run_main``, or ``cluster_main`` with ``workers`` > 1."""
    running: list[RunningFlow] = []

    def start(flow: Dataflow, stop: threading.Event, workers: int = 1) -> RunningFlow:
        errors: list[BaseException] = []

        def main() -> None:
            try:
                if workers == 1:
                    run_main(flow)
                else:
                    cluster_main(flow, [], 0, worker_count_per_proc=workers)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=main, name="ingest-flow", daemon=True)
        handle = RunningFlow(stop, thread, errors)
        running.append(handle)
        thread.start()
        return handle

    yield start
    for handle in running:
        handle.stop_event.set()
        handle.thread.join(30)


class TopicReader:
    """Reads one topic from the beginning, accumulating (key, value) per partition in order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"t-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
            }
        )
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self.records: list[tuple[int, str, bytes]] = []

    def poll(self) -> int:
        for msg in self._consumer.consume(10_000, timeout=0.2):
            err = msg.error()
            if err is not None:
                raise RuntimeError(str(err))
            key = msg.key()
            self.records.append((msg.partition(), key.decode() if key else "", msg.value()))
        return len(self.records)

    def values(self) -> list[bytes]:
        return [v for _, _, v in self.records]

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def topic_reader(kafka_bootstrap: str) -> Iterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        reader = TopicReader(kafka_bootstrap, topic)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
