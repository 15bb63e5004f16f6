"""Where the paper broker gets the touch it fills against.

The market simulator implements :class:`QuoteSource`; the broker simulator depends only on this
protocol, so either can run alone (with :class:`StaticQuotes`) or both in one process.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Protocol


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


class StaticQuotes:
    """A fixed book, for tests and for running the broker without a market."""

    def __init__(self, touches: dict[str, Touch]) -> None:
        self._touches = dict(touches)

    def set(self, symbol: str, touch: Touch) -> None:
        self._touches[symbol] = touch

    def latest_quote(self, symbol: str) -> Touch | None:
        return self._touches.get(symbol)
