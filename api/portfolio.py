"""Positions and PnL from the recorded fills: pure, deterministic, average-cost accounting.

Why computed from the store's executions and not asked of the broker: the audit trail is the
record an operator reconciles against (the broker's view is shown beside it, with the drift),
and the same fills always give the same PnL, by day and by symbol, whoever asks and when.

Method: average cost per symbol. A fill that adds to a position moves its average price; a fill
that reduces it realises ``(price - avg) * qty`` (long) or ``(avg - price) * qty`` (short); a
fill that crosses zero closes the old side at the average and opens the rest at its price.
Unrealised PnL marks the open quantity at a last price when one is known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

__all__ = ["Book", "Fill", "Holding", "ledger"]

ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    """A filled quantity at its average price; ``side`` is ``buy`` or ``sell``."""

    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    at: datetime


@dataclass
class Holding:
    """One symbol's open quantity (signed: negative = short), average price and realised PnL."""

    symbol: str
    qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized: Decimal = ZERO
    fills: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO

    def unrealized(self, last_price: Decimal | None) -> Decimal | None:
        if last_price is None:
            return None if self.qty else ZERO
        return (last_price - self.avg_price) * self.qty

    def apply(self, fill: Fill) -> Decimal:
        """Book ``fill``; returns the PnL it realised."""
        signed = fill.qty if fill.side == "buy" else -fill.qty
        self.fills += 1
        if fill.side == "buy":
            self.bought += fill.qty * fill.price
        else:
            self.sold += fill.qty * fill.price
        realized = ZERO
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = self.qty + signed
            self.avg_price = (self.avg_price * abs(self.qty) + fill.price * abs(signed)) / abs(
                total
            )
            self.qty = total
            return realized
        closing = min(abs(signed), abs(self.qty))
        direction = Decimal(1) if self.qty > 0 else Decimal(-1)
        realized = (fill.price - self.avg_price) * closing * direction
        self.realized += realized
        remainder = abs(signed) - closing
        self.qty += signed
        if self.qty == 0:
            self.avg_price = ZERO
        elif remainder > 0:  # crossed zero: the rest opens the other side at this price
            self.avg_price = fill.price
        return realized


@dataclass
class Book:
    """Every holding and the realised PnL per (UTC day, symbol)."""

    holdings: dict[str, Holding] = field(default_factory=dict)
    daily: dict[tuple[date, str], Decimal] = field(default_factory=dict)
    daily_fills: dict[tuple[date, str], int] = field(default_factory=dict)

    def realized(self) -> Decimal:
        return sum((h.realized for h in self.holdings.values()), ZERO)

    def marked(self, prices: Mapping[str, Decimal]) -> Decimal:
        """Unrealised PnL of every open holding with a known price."""
        total = ZERO
        for h in self.holdings.values():
            value = h.unrealized(prices.get(h.symbol))
            total += value if value is not None else ZERO
        return total


def ledger(fills: Iterable[Fill]) -> Book:
    """Book ``fills`` in time order (ties keep the given order)."""
    book = Book()
    for fill in sorted(fills, key=lambda f: f.at):
        holding = book.holdings.setdefault(fill.symbol, Holding(fill.symbol))
        realized = holding.apply(fill)
        key = (fill.at.date(), fill.symbol)
        book.daily[key] = book.daily.get(key, ZERO) + realized
        book.daily_fills[key] = book.daily_fills.get(key, 0) + 1
    return book
