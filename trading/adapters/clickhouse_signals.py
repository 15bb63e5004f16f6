"""The ClickHouse signal reader: ``ta_signals`` rows strictly after a cursor, in cursor order.

Why each rule exists (the first Torghut's reader re-read rows and stalled on one bad row):

* **Order.** Rows come ``ORDER BY event_ts, symbol, seq`` within one ``window_size`` and the
  cursor (:class:`~trading.core.ports.SignalCursor`: ``window_size, event_ts, symbol, seq``)
  compares on exactly that tuple, so "strictly after the cursor" never re-reads or skips a stored
  row.
* **Final rows only.** The TA flow writes a provisional row (``is_final = 0``) as soon as the
  feed's time passes a bar end and the final one (``is_final = 1``) once the allowed lateness
  has passed too; signals are computed from final bars only. The trading loop acts on final
  rows (envelope schema: ``is_final = 1``), which change afterwards only by a versioned
  correction (below).
* **Settle horizon.** A cursor at ``(12:00:05, MSFT)`` would skip an ``AAPL`` row for
  ``12:00:04`` inserted a moment later, so a streaming read only returns rows with ``event_ts
  <= max(event_ts of final rows) - settle``. The TA flow's ClickHouse sink inserts the final
  rows of an event second together, in one insert, once every key group has published that
  second (it flushes on progress, see ``operators/clickhouse_sink.py``), so no final row is
  inserted behind a newer one and the default settle is 0: the decision lag is the poll
  interval plus one query, within the design's "< 2× poll interval". ``TRADING_SIGNAL_SETTLE_S``
  sets a horizon for other writers (a flat table, several TA processes, the sink's size or age
  fallback when progress stalls). The horizon is taken from the data, not the wall clock, so
  replays and backfills settle the same way. A bounded read (``TRADING_EXIT_AT_END``) reads
  everything: nothing is being inserted.
* **Deduplication.** Every read uses ``FINAL`` (the latest ``version`` of a key).
* **Corrections.** A higher ``version`` of a key the cursor has already passed is *not* read
  again and never traded again (the decision was made on what was known then; the decision
  hash would differ for a changed action and a second order would follow). It is detected by
  :meth:`ClickHouseSignalReader.corrections` (``version > 1`` and ``ingest_ts`` beyond a
  watermark kept in the source's state), counted and recorded for audit. Reporting is
  at-least-once: after a restart without recovery state the watermark restarts at the cursor's
  event time, so a correction may be reported twice, never missed.
* **Bad rows.** A row that does not convert (non-finite indicator, non-positive close, empty
  symbol, unparseable ``signal_json``) becomes a :class:`SignalDeadLetter` (metric, bounded log
  sample) and the cursor moves past it: it never stalls the reader.

``TRADING_SIGNAL_SCHEMA``: ``envelope`` reads the ``ta_signals`` columns; ``flat`` reads the
design's flat shape (``ts, symbol, ..., signal_json, timeframe``) from the configured table if
it has a ``ts`` column, else from its ``<table>_flat`` view; ``auto`` inspects
``system.columns`` of the configured table (``event_ts`` → envelope, ``ts`` → flat). Flat rows
have no ``seq``/``version``: their key is ``(timeframe, ts, symbol)`` with ``seq = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from prometheus_client import Counter

from torghut.clickhouse import Client, quote_ident
from torghut.clickhouse.rows import SIGNAL_VALUE_COLUMNS
from torghut.events import Signal
from torghut.logs import get_logger
from trading.adapters.system_clock import SystemClock
from trading.core.clock import Clock
from trading.core.domain import SignalRow
from trading.core.ports import SignalCursor
from trading.core.signals import SignalBatch, SignalCorrection, SignalDeadLetter

__all__ = [
    "ClickHouseSignalReader",
    "SignalSchema",
    "UnknownSignalSchema",
    "resolve_schema",
]

SignalSchema = Literal["envelope", "flat"]

_log = get_logger("trading.adapters.clickhouse_signals")
_TS = "DateTime64(3, 'UTC')"
_Converted = tuple[SignalCursor, SignalRow | None, tuple[str, str] | None]
"""A raw row's key, and its row or why it is dead (reason, error)."""
_LOG_SAMPLE = 20
"""Dead letters logged per reader in full; the rest are only counted."""

DEAD_LETTERS = Counter(
    "torghut_trading_signal_dead_letters_total",
    "Signal rows the trading reader could not use (cursor moved past them)",
    ["reason"],
)
CORRECTIONS = Counter(
    "torghut_trading_signal_corrections_total",
    "Corrections (higher version) of signal rows already consumed; recorded, never re-traded",
)
ROWS_READ = Counter("torghut_trading_signal_rows_total", "Signal rows read by the trading loop")

