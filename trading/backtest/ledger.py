"""The backtest's books: positions, cash, fees and realised trades per symbol, and the sampled
equity curves the metrics are computed on.

Why a ledger next to the paper book: the book knows positions and cash, but not what the report
needs — the profit of each closing trade after its fees and its share of the entry fees, traded
notional, and an equity curve per symbol. Everything is ``Decimal`` until the metrics (floats).
Positions are marked at the close of the symbol's last signal row.

The open positions' market values (their sum, and the sum of their absolute values — the gross
exposure) are kept as aggregates, re-marked only for the symbols whose close or quantity changed
since they were last asked for (:meth:`Ledger.positions`): a decision costs the same with 5
open positions or 500. Decimal sums are exact, so the aggregates equal a re-summing.

Curves are sampled when event time enters a new ``period`` (label: the last event time of the
period just ended), plus a first point (the initial cash at the window start) and a last point
at the end, so their length depends on the window, not on the number of rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import msgspec

from torghut.sim.broker.book import Fill
from trading.core.ports import PositionSnapshot

__all__ = ["Ledger", "LedgerExposure", "SymbolBook", "TradeRecord"]

ZERO = Decimal(0)


class TradeRecord(msgspec.Struct, frozen=True, array_like=True):
    """One fill; ``profit`` is set when it closed (part of) a position."""

    ts: datetime
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    profit: Decimal | None
    client_order_id: str


@dataclass
class SymbolBook:
    qty: Decimal = ZERO
    avg: Decimal = ZERO
    cash: Decimal = ZERO
    fees: Decimal = ZERO
    entry_fees: Decimal = ZERO
    notional: Decimal = ZERO
    fills: int = 0
    close: float = 0.0
    marked: Decimal | None = None
    exposed: int = 0
    profits: list[Decimal] = field(default_factory=list)
    curve: list[Decimal] = field(default_factory=list)
    prices: list[tuple[datetime, Decimal]] = field(default_factory=list)

    @property
    def mark(self) -> Decimal:
        """The last close, exactly as the row printed it (parsed once per close)."""
        if self.marked is None:
            self.marked = _decimal(self.close)
        return self.marked

    @property
    def pnl(self) -> Decimal:
        return self.cash - self.fees + (self.qty * self.mark if self.qty else ZERO)


@lru_cache(maxsize=1 << 16)
def _decimal(close: float) -> Decimal:
    """``Decimal(repr(close))``, remembered: an open position is re-marked at every new close,
    and one symbol's closes repeat on its price grid. Closes are positive
    (:meth:`ReplayQuotes.update` drops the others), so no two equal keys (0.0 and -0.0) print
    differently."""
    return Decimal(repr(close))


@dataclass(frozen=True, slots=True)
class LedgerExposure:
    """The risk engine's :class:`~trading.core.risk.Exposure` of a positions snapshot, from
    the ledger's aggregate (``gross``: the sum of every position's absolute market value)."""

    positions: Mapping[str, PositionSnapshot]
    gross: Decimal

    def held(self, symbol: str) -> Decimal:
        position = self.positions.get(symbol)
        return position.qty if position is not None else ZERO

    def others(self, symbol: str) -> Decimal:
        position = self.positions.get(symbol)
        return self.gross - abs(position.market_value) if position is not None else self.gross


class Ledger:
    def __init__(
        self, initial_cash: Decimal, start: datetime, period: timedelta, record_limit: int
    ) -> None:
        self.initial_cash = initial_cash
        self._record_limit = record_limit
        self._start = start
        self._period = period
        self._bucket: int | None = None
        self._last_ts: datetime | None = None
        self._sampled_ts: datetime | None = None
        self.books: dict[str, SymbolBook] = {}
        self._flow = ZERO
        """Cash moved by every fill, fees included (equity = cash + flow + positions)."""
        self._closes: dict[str, float] = {}
        self._positions: dict[str, PositionSnapshot] = {}
        """Each open position at its mark (what the broker's position list holds), as of the
        last :meth:`positions` call."""
        self._stale: dict[str, None] = {}
        """Symbols whose close or quantity changed since (in the order they changed)."""
        self._held = ZERO
        self._gross = ZERO
        self.times: list[datetime] = [start]
        self.equity: list[Decimal] = [initial_cash]
        self.exposed = 0
        self.trades: list[TradeRecord] = []

    def advance(self, ts: datetime) -> None:
        """Event time moves to ``ts`` (before its rows are applied)."""
        bucket = (ts - self._start) // self._period
        if self._bucket is not None and bucket != self._bucket and self._last_ts is not None:
            self._sample(self._last_ts)
        self._bucket = bucket
        self._last_ts = ts

    def mark(self, symbol: str, close: float) -> None:
        book = self.books.get(symbol)
        if book is None:
            self._closes[symbol] = close  # a symbol's first fill starts its book at this close
        elif book.close != close:
            book.close = close
            book.marked = None
            if book.qty:
                self._stale[symbol] = None

    def fill(self, fill: Fill, fee: Decimal) -> None:
        book = self.books.get(fill.symbol)
        if book is None:
            book = self.books[fill.symbol] = SymbolBook()
            book.close = self._closes.get(fill.symbol, float(fill.price))
            book.curve = [ZERO] * len(self.times)
            book.prices = [(t, book.mark) for t in self.times[-1:]]
        qty, price = fill.qty, fill.price
        signed = qty if fill.side == "buy" else -qty
        book.cash -= signed * price
        book.fees += fee
        self._flow -= signed * price + fee
        book.notional += qty * price
        book.fills += 1
        profit: Decimal | None = None
        if book.qty == 0 or (book.qty > 0) == (signed > 0):
            held = abs(book.qty)
            book.avg = (book.avg * held + price * qty) / (held + qty)
            book.entry_fees += fee
            book.qty += signed
        else:
            held = abs(book.qty)
            closing = min(qty, held)
            direction = 1 if book.qty > 0 else -1
            entry_share = book.entry_fees * closing / held
            exit_share = fee * closing / qty
            profit = (price - book.avg) * closing * direction - entry_share - exit_share
            book.profits.append(profit)
            book.entry_fees -= entry_share
            book.qty += signed
            opened = qty - closing
            if opened > 0:
                book.avg = price
                book.entry_fees = fee * opened / qty
            elif book.qty == 0:
                book.avg = ZERO
                book.entry_fees = ZERO
        self._stale[fill.symbol] = None
        if len(self.trades) >= self._record_limit:
            return
        self.trades.append(
            TradeRecord(
                fill.timestamp,
                fill.symbol,
                fill.side,
                qty,
                price,
                fee,
                profit,
                fill.client_order_id,
            )
        )

    def equity_now(self) -> Decimal:
        self._revalue()
        return self.initial_cash + self._flow + self._held

    def positions(self) -> tuple[tuple[PositionSnapshot, ...], LedgerExposure, Decimal]:
        """The open positions at their marks, their exposure, and their net market value."""
        self._revalue()
        snapshot = dict(self._positions)
        return tuple(snapshot.values()), LedgerExposure(snapshot, self._gross), self._held

    def _revalue(self) -> None:
        """Re-mark the positions whose close or quantity changed; keep the sums."""
        if not self._stale:
            return
        positions, books = self._positions, self.books
        held, gross = self._held, self._gross
        for symbol in self._stale:
            old = positions.get(symbol)
            if old is not None:
                value = old.market_value
                held -= value
                gross -= abs(value)
            book = books[symbol]
            qty = book.qty
            if not qty:
                positions.pop(symbol, None)
                continue
            value = qty * book.mark
            positions[symbol] = PositionSnapshot(symbol, qty, value, book.avg)
            held += value
            gross += abs(value)
        self._held, self._gross = held, gross
        self._stale = {}

    def finish(self, last: datetime) -> None:
        if self._last_ts is not None and self._sampled_ts != self._last_ts:
            self._sample(self._last_ts)
        elif self._last_ts is None and self.times[-1] != last:
            self._sample(last)

    def _sample(self, at: datetime) -> None:
        total = self.initial_cash
        any_open = False
        for book in self.books.values():
            pnl = book.pnl
            total += pnl
            book.curve.append(pnl)
            book.prices.append((at, book.mark))
            if book.qty != 0:
                book.exposed += 1
                any_open = True
        self.times.append(at)
        self.equity.append(total)
        self.exposed += any_open
        self._sampled_ts = at
