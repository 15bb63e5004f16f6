"""Row converters round-trip through ClickHouse; every reader deduplicates with FINAL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from torghut.clickhouse import (
    MICROBAR_COLUMNS,
    SIGNAL_COLUMNS,
    Client,
    bars,
    latest_signals,
    microbar_row,
    signal_row,
)
from torghut.events import Envelope, Microbar, Signal, Window

T0 = datetime(2026, 11, 24, 15, 0, 0, tzinfo=UTC)


def _bar(
    symbol: str, second: int, c: float, ingest_delay_ms: int = 0, version: int = 1
) -> Envelope[Microbar]:
    end = T0 + timedelta(seconds=second)
    return Envelope(
        event_ts=end,
        ingest_ts=end + timedelta(milliseconds=5 + ingest_delay_ms),
        symbol=symbol,
        seq=second,
        payload=Microbar(o=c - 1, h=c + 1, l=c - 2, c=c, v=100.0, vwap=c - 0.5, count=3),
        window=Window(size="PT1S", start=end - timedelta(seconds=1), end=end),
        version=version,
        source="ta",
    )


def _signal(
    symbol: str, second: int, macd: float | None, seq: int = 0, ingest_ms: int = 5
) -> Envelope[Signal]:
    end = T0 + timedelta(seconds=second)
    return Envelope(
        event_ts=end,
        ingest_ts=end + timedelta(milliseconds=ingest_ms),
        symbol=symbol,
        seq=seq,
        payload=Signal(macd=macd, rsi14=51.5, imbalance_bid_sz=300, close=101.25),
        window=Window(size="PT1S", start=end - timedelta(seconds=1), end=end),
        source="ta",
    )


def test_microbars_round_trip_and_corrections_replace(ch: Client) -> None:
    original = [_bar("AAPL", s, 100.0 + s) for s in range(5)]
    corrected = _bar("AAPL", 2, 555.0, ingest_delay_ms=900, version=2)
    ch.insert("ta_microbars", [microbar_row(b) for b in original], column_names=MICROBAR_COLUMNS)
    ch.insert("ta_microbars", [microbar_row(corrected)], column_names=MICROBAR_COLUMNS)
    ch.insert("ta_microbars", [microbar_row(_bar("MSFT", 1, 9.0))], column_names=MICROBAR_COLUMNS)

    got = bars(ch, "AAPL", T0, T0 + timedelta(seconds=4))
    assert got == [original[0], original[1], corrected, original[3]]
    assert ch.command("SELECT count() FROM ta_microbars WHERE symbol = 'AAPL'") == 6


def test_latest_signals_newest_first_deduplicated(ch: Client) -> None:
    sigs = [_signal("NVDA", s, float(s)) for s in range(6)]
    replayed = [_signal("NVDA", s, float(s), ingest_ms=50) for s in range(3, 6)]
    ch.insert("ta_signals", [signal_row(s) for s in sigs], column_names=SIGNAL_COLUMNS)
    ch.insert("ta_signals", [signal_row(s) for s in replayed], column_names=SIGNAL_COLUMNS)

    assert latest_signals(ch, "NVDA", limit=3) == list(reversed(replayed))
    assert latest_signals(ch, "NVDA", since=T0 + timedelta(seconds=4)) == [replayed[2], replayed[1]]
    assert latest_signals(ch, "NVDA", window_size="PT1M") == []


def test_flat_view_projects_signal_columns(ch: Client) -> None:
    ch.insert("ta_signals", [signal_row(_signal("SPY", 1, 0.25))], column_names=SIGNAL_COLUMNS)
    ch.insert(
        "ta_signals", [signal_row(_signal("SPY", 1, 0.5, ingest_ms=9))], column_names=SIGNAL_COLUMNS
    )
    rows = ch.query(
        "SELECT ts, symbol, macd, rsi, timeframe, price, JSONExtractFloat(signal_json, 'macd'),"
        " JSONExtractUInt(signal_json, 'imbalance_bid_sz') FROM ta_signals_flat"
    ).result_rows
    assert rows == [(T0 + timedelta(seconds=1), "SPY", 0.5, 51.5, "PT1S", 101.25, 0.5, 300)]


def test_a_row_without_window_is_refused() -> None:
    env = Envelope(event_ts=T0, ingest_ts=T0, symbol="AAPL", seq=1, payload=Signal())
    with pytest.raises(ValueError, match="needs a window"):
        signal_row(env)