_FLAT_ALIASES: dict[str, str] = {
    "macd": "macd",
    "macd_signal": "macd_signal",
    "rsi14": "rsi14",
    "rsi": "rsi14",
    "ema": "ema12",
    "vwap": "vwap_session",
    "close": "close",
    "price": "close",
    "spread": "imbalance_spread",
}
"""Flat column → :class:`Signal` field, for flat tables without ``signal_json``."""


class UnknownSignalSchema(ValueError):
    """The configured signal table has neither ``event_ts`` nor ``ts``."""


def resolve_schema(client: Client, table: str, configured: str) -> SignalSchema:
    """``configured`` unless ``auto``; then the configured table's columns decide."""
    if configured == "envelope":
        return "envelope"
    if configured == "flat":
        return "flat"
    columns = _columns(client, table)
    if "event_ts" in columns:
        return "envelope"
    if "ts" in columns:
        return "flat"
    raise UnknownSignalSchema(
        f"table {table!r} has neither event_ts (envelope) nor ts (flat) columns: "
        f"{sorted(columns) or 'table not found'}; set TRADING_SIGNAL_TABLE/TRADING_SIGNAL_SCHEMA"
    )


class ClickHouseSignalReader:
    """Reads one ``window_size`` of signals after a cursor; implements ``SignalReader``."""

    def __init__(
        self,
        client: Client,
        *,
        table: str = "ta_signals",
        schema: str = "auto",
        window_size: str = "PT1S",
        symbols: Sequence[str] = (),
        settle: timedelta = timedelta(seconds=6),
        correction_lookback: timedelta = timedelta(seconds=120),
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._window = window_size
        self._symbols = list(symbols)
        self._settle = settle
        self._lookback = correction_lookback
        self._now = (clock or SystemClock()).now
        self.schema: SignalSchema = resolve_schema(client, table, schema)
        self._table = table
        self._relation = quote_ident(table)
        self._flat_columns: tuple[str, ...] = ()
        if self.schema == "flat":
            self._relation, self._flat_columns = self._flat_relation(table)
        self._logged = 0

    def read(self, after: SignalCursor | None, limit: int) -> Sequence[SignalRow]:
        """``SignalReader``: settled rows after ``after``; bad rows are counted and dropped."""
        return self.read_batch(after, limit).rows

    def read_batch(
        self, after: SignalCursor | None, limit: int, *, bounded: bool = False
    ) -> SignalBatch:
        """Up to ``limit`` rows after ``after``; settled only unless ``bounded``."""
        # Without a settle horizon the newest final row bounds nothing the read would not
        # return anyway: its query (a scan of the table, one per poll) is skipped.
        settled = not bounded and self._settle > timedelta(0)
        horizon = self._horizon() if settled else None
        if settled and horizon is None:
            return SignalBatch((), (), after)
        if self.schema == "envelope":
            return self._batch(
                self._select_envelope(after, limit, horizon), after, self._envelope_row
            )
        return self._batch(self._select_flat(after, limit, horizon), after, self._flat_row)

    def window(self, start: datetime, end: datetime, *, block_rows: int) -> Iterator[SignalBatch]:
        """Every final row with ``start <= event_ts < end``, in cursor order, from one query
        streamed a block of at most ``block_rows`` at a time (envelope schema).

        While the stream is open the client runs nothing else (the embedded engine holds its
        lock for it); ClickHouse sorts the whole range before the first block, so the caller
        bounds the range (:class:`trading.backtest.source.SignalSource`)."""
        if self.schema != "envelope":
            raise UnknownSignalSchema(
                f"windows are read from the envelope schema, not {self.schema}"
            )
        sql = self._envelope_sql([f"event_ts >= {{a:{_TS}}}", f"event_ts < {{b:{_TS}}}"], "")
        params = {"w": self._window, "symbols": self._symbols, "a": start, "b": end}
        settings = {"max_block_size": block_rows}
        cursor: SignalCursor | None = None
        with self._client.query_row_block_stream(
            sql, parameters=params, settings=settings
        ) as blocks:
            for block in blocks:
                batch = self._batch(block, cursor, self._envelope_row)
                cursor = batch.cursor
                yield batch

    def _batch(
        self,
        raw_rows: Sequence[Sequence[Any]],
        after: SignalCursor | None,
        convert: Callable[[Sequence[Any]], _Converted],
    ) -> SignalBatch:
        """Rows converted, bad ones as dead letters; the cursor after the last of either."""
        rows: list[SignalRow] = []
        dead: list[SignalDeadLetter] = []
        cursor = after
        for raw in raw_rows:
            key, row, problem = convert(raw)
            cursor = key
            if row is not None:
                rows.append(row)
            else:
                dead.append(self._dead_letter(key, problem or ("invalid", ""), raw))
        ROWS_READ.inc(len(rows))
        return SignalBatch(tuple(rows), tuple(dead), cursor)

    def corrections(
        self, cursor: SignalCursor | None, after_ingest: datetime | None, limit: int = 1000
    ) -> list[SignalCorrection]:
        """Rows at or before ``cursor`` re-versioned after ``after_ingest`` (envelope only).

        ``after_ingest`` ``None`` starts at the cursor's event time. Only the last
        ``correction_lookback`` of event time before the cursor is searched: the TA flow does not
        correct bars older than its correction horizon.
        """
        if cursor is None or self.schema != "envelope":
            return []
        since = after_ingest or cursor.event_ts
        sql = (
            f"SELECT symbol, event_ts, seq, version, ingest_ts FROM {self._relation} FINAL "
            "WHERE window_size = {w:String} AND version > 1 "
            f"AND ingest_ts > {{since:{_TS}}} AND event_ts >= {{low:{_TS}}} "
            "AND (event_ts, symbol, seq) <= "
            f"({{c_ts:{_TS}}}, {{c_symbol:String}}, {{c_seq:UInt64}}){self._symbol_filter()}"
            f" ORDER BY ingest_ts, event_ts, symbol, seq LIMIT {{n:UInt32}}"
        )
        params = {
            "w": self._window,
            "since": since,
            "low": cursor.event_ts - self._lookback,
            "c_ts": cursor.event_ts,
            "c_symbol": cursor.symbol,
            "c_seq": cursor.seq,
            "n": limit,
            "symbols": self._symbols,
        }
        found = [
            SignalCorrection(
                SignalCursor(self._window, _utc(ts), symbol, int(seq)), int(version), _utc(ingest)
            )
            for symbol, ts, seq, version, ingest in self._client.query(
                sql, parameters=params
            ).result_rows
        ]
        if found:
            CORRECTIONS.inc(len(found))
            for c in found[:_LOG_SAMPLE]:
                _log.warning(
                    "signal_correction_not_retraded",
                    symbol=c.cursor.symbol,
                    event_ts=c.cursor.event_ts.isoformat(),
                    seq=c.cursor.seq,
                    version=c.version,
                )
        return found

    # --- queries --------------------------------------------------------------------------

    def _horizon(self) -> datetime | None:
        ts_col = "event_ts" if self.schema == "envelope" else "ts"
        win_col = "window_size" if self.schema == "envelope" else "timeframe"
        where = f"WHERE {win_col} = {{w:String}}" if self._has_window_column() else ""
        if self.schema == "envelope":
            where += " AND is_final = 1"
        newest = self._client.query(
            f"SELECT max({ts_col}), count() FROM {self._relation} {where}",
            parameters={"w": self._window},
        ).result_rows
        if not newest or not newest[0][1]:
            return None
        return _utc(newest[0][0]) - self._settle

    def _select_envelope(
        self, after: SignalCursor | None, limit: int, horizon: datetime | None
    ) -> Sequence[Sequence[Any]]:
        where: list[str] = []
        params: dict[str, Any] = {"w": self._window, "n": limit, "symbols": self._symbols}
        if after is not None:
            # The plain bound is implied by the tuple one; ClickHouse prunes partitions and
            # granules (table ORDER BY (symbol, event_ts, seq)) on it, not on the tuple.
            where.append(f"event_ts >= {{c_ts:{_TS}}}")
            where.append(
                f"(event_ts, symbol, seq) > ({{c_ts:{_TS}}}, {{c_symbol:String}}, {{c_seq:UInt64}})"
            )
            params.update(c_ts=after.event_ts, c_symbol=after.symbol, c_seq=after.seq)
        if horizon is not None:
            where.append(f"event_ts <= {{h:{_TS}}}")
            params["h"] = horizon
        sql = self._envelope_sql(where, " LIMIT {n:UInt32}")
        return self._client.query(sql, parameters=params).result_rows

    def _envelope_sql(self, where: list[str], tail: str) -> str:
        """Final rows of the window size (parameters ``w``, ``symbols``) in cursor order."""
        cols = ("symbol", "event_ts", "seq", "window_size", "version", *SIGNAL_VALUE_COLUMNS)
        conditions = " AND ".join(["window_size = {w:String}", "is_final = 1", *where])
        return (
            f"SELECT {', '.join(cols)} FROM {self._relation} FINAL WHERE {conditions}"
            f"{self._symbol_filter()} ORDER BY event_ts, symbol, seq{tail}"
        )

    def _select_flat(
        self, after: SignalCursor | None, limit: int, horizon: datetime | None
    ) -> Sequence[Sequence[Any]]:
        where = ["timeframe = {w:String}"] if self._has_window_column() else []
        params: dict[str, Any] = {"w": self._window, "n": limit, "symbols": self._symbols}
        if after is not None:
            where.append(f"(ts, symbol) > ({{c_ts:{_TS}}}, {{c_symbol:String}})")
            params.update(c_ts=after.event_ts, c_symbol=after.symbol)
        if horizon is not None:
            where.append(f"ts <= {{h:{_TS}}}")
            params["h"] = horizon
        clause = f"WHERE {' AND '.join(where)}" if where else "WHERE 1"
        sql = (
            f"SELECT ts, symbol, {', '.join(self._flat_columns)} FROM {self._relation} "
            f"{clause}{self._symbol_filter()} ORDER BY ts, symbol LIMIT {{n:UInt32}}"
        )
        return self._client.query(sql, parameters=params).result_rows

    def _symbol_filter(self) -> str:
        return " AND symbol IN {symbols:Array(String)}" if self._symbols else ""

    def _has_window_column(self) -> bool:
        return self.schema == "envelope" or "timeframe" in self._flat_columns

    def _flat_relation(self, table: str) -> tuple[str, tuple[str, ...]]:
        columns = _columns(self._client, table)
        name = table if "ts" in columns else f"{table}_flat"
        if name != table:
            columns = _columns(self._client, name)
        if "ts" not in columns or "symbol" not in columns:
            raise UnknownSignalSchema(f"flat signal relation {name!r} needs ts and symbol columns")
        wanted = ["timeframe"] if "timeframe" in columns else []
        if "signal_json" in columns:
            wanted.append("signal_json")
        else:
            wanted.extend(c for c in _FLAT_ALIASES if c in columns)
        return quote_ident(name), tuple(wanted)

    # --- conversion -----------------------------------------------------------------------

    def _envelope_row(self, raw: Sequence[Any]) -> _Converted:
        symbol, event_ts, seq, window, version = raw[:5]
        key = SignalCursor(str(window), _utc(event_ts), str(symbol), int(seq))
        values = raw[5:]
        problem = _check(symbol, values)
        if problem is not None:
            return key, None, problem
        row = SignalRow(
            symbol=str(symbol),
            event_ts=key.event_ts,
            seq=key.seq,
            window_size=key.window_size,
            version=int(version),
            indicators=Signal(*values),
        )
        return key, row, None

    def _flat_row(self, raw: Sequence[Any]) -> _Converted:
        ts, symbol = raw[0], raw[1]
        named = dict(zip(self._flat_columns, raw[2:], strict=True))
        window = str(named.pop("timeframe", self._window))
        key = SignalCursor(window, _utc(ts), str(symbol), 0)
        try:
            if "signal_json" in named:
                signal = msgspec.json.decode(str(named["signal_json"]), type=Signal)
            else:
                fields = {_FLAT_ALIASES[c]: v for c, v in named.items() if v is not None}
                signal = msgspec.convert(fields, Signal)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return key, None, ("unparseable", str(exc))
        problem = _check(symbol, msgspec.structs.astuple(signal))
        if problem is not None:
            return key, None, problem
        row = SignalRow(str(symbol), key.event_ts, 0, window, 1, signal)
        return key, row, None

    def _dead_letter(
        self, key: SignalCursor, problem: tuple[str, str], raw: Sequence[Any]
    ) -> SignalDeadLetter:
        reason, error = problem
        DEAD_LETTERS.labels(reason=reason).inc()
        if self._logged < _LOG_SAMPLE:
            self._logged += 1
            _log.error(
                "signal_dead_letter",
                reason=reason,
                error=error,
                symbol=key.symbol,
                event_ts=key.event_ts.isoformat(),
                seq=key.seq,
            )
        return SignalDeadLetter(key, reason, error[:500], repr(tuple(raw))[:2000], self._now())


_CLOSE = SIGNAL_VALUE_COLUMNS.index("close")


def _check(symbol: Any, values: Sequence[Any]) -> tuple[str, str] | None:
    if not isinstance(symbol, str) or not symbol.strip():
        return ("bad_symbol", f"symbol {symbol!r}")
    names = SIGNAL_VALUE_COLUMNS
    if len(values) != len(names) or not math.isfinite(sum(filter(None, values))):
        # A non-finite float makes the (numeric) sum non-finite; only then is each value
        # looked at, for the first one to name (a finite sum that overflows lands here too).
        for name, v in zip(names, values, strict=True):
            if isinstance(v, float) and not math.isfinite(v):
                return ("non_finite", f"{name}={v}")
    close = values[_CLOSE]
    if close is not None and close <= 0:
        return ("bad_close", f"close={close}")
    return None


def _columns(client: Client, table: str) -> set[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
        parameters={"t": table},
    ).result_rows
    return {str(r[0]) for r in rows}


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
