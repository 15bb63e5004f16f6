"""Ingest dataflow: Alpaca market-data websocket → dedup → Kafka ``torghut.*.v1`` topics.

Run it the Bytewax way (one process; the source holds the single Alpaca connection)::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 ALPACA_DATA_WS_URL=ws://127.0.0.1:8765/v2/iex \\
    python -m bytewax.run dataflows.ingest:flow

Create the topics first (``python -m torghut.kafka.topics``), so they get the retention and
cleanup policies of ``infra/kafka/topics.toml`` rather than broker defaults.

Wiring only: the steps live in :mod:`operators.market_events` (source, decode, dedup,
heartbeats) and :mod:`operators.kafka_io` (the sink). ``flow`` is built on first access from
``load_settings()``, so importing this module for :func:`build_flow` reads no environment. When
built for ``bytewax.run``, SIGTERM/SIGINT end the source cleanly (EOF), so the sinks flush
before the process exits instead of crashing mid-batch.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from operators.alpaca_ws import AlpacaWsConfig, AlpacaWsSource
from operators.kafka_io import KafkaSink, encode_dead_letter, encode_keyed
from operators.market_events import IngestCounters, by_family, market_events
from torghut.config import Settings, SettingsError, load_settings
from torghut.gc_policy import tune_for_streaming
from torghut.logs import configure_logging
from torghut.observability.metrics import serve_dataflow_metrics
from torghut.observability.tracing import configure_tracing

__all__ = ["build_flow"]


def build_flow(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    source: AlpacaWsSource | None = None,
    counters: IngestCounters | None = None,
    **source_overrides: Any,
) -> Dataflow:
    """The ingest flow for ``settings``; ``stop`` ends it cleanly when set.

    ``source`` replaces the source built from ``settings.alpaca`` (``source_overrides`` tune
    that one, e.g. ``heartbeat_interval_s``); ``counters`` lets a caller read the totals.
    """
    kafka = settings.kafka
    if kafka.embedded:
        raise SettingsError(
            "KAFKA_BOOTSTRAP_SERVERS is empty: dataflows.ingest publishes to Kafka; "
            "set it, or run the all-in-one embedded flow instead"
        )
    if source is None:
        source = AlpacaWsSource(
            AlpacaWsConfig.from_settings(settings.alpaca, **source_overrides), stop
        )
    counters = counters if counters is not None else IngestCounters()
    producer = kafka.client_config()

    flow = Dataflow("torghut_ingest")
    items = op.input("alpaca_ws", flow, source)
    market = market_events(
        "market", items, settings.ta.dedup_window_s, settings.ta.dedup_max_keys, counters
    )
    families = by_family("route", market.events, counters)
    status = op.merge("status_and_heartbeats", families.status, market.heartbeats)
    outputs: tuple[tuple[str, Stream[Any], str], ...] = (
        ("trades", families.trades, kafka.topic_trades),
        ("quotes", families.quotes, kafka.topic_quotes),
        ("bars", families.bars, kafka.topic_bars),
        ("status", status, kafka.topic_status),
    )
    # The websocket cannot replay, so waiting for each batch's acknowledgements would guard
    # nothing and only delay the next frames: the sinks fail the flow on a loss later instead.
    for name, stream, topic in outputs:
        encoded = op.map(f"{name}_encode", stream, encode_keyed)
        op.output(f"{name}_kafka", encoded, KafkaSink(producer, topic, await_each_batch=False))
    dead = op.map("dead_letter_encode", market.dead_letters, encode_dead_letter)
    dlq = KafkaSink(producer, kafka.topic_ingest_dlq, await_each_batch=False)
    op.output("dead_letter_kafka", dead, dlq)
    return flow


def _flow_for_bytewax_run() -> Dataflow:
    configure_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = load_settings()
    serve_dataflow_metrics(settings.metrics)
    configure_tracing(settings.tracing, "torghut-ingest")
    dataflow = build_flow(settings, stop=stop)
    tune_for_streaming()
    return dataflow


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        flow = _flow_for_bytewax_run()
        globals()["flow"] = flow
        return flow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
