"""Where the paper broker gets the touch it fills against.

The market simulator implements :class:`QuoteSource`; the broker simulator depends only on this
protocol, so either can run alone (with :class:`StaticQuotes`) or both in one process.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable


class Touch(NamedTuple):
    """Best bid and offer of one symbol at ``ts``."""

    bid_price: float
    bid_size: float
    ask_price: float
    ask_size: float
    ts: datetime


class QuoteSource(Protocol):
    """Anything that can tell the current touch of a symbol (``None`` if it has none)."""

    def latest_quote(self, symbol: str) -> Touch | None: ...


@runtime_checkable
class ChangeTrackingQuotes(QuoteSource, Protocol):
    """A quote source that also says which symbols' touch changed since it was last asked.

    Why: the broker's buying power marks every open position on each order; a source that
    reports its changes (a backtest's replayed quotes) lets it re-mark only those, so an order
    costs the same with 5 positions or 500. Exactly one consumer may drain the changes."""

    def take_changed(self) -> set[str]: ...


class StaticQuotes:
    """A fixed book, for tests and for running the broker without a market."""

    def __init__(self, touches: dict[str, Touch]) -> None:
        self._touches = dict(touches)

    def set(self, symbol: str, touch: Touch) -> None:
        self._touches[symbol] = touch

    def latest_quote(self, symbol: str) -> Touch | None:
        return self._touches.get(symbol)
