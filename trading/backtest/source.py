"""The rows a backtest replays: ``ta_signals`` FINAL from ClickHouse, in the trading cursor's
order, streamed a block at a time, and the checks that refuse a window that cannot be replayed.

Why the live reader (:class:`trading.adapters.clickhouse_signals.ClickHouseSignalReader`):
the same selection, order, deduplication and conversion as the trading flow, so a backtest sees
the rows the live loop saw (bad rows are dead-lettered and skipped by both).

Why chunks of event time, each one query streamed in blocks: the table is ordered by ``(symbol,
event_ts, seq)``, so a query for a stretch of event time reads every granule (8,192 rows) that
holds any of it, for every symbol — at one row a second, more than two hours of each symbol.
Short pages (50,000 rows, the previous design) each read most of the window again: a trading
day of 500 symbols took 377 CPU-s to read. One query for the whole window reads it once but
ClickHouse sorts all of it in memory before the first row (+2.7 GB for that day; the embedded
engine did not spill the sort). A chunk of about ``chunk_rows`` rows in between: 69 CPU-s and
+0.4–0.6 GB for the day at 500,000 rows, the same for any window length. Neither size is part
of the configuration: they change no result.

Refused before anything runs, each with a message that says what to change:
:class:`UnknownStrategy`, :class:`UnknownSymbol` (no signal rows for it at all),
:class:`WindowBeyondTtl` (the window starts before the oldest event time the table's TTL
keeps — checked against the wall clock, which decides nothing else), :class:`EmptyWindow`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timedelta

from torghut.clickhouse import Client, quote_ident
from torghut.clickhouse.ttl import table_ttls
from trading.adapters.clickhouse_signals import ClickHouseSignalReader
from trading.backtest.config import BacktestConfig
from trading.core.domain import SignalRow
from trading.core.strategies import REGISTRY

__all__ = [
    "BacktestInputError",
    "EmptyWindow",
    "SignalSource",
    "UnknownStrategy",
    "UnknownSymbol",
    "WindowBeyondTtl",
    "check_strategies",
]

_MIN_SPAN = timedelta(seconds=1)


class BacktestInputError(ValueError):
    """A backtest that cannot run as asked; the message says why and what to change."""


class EmptyWindow(BacktestInputError):
    pass


class UnknownSymbol(BacktestInputError):
    pass


class UnknownStrategy(BacktestInputError):
    pass


class WindowBeyondTtl(BacktestInputError):
    pass


def check_strategies(config: BacktestConfig) -> None:
    unknown = sorted(
        {s for s in (*config.strategies, *config.strategy_params) if s not in REGISTRY}
    )
    if unknown:
        raise UnknownStrategy(f"unknown strategy id(s) {unknown}; known: {sorted(REGISTRY)}")


class SignalSource:
    """The window's rows (``[start, end)``), in cursor order, and the checks before them."""

    def __init__(
        self,
        client: Client,
        config: BacktestConfig,
        *,
        batch_size: int = 50_000,
        chunk_rows: int = 500_000,
    ) -> None:
        """``batch_size``: rows per streamed block; ``chunk_rows``: about how many rows one
        query reads (a chunk of the window's event time, from the window's count)."""
        if batch_size <= 0 or chunk_rows <= 0:
            raise ValueError("batch_size and chunk_rows must be positive")
        self._client = client
        self._config = config
        self._batch = batch_size
        self._chunk = chunk_rows
        self._rows: int | None = None
        self._reader = ClickHouseSignalReader(
            client,
            table=config.table,
            schema="envelope",
            window_size=config.window_size,
            symbols=config.symbols,
            settle=timedelta(0),
        )
        self.dead_rows = 0

    def check(self, now: datetime) -> int:
        """Refuse unknown strategies and symbols, a window beyond the TTL, an empty window;
        return the number of rows in the window."""
        cfg = self._config
        check_strategies(cfg)
        table = quote_ident(cfg.table)
        known = {
            str(r[0])
            for r in self._client.query(
                f"SELECT DISTINCT symbol FROM {table} WHERE window_size = {{w:String}} "
                "AND symbol IN {s:Array(String)}",
                parameters={"w": cfg.window_size, "s": list(cfg.symbols)},
            ).result_rows
        }
        missing = sorted(set(cfg.symbols) - known)
        if missing:
            raise UnknownSymbol(
                f"unknown symbol(s) {missing}: {cfg.table} has no {cfg.window_size} signal rows "
                "for them at all"
            )
        database = str(self._client.query("SELECT currentDatabase()").result_rows[0][0])
        ttl = table_ttls(self._client, database, [cfg.table]).get(cfg.table)
        if ttl is not None and cfg.start < now - ttl:
            raise WindowBeyondTtl(
                f"window starts at {cfg.start.isoformat()}, but {cfg.table} keeps rows for "
                f"{ttl} (its TTL): nothing older than {(now - ttl).isoformat()} is left to "
                "replay. Choose a more recent window."
            )
        rows = self._count()
        if rows == 0:
            raise EmptyWindow(
                f"no final {cfg.window_size} signal rows in {cfg.table} for {list(cfg.symbols)} "
                f"between {cfg.start.isoformat()} and {cfg.end.isoformat()}"
            )
        return rows

    def _count(self) -> int:
        """The window's final rows (counted once: the chunks' span is derived from it)."""
        if self._rows is None:
            cfg = self._config
            self._rows = int(
                self._client.query(
                    f"SELECT count() FROM {quote_ident(cfg.table)} FINAL "
                    "WHERE window_size = {w:String} AND is_final = 1 "
                    "AND symbol IN {s:Array(String)} AND event_ts >= {a:DateTime64(3, 'UTC')} "
                    "AND event_ts < {b:DateTime64(3, 'UTC')}",
                    parameters={
                        "w": cfg.window_size,
                        "s": list(cfg.symbols),
                        "a": cfg.start,
                        "b": cfg.end,
                    },
                ).result_rows[0][0]
            )
        return self._rows

    def rows(
        self, progress: Callable[[int], None] = lambda _: None
    ) -> Generator[SignalRow, None, None]:
        """The window's rows in cursor order, chunk by chunk; ``progress`` gets each block's
        size."""
        cfg = self._config
        span = max(_MIN_SPAN, (cfg.end - cfg.start) * self._chunk / max(1, self._count()))
        start = cfg.start
        while start < cfg.end:
            end = min(start + span, cfg.end)
            for batch in self._reader.window(start, end, block_rows=self._batch):
                self.dead_rows += len(batch.dead_letters)
                yield from batch.rows
                progress(batch.size)
            start = end
