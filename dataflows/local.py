"""The all-in-one embedded flow: Alpaca stream → ingest → TA → ClickHouse → trading, one process.

Why one process: the embedded ClickHouse (chdb) is an in-process engine that locks its data
directory, so with the embedded defaults every stage that touches it (the TA sink, the trading
signal reader, the API) must share one process. The stages are the same composable operators
the Kafka-joined dataflows use (:func:`operators.market_events.market_events`,
:func:`operators.ta_pipeline.ta_pipeline`, :func:`dataflows.trading.trading_pipeline`); only the
joints differ: streams instead of Kafka topics. What crosses the ingest → TA joint is what
would cross the Kafka topic, the encoded envelopes (:func:`operators.market_events.as_wire`),
so the TA stage takes the same compiled paths as in production. Against a ClickHouse server
and Kafka, run ``dataflows.ingest``, ``dataflows.ta`` and ``dataflows.trading`` as separate
processes instead.

Dead letters of every stage, decision outcomes and ingest heartbeats go to one JSON-lines audit
file (``TORGHUT_DATA_DIR/local-audit.jsonl``) besides the structured log, so nothing is lost
silently even without a dead-letter topic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.trading import TradingRuntime, signal_source, trading_pipeline
from dataflows.trading_audit import store_trading_audit
from operators.alpaca_decode import Frame
from operators.alpaca_ws import AlpacaWsConfig, AlpacaWsSource, SourceHeartbeat, SourceItem
from operators.clickhouse_sink import ClickHouseSink, clickhouse_sink, row_or_mark
from operators.joints import TypeSplit, split_type
from operators.key_groups import KeyGroupProgress
from operators.market_events import IngestCounters, as_wire, by_family, market_events
from operators.one_input import one_input
from operators.ta_pipeline import ta_pipeline
from operators.ta_status import TaProgress
from operators.trading_source import SignalItem
from torghut.clickhouse import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    Client,
    microbar_row,
    signal_row,
)
from torghut.config import Settings
from torghut.events import Envelope, Microbar
from torghut.logs import get_logger

__all__ = ["MOVED_STEPS", "LocalFlow", "build_local_flow"]

FLOW_ID = "local"
MOVED_STEPS = {"local.bars_clickhouse": "local.ta.bars_clickhouse"}
"""Steps renamed since recovery stores were first written (old id → new; the demo re-files
their state at start): the bars' sink moved into the TA step, before its indicator step."""
log = get_logger("dataflows.local")


@dataclass
class LocalFlow:
    """The built flow and the live objects an operator (the demo, a probe) can look at."""

    flow: Dataflow
    source: AlpacaWsSource
    counters: IngestCounters
    progress: TaProgress
    audit_path: Path


def build_local_flow(
    settings: Settings,
    runtime: TradingRuntime,
    ch_client: Callable[[], Client],
    *,
    stop: threading.Event,
) -> LocalFlow:
    """Wire ingest → TA → ClickHouse and ClickHouse → trading into one dataflow.

    ``stop`` ends the run cleanly: the Alpaca source disconnects and drains, the signal source
    ends, every stage flushes, and ``run_main`` returns.
    """
    flow = Dataflow(FLOW_ID)
    counters = IngestCounters()
    progress = TaProgress()
    source = AlpacaWsSource(
        AlpacaWsConfig.from_settings(settings.alpaca),
        stop=stop,
        on_drained=progress.mark_source_drained,
    )
    ta = settings.ta
    # One input step for the stream and the signal reader: Bytewax keeps an epoch clock per
    # input step, and two steps wait for each other at every epoch end (operators.one_input).
    signals = signal_source(runtime, ch_client, stop=stop)
    sources = one_input(source, signals)
    items = op.input("input", flow, sources)
    ws = (Frame, SourceHeartbeat)
    split: TypeSplit[SignalItem, SourceItem] = split_type("signals", items, ws)
    ingest = market_events("ingest", split.of_type, ta.dedup_window_s, ta.dedup_max_keys, counters)
    families = by_family("families", ingest.events, counters)
    # TA reads the bytes it would read from Kafka, so it runs the same (compiled) paths
    trades = as_wire("trades_wire", families.trades)
    quotes = as_wire("quotes_wire", families.quotes)
    bars = as_wire("bars_wire", families.bars)
    ch = settings.clickhouse

    def sink(table: str, columns: tuple[str, ...]) -> ClickHouseSink:
        return ClickHouseSink.configured(ch_client, table, columns, ch)

    def bar_sinks(_: object, updates: Stream[Envelope[Microbar] | KeyGroupProgress]) -> None:
        # built inside the TA step, before its indicator step (operators.ta_pipeline)
        bar_rows = op.map("bars_rows", updates, row_or_mark(microbar_row))
        clickhouse_sink("bars_clickhouse", bar_rows, sink(MICROBARS_TABLE, MICROBAR_COLUMNS))

    out = ta_pipeline("ta", trades, quotes, bars, ta, progress, bar_sinks)
    signal_rows = op.map("signals_rows", out.signal_updates, row_or_mark(signal_row))
    clickhouse_sink("signals_clickhouse", signal_rows, sink(SIGNALS_TABLE, SIGNAL_COLUMNS))

    trading = trading_pipeline("trading", split.rest, runtime)
    audit_path = settings.trading.dead_letter_path.parent / "local-audit.jsonl"
    audit = op.merge(
        "audit",
        op.map("ingest_dead", ingest.dead_letters, lambda d: ("ingest_dead_letter", d)),
        op.map("ta_dead", out.dead_letters, lambda d: ("ta_dead_letter", d)),
        op.map("trading_dead", trading.dead_letters, lambda d: ("signal_dead_letter", d)),
        op.map("corrections", trading.corrections, lambda c: ("signal_correction", c)),
        op.map("outcomes", trading.outcomes, lambda o: ("decision", o)),
        op.map("heartbeats", ingest.heartbeats, lambda h: ("ingest_status", h)),
        op.map("status", families.status, lambda s: ("market_status", s)),
    )
    op.output("audit_out", audit, _JsonLinesSink(audit_path))
    store_trading_audit(
        "trading_audit", trading.dead_letters, trading.corrections, runtime.dead_letters
    )
    return LocalFlow(flow, source, counters, progress, audit_path)


class _JsonLinesSink(DynamicSink[tuple[str, Any]]):
    """Appends ``{"kind": ..., "record": ...}`` lines; one file, written by worker 0's partition
    and any other worker's alike (appends of whole lines under O_APPEND do not interleave)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonLinesPartition:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return _JsonLinesPartition(self._path)


class _JsonLinesPartition(StatelessSinkPartition[tuple[str, Any]]):
    def __init__(self, path: Path) -> None:
        self._fh = path.open("ab")

    def write_batch(self, items: list[tuple[str, Any]]) -> None:
        self._fh.write(
            b"".join(_ENCODER.encode({"kind": k, "record": r}) + b"\n" for k, r in items)
        )
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


_ENCODER = msgspec.json.Encoder(enc_hook=str)
