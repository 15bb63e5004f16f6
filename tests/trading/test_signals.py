"""The ClickHouse signal reader on a real (embedded) ClickHouse: order, settle horizon,
corrections, dead letters, schema selection."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.trading.flow_fixtures import (
    ch_settings,
    crossing_signals,
    envelope,
    insert_signals,
    prepare_signals,
)
from trading.adapters.clickhouse_signals import (
    ClickHouseSignalReader,
    UnknownSignalSchema,
    resolve_schema,
)
from trading.core.ports import SignalCursor

T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
"""Recent: ``ta_signals`` has a 14-day TTL that would drop older rows under the test."""


@pytest.fixture
def signals_db(ch_client: Any, chdb_path: Path, ch_database: str) -> Any:
    prepare_signals(ch_client, ch_settings(chdb_path, ch_database))
    return ch_client


def _drain(reader: ClickHouseSignalReader, limit: int, *, bounded: bool = True) -> list[Any]:
    out: list[Any] = []
    cursor = None
    while True:
        batch = reader.read_batch(cursor, limit, bounded=bounded)
        if batch.size == 0:
            return out
        out.extend(batch.rows)
        out.extend(batch.dead_letters)
        cursor = batch.cursor


def test_rows_come_once_each_in_cursor_order_across_small_batches(signals_db: Any) -> None:
    rows = crossing_signals(T0, 7, symbols=("MSFT", "AAPL", "NVDA"))
    insert_signals(signals_db, list(reversed(rows)))
    insert_signals(signals_db, rows[:5])  # a replay of rows already stored: FINAL keeps one
    read = _drain(ClickHouseSignalReader(signals_db), limit=4)
    keys = [(r.event_ts, r.symbol, r.seq) for r in read]
    assert keys == sorted((e.event_ts, e.symbol, e.seq) for e in rows)
    assert len(set(keys)) == 21
    only_aapl = _drain(ClickHouseSignalReader(signals_db, symbols=("AAPL",)), limit=4)
    assert [r.symbol for r in only_aapl] == ["AAPL"] * 7


def test_same_second_rows_tie_break_on_symbol_then_seq(signals_db: Any) -> None:
    insert_signals(
        signals_db,
        [
            envelope("MSFT", T0, 2, close=1.0),
            envelope("AAPL", T0, 9, close=1.0),
            envelope("AAPL", T0, 3, close=1.0),
        ],
    )
    reader = ClickHouseSignalReader(signals_db)
    first = reader.read_batch(None, 1, bounded=True)
    rest = reader.read_batch(first.cursor, 10, bounded=True)
    assert [(r.symbol, r.seq) for r in (*first.rows, *rest.rows)] == [
        ("AAPL", 3),
        ("AAPL", 9),
        ("MSFT", 2),
    ]


def test_settle_horizon_waits_for_late_rows_of_other_symbols(signals_db: Any) -> None:
    insert_signals(
        signals_db, [envelope("MSFT", T0 + timedelta(seconds=i), i, close=1.0) for i in range(11)]
    )
    reader = ClickHouseSignalReader(signals_db, settle=timedelta(seconds=5))
    first = reader.read_batch(None, 100)
    assert [r.event_ts for r in first.rows][-1] == T0 + timedelta(seconds=5)
    # AAPL's bar for second 7 arrives late (within the settle horizon): not skipped.
    insert_signals(signals_db, [envelope("AAPL", T0 + timedelta(seconds=7), 7, close=1.0)])
    second = reader.read_batch(first.cursor, 100)
    assert ("AAPL", T0 + timedelta(seconds=7)) not in [(r.symbol, r.event_ts) for r in second.rows]
    insert_signals(signals_db, [envelope("MSFT", T0 + timedelta(seconds=20), 20, close=1.0)])
    third = reader.read_batch(second.cursor, 100)
    assert ("AAPL", T0 + timedelta(seconds=7)) in [(r.symbol, r.event_ts) for r in third.rows]
    assert third.rows[-1].event_ts == T0 + timedelta(seconds=10)


def test_only_final_rows_are_read_and_they_set_the_horizon(signals_db: Any) -> None:
    final = [envelope("MSFT", T0 + timedelta(seconds=i), i, close=1.0) for i in range(3)]
    provisional = [
        msgspec.structs.replace(
            envelope("MSFT", T0 + timedelta(seconds=i), i, close=2.0), is_final=False
        )
        for i in range(3, 6)
    ]
    insert_signals(signals_db, final + provisional)
    batch = ClickHouseSignalReader(signals_db, settle=timedelta(0)).read_batch(None, 100)
    assert [(r.event_ts, r.indicators.close) for r in batch.rows] == [
        (e.event_ts, 1.0) for e in final
    ]
    # the final row of second 3 replaces its provisional one (a later ingest_ts) and is read
    insert_signals(
        signals_db,
        [envelope("MSFT", T0 + timedelta(seconds=3), 3, close=3.0, ingest_ts=datetime.now(UTC))],
    )
    more = ClickHouseSignalReader(signals_db, settle=timedelta(0)).read_batch(batch.cursor, 100)
    assert [(r.event_ts, r.indicators.close) for r in more.rows] == [
        (T0 + timedelta(seconds=3), 3.0)
    ]


def test_empty_table_reads_nothing(signals_db: Any) -> None:
    batch = ClickHouseSignalReader(signals_db).read_batch(None, 10)
    assert batch.size == 0
    assert batch.cursor is None


def test_a_bad_row_is_dead_lettered_and_never_stalls_the_cursor(signals_db: Any) -> None:
    good = [envelope("AAPL", T0 + timedelta(seconds=i), i, close=10.0, macd=0.1) for i in range(3)]
    bad = [
        envelope("AAPL", T0 + timedelta(seconds=1), 100, close=10.0, macd=math.nan),
        envelope("MSFT", T0 + timedelta(seconds=1), 5, close=-1.0),
        envelope("NVDA", T0 + timedelta(seconds=1), 5, close=1.0, rsi14=math.inf),
    ]
    insert_signals(signals_db, good + bad)
    reader = ClickHouseSignalReader(signals_db)
    first = reader.read_batch(None, 2, bounded=True)
    second = reader.read_batch(first.cursor, 2, bounded=True)
    third = reader.read_batch(second.cursor, 10, bounded=True)
    rows = [r for b in (first, second, third) for r in b.rows]
    dead = [d for b in (first, second, third) for d in b.dead_letters]
    assert [(r.symbol, r.seq) for r in rows] == [("AAPL", 0), ("AAPL", 1), ("AAPL", 2)]
    assert {(d.cursor.symbol, d.reason) for d in dead} == {
        ("AAPL", "non_finite"),
        ("MSFT", "bad_close"),
        ("NVDA", "non_finite"),
    }
    assert third.cursor == SignalCursor("PT1S", T0 + timedelta(seconds=2), "AAPL", 2)
    assert reader.read_batch(third.cursor, 10, bounded=True).size == 0


def test_a_correction_of_a_consumed_row_is_reported_not_reread(signals_db: Any) -> None:
    t1 = datetime.now(UTC)
    insert_signals(
        signals_db,
        [
            envelope("AAPL", T0 + timedelta(seconds=i), i, close=10.0, ingest_ts=t1)
            for i in range(3)
        ],
    )
    reader = ClickHouseSignalReader(signals_db)
    first = reader.read_batch(None, 10, bounded=True)
    assert len(first.rows) == 3
    assert reader.corrections(first.cursor, t1) == []
    fixed = envelope(
        "AAPL",
        T0 + timedelta(seconds=1),
        1,
        close=11.0,
        version=2,
        ingest_ts=t1 + timedelta(seconds=1),
    )
    insert_signals(signals_db, [fixed])
    assert reader.read_batch(first.cursor, 10, bounded=True).size == 0
    found = reader.corrections(first.cursor, t1)
    assert [(c.cursor.seq, c.version) for c in found] == [(1, 2)]
    assert reader.corrections(first.cursor, found[-1].ingest_ts) == []


def test_schema_auto_envelope_and_flat(signals_db: Any) -> None:
    rows = crossing_signals(T0, 3)
    insert_signals(signals_db, rows)
    assert resolve_schema(signals_db, "ta_signals", "auto") == "envelope"
    assert resolve_schema(signals_db, "ta_signals_flat", "auto") == "flat"
    envelope_rows = _drain(ClickHouseSignalReader(signals_db, schema="envelope"), 100)
    flat = ClickHouseSignalReader(signals_db, schema="flat")
    assert flat.schema == "flat"
    flat_rows = _drain(flat, 2)
    assert [(r.symbol, r.event_ts, r.indicators) for r in flat_rows] == [
        (r.symbol, r.event_ts, r.indicators) for r in envelope_rows
    ]
    auto_flat = ClickHouseSignalReader(signals_db, table="ta_signals_flat")
    assert auto_flat.schema == "flat"
    assert len(_drain(auto_flat, 100)) == 6


def test_a_legacy_flat_table_without_signal_json(signals_db: Any) -> None:
    signals_db.command(
        "CREATE TABLE legacy (ts DateTime64(3, 'UTC'), symbol String, macd Nullable(Float64), "
        "macd_signal Nullable(Float64), rsi Nullable(Float64), price Nullable(Float64)) "
        "ENGINE = MergeTree ORDER BY (symbol, ts)"
    )
    signals_db.insert(
        "legacy",
        [
            [T0, "AAPL", 1.5, 1.0, 55.0, 187.0],
            [T0 + timedelta(seconds=1), "AAPL", 0.5, 1.0, 45.0, 186.0],
        ],
        column_names=["ts", "symbol", "macd", "macd_signal", "rsi", "price"],
    )
    reader = ClickHouseSignalReader(signals_db, table="legacy")
    rows = _drain(reader, 10)
    assert reader.schema == "flat"
    assert [(r.indicators.macd, r.indicators.rsi14, r.indicators.close) for r in rows] == [
        (1.5, 55.0, 187.0),
        (0.5, 45.0, 186.0),
    ]


def test_unknown_table_shape_fails_clearly(signals_db: Any) -> None:
    signals_db.command("CREATE TABLE odd (x UInt8) ENGINE = Memory")
    with pytest.raises(UnknownSignalSchema, match="neither event_ts"):
        resolve_schema(signals_db, "odd", "auto")
