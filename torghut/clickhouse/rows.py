"""Envelope <-> ClickHouse row conversion for ``ta_microbars`` and ``ta_signals``.

Why here: the column lists are the contract between the TA sink (writer) and the trading loop
and API (readers); keeping both directions next to the column lists means a column added by a
migration is added in one place. Column order follows ``infra/clickhouse/`` DDL, so rows can be
inserted with ``column_names=MICROBAR_COLUMNS`` / ``SIGNAL_COLUMNS``.

The converters are on the TA flow's hot path (one call per bar), so they build one flat tuple
with no intermediate dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from torghut.events import Envelope, Microbar, Signal, Window

__all__ = [
    "ENVELOPE_COLUMNS",
    "MICROBARS_TABLE",
    "MICROBAR_COLUMNS",
    "SIGNALS_TABLE",
    "SIGNAL_COLUMNS",
    "SIGNAL_VALUE_COLUMNS",
    "microbar_from_row",
    "microbar_row",
    "signal_from_row",
    "signal_row",
]

MICROBARS_TABLE = "ta_microbars"
SIGNALS_TABLE = "ta_signals"

ENVELOPE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "event_ts",
    "seq",
    "ingest_ts",
    "is_final",
    "source",
    "window_size",
    "window_step",
    "window_start",
    "window_end",
    "version",
)
"""Columns every TA table shares, in DDL order; the primary key is (symbol, event_ts, seq)."""

MICROBAR_COLUMNS: tuple[str, ...] = (*ENVELOPE_COLUMNS, "o", "h", "l", "c", "v", "vwap", "count")

SIGNAL_VALUE_COLUMNS: tuple[str, ...] = (
    "macd",
    "macd_signal",
    "macd_hist",
    "ema12",
    "ema26",
    "rsi14",
    "boll_mid",
    "boll_upper",
    "boll_lower",
    "vwap_session",
    "vwap_w5m",
    "imbalance_spread",
    "imbalance_bid_px",
    "imbalance_ask_px",
    "imbalance_bid_sz",
    "imbalance_ask_sz",
    "vol_realized_w60s",
    "close",
)
"""Indicator columns of ``ta_signals`` = the :class:`Signal` fields in order (``close`` is 0002)."""

SIGNAL_COLUMNS: tuple[str, ...] = (*ENVELOPE_COLUMNS, *SIGNAL_VALUE_COLUMNS)

_N_ENV = len(ENVELOPE_COLUMNS)


def microbar_row(env: Envelope[Microbar]) -> tuple[Any, ...]:
    """One ``ta_microbars`` row in :data:`MICROBAR_COLUMNS` order."""
    p = env.payload
    return (*_envelope_part(env), p.o, p.h, p.l, p.c, p.v, p.vwap, p.count)


def signal_row(env: Envelope[Signal]) -> tuple[Any, ...]:
    """One ``ta_signals`` row in :data:`SIGNAL_COLUMNS` order."""
    p = env.payload
    return (
        *_envelope_part(env),
        p.macd,
        p.macd_signal,
        p.macd_hist,
        p.ema12,
        p.ema26,
        p.rsi14,
        p.boll_mid,
        p.boll_upper,
        p.boll_lower,
        p.vwap_session,
        p.vwap_w5m,
        p.imbalance_spread,
        p.imbalance_bid_px,
        p.imbalance_ask_px,
        p.imbalance_bid_sz,
        p.imbalance_ask_sz,
        p.vol_realized_w60s,
        p.close,
    )


def microbar_from_row(row: Sequence[Any]) -> Envelope[Microbar]:
    """Inverse of :func:`microbar_row` for a row selected in :data:`MICROBAR_COLUMNS` order."""
    o, h, l, c, v, vwap, count = row[_N_ENV:]  # noqa: E741 - the domain's name
    return _envelope(row, Microbar(o=o, h=h, l=l, c=c, v=v, vwap=vwap, count=count))


def signal_from_row(row: Sequence[Any]) -> Envelope[Signal]:
    """Inverse of :func:`signal_row` for a row selected in :data:`SIGNAL_COLUMNS` order."""
    return _envelope(row, Signal(*row[_N_ENV:]))


def _envelope_part(env: Envelope[Any]) -> tuple[Any, ...]:
    w = env.window
    if w is None:
        raise ValueError(
            f"{env.symbol}@{env.event_ts.isoformat()} seq={env.seq}: a TA row needs a window "
            "(window_size is part of its identity: PT1S and PT1M never mix)"
        )
    return (
        env.symbol,
        env.event_ts,
        env.seq,
        env.ingest_ts,
        1 if env.is_final else 0,
        env.source,
        w.size,
        w.step,
        w.start,
        w.end,
        env.version,
    )


def _envelope(row: Sequence[Any], payload: Any) -> Envelope[Any]:
    symbol, event_ts, seq, ingest_ts, is_final, source, size, step, start, end, version = row[
        :_N_ENV
    ]
    return Envelope(
        event_ts=_utc(event_ts),
        ingest_ts=_utc(ingest_ts),
        symbol=symbol,
        seq=seq,
        payload=payload,
        is_final=bool(is_final),
        source=source,
        window=Window(size=size, step=step, start=_opt_utc(start), end=_opt_utc(end)),
        version=version,
    )


def _utc(ts: datetime) -> datetime:
    # Clients not opened by torghut.clickhouse.connect return naive datetimes that are UTC.
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _opt_utc(ts: datetime | None) -> datetime | None:
    return None if ts is None else _utc(ts)
