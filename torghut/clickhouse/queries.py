"""Read helpers over ``ta_signals`` / ``ta_microbars`` for the API.

Why they exist: the first Torghut's readers queried without ``FINAL`` and saw replayed and
corrected rows twice. Every helper here reads with ``FINAL``, so a row is the latest version
of its key ``(symbol, event_ts, seq)``. Results are :class:`torghut.events.Envelope` values,
the same types the TA flow produced. The trading loop reads signals after a cursor with its
own adapter, :class:`trading.adapters.clickhouse_signals.ClickHouseSignalReader` (one cursor,
one query order).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from torghut.clickhouse.client import Client
from torghut.clickhouse.rows import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    microbar_from_row,
    signal_from_row,
)
from torghut.events import Envelope, Microbar, Signal

__all__ = ["bars", "latest_signals", "signals_between"]

_SIGNAL_SELECT = f"SELECT {', '.join(SIGNAL_COLUMNS)} FROM {SIGNALS_TABLE} FINAL"
_BAR_SELECT = f"SELECT {', '.join(MICROBAR_COLUMNS)} FROM {MICROBARS_TABLE} FINAL"
_TS = "DateTime64(3, 'UTC')"


def latest_signals(
    client: Client,
    symbol: str,
    since: datetime | None = None,
    limit: int = 100,
    window_size: str = "PT1S",
) -> list[Envelope[Signal]]:
    """The newest ``limit`` signals of ``symbol``, newest first; ``event_ts >= since`` if given."""
    where = ["symbol = {symbol:String}", "window_size = {window:String}"]
    params: dict[str, Any] = {"symbol": symbol, "window": window_size, "limit": limit}
    if since is not None:
        where.append(f"event_ts >= {{since:{_TS}}}")
        params["since"] = since
    sql = (
        f"{_SIGNAL_SELECT} WHERE {' AND '.join(where)} "
        "ORDER BY event_ts DESC, seq DESC LIMIT {limit:UInt32}"
    )
    return [signal_from_row(r) for r in client.query(sql, parameters=params).result_rows]


def bars(
    client: Client,
    symbol: str,
    start: datetime,
    end: datetime,
    window_size: str = "PT1S",
    limit: int = 100_000,
) -> list[Envelope[Microbar]]:
    """Microbars of ``symbol`` with ``start <= event_ts < end``, oldest first."""
    rows = _between(client, _BAR_SELECT, symbol, start, end, window_size, limit)
    return [microbar_from_row(r) for r in rows]


def signals_between(
    client: Client,
    symbol: str,
    start: datetime,
    end: datetime,
    window_size: str = "PT1S",
    limit: int = 100_000,
) -> list[Envelope[Signal]]:
    """Signals of ``symbol`` with ``start <= event_ts < end``, oldest first."""
    rows = _between(client, _SIGNAL_SELECT, symbol, start, end, window_size, limit)
    return [signal_from_row(r) for r in rows]


def _between(
    client: Client,
    select: str,
    symbol: str,
    start: datetime,
    end: datetime,
    window_size: str,
    limit: int,
) -> Sequence[Sequence[Any]]:
    """Rows of one symbol and window with ``start <= event_ts < end``, oldest first."""
    sql = (
        f"{select} WHERE symbol = {{symbol:String}} AND window_size = {{window:String}} "
        f"AND event_ts >= {{start:{_TS}}} AND event_ts < {{end:{_TS}}} "
        "ORDER BY event_ts, seq LIMIT {limit:UInt32}"
    )
    params = {"symbol": symbol, "window": window_size, "start": start, "end": end, "limit": limit}
    rows: Sequence[Sequence[Any]] = client.query(sql, parameters=params).result_rows
    return rows
