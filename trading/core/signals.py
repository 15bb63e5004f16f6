"""What the signal source hands the trading loop besides good rows, and how far behind the
newest signal the loop reads.

Why in the core: the pipeline passes dead letters and corrections through in cursor order
(:mod:`trading.core.pipeline`), and risk derives its staleness bounds from the read delay,
whatever adapter reads the signals (:mod:`trading.adapters.clickhouse_signals` live, a replay in
a backtest).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from torghut.config import ClickHouseSettings, TaSettings, TradingSettings
from trading.core.domain import SignalRow
from trading.core.ports import SignalCursor

__all__ = [
    "SignalBatch",
    "SignalCorrection",
    "SignalDeadLetter",
    "settle_horizon",
    "signal_read_delay",
]


class SignalDeadLetter(msgspec.Struct, frozen=True):
    """A row the reader could not use; ``raw`` is a bounded text rendering of the row."""

    cursor: SignalCursor
    reason: str
    error: str
    raw: str
    at: datetime


class SignalCorrection(msgspec.Struct, frozen=True):
    """A newer version of a row the cursor had already passed (audited, never re-traded)."""

    cursor: SignalCursor
    version: int
    ingest_ts: datetime


class SignalBatch(msgspec.Struct, frozen=True):
    """One read: good rows and dead letters, and the cursor after the last of either."""

    rows: tuple[SignalRow, ...]
    dead_letters: tuple[SignalDeadLetter, ...]
    cursor: SignalCursor | None

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.dead_letters)


def settle_horizon(trading: TradingSettings, ta: TaSettings, ch: ClickHouseSettings) -> timedelta:
    """How late a final signal row can be inserted behind the newest one (module docstring).

    0 unless ``TRADING_SIGNAL_SETTLE_S`` says otherwise: the TA sink inserts each event
    second's final rows together (``ta`` and ``ch`` stay parameters: the horizon is a property
    of how the TA flow writes).
    """
    if trading.signal_settle_s is not None:
        return timedelta(seconds=trading.signal_settle_s)
    return timedelta(0)


def signal_read_delay(
    trading: TradingSettings, ta: TaSettings, ch: ClickHouseSettings
) -> timedelta:
    """How old a signal is, at the earliest, when this reader can read it: the TA flow emits a
    bar's signal once the feed has passed its end by the allowed lateness, the ClickHouse sink
    inserts it within one batch interval, and the reader stays the settle horizon behind the
    newest row. Risk derives its default staleness and lag bounds from it."""
    emitted = timedelta(milliseconds=ta.allowed_lateness_ms, seconds=ch.insert_batch_seconds)
    return emitted + settle_horizon(trading, ta, ch)
