"""The simulated market of a backtest: the touch the paper book fills against, and fees.

Why the paper broker's own engine (:class:`torghut.sim.broker.book.PaperBook`, through the
broker port :class:`trading.adapters.paper_book.PaperBookBroker`): the backtest must fill,
reserve buying power, refuse shorts and mark positions exactly as the paper broker the live
paper flow trades against does. What a backtest adds is only *which touch* the book sees (the
fill model, :class:`ReplayQuotes`), moved against the order by the slippage, and the fees of
each fill (:class:`FeeModel`), which the book does not charge: the ledger
(:mod:`trading.backtest.ledger`) subtracts them from cash and equity.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from torghut.sim.quotes import Touch
from trading.backtest.config import FillConfig
from trading.core.domain import SignalRow

__all__ = ["FeeModel", "ReplayQuotes"]

_BPS = Decimal(10_000)
_CENT = Decimal("0.01")
_PRICE_STEP = Decimal("0.000001")
_PRICES_KEPT = 1 << 16
"""Slipped prices remembered per side (a cache of a pure function, cleared when full)."""
_UNLIMITED = 1e12
"""Displayed size of a replayed touch: ``ta_signals`` keeps the quote at the bar close only, so
depth is not modelled (an order never fills partially)."""


class ReplayQuotes:
    """The touch of each symbol as the fill model sees it (a ``QuoteSource`` for the book).

    Each row's indicators are kept as they are; the touch is built only when the book asks for
    it (at a submit or a match), once per row: most rows never trade. The symbols whose touch
    changed are reported to the book (:meth:`take_changed`), which then re-marks only those
    positions for its buying power."""

    def __init__(self, fill: FillConfig) -> None:
        self._last: dict[str, SignalRow] = {}
        """Each symbol's last row with a usable close."""
        self._touch: dict[str, tuple[SignalRow, Touch]] = {}
        """The touch built from a symbol's row (stale once another row is its last)."""
        self._changed: set[str] = set()
        slip = fill.slippage_bps / _BPS
        self._bid_factor, self._ask_factor = 1 - slip, 1 + slip
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._at_close = fill.model == "next_bar"

    def update(self, row: SignalRow) -> float | None:
        """Take the row's quote; its close (``None`` for a row without a usable close)."""
        close = row.indicators.close
        if close is None or close <= 0:
            return None
        symbol = row.symbol
        self._last[symbol] = row
        self._changed.add(symbol)
        return close

    def take_changed(self) -> set[str]:
        """The symbols whose touch changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def latest_quote(self, symbol: str) -> Touch | None:
        row = self._last.get(symbol)
        if row is None:
            return None
        built = self._touch.get(symbol)
        if built is not None and built[0] is row:
            return built[1]
        ind, at = row.indicators, row.event_ts
        close = ind.close
        assert close is not None, "update keeps rows with a close only"
        bid = ask = close
        if not self._at_close and ind.imbalance_bid_px and ind.imbalance_ask_px:
            bid, ask = ind.imbalance_bid_px, ind.imbalance_ask_px
        touch = Touch(
            _slipped(self._bids, bid, self._bid_factor),
            _UNLIMITED,
            _slipped(self._asks, ask, self._ask_factor),
            _UNLIMITED,
            at,
        )
        self._touch[symbol] = (row, touch)
        return touch


class FeeModel:
    def __init__(self, fill: FillConfig) -> None:
        self._per_share = fill.fee_per_share
        self._rate = fill.fee_bps / _BPS
        self._min = fill.min_fee

    def fee(self, qty: Decimal, price: Decimal) -> Decimal:
        raw = qty * self._per_share + qty * price * self._rate
        return max(raw, self._min).quantize(_CENT, rounding=ROUND_HALF_UP)


def _slipped(cache: dict[float, float], price: float, factor: Decimal) -> float:
    """``price`` (as printed) moved by the slippage ``factor``, on the price grid."""
    moved = cache.get(price)
    if moved is None:
        if len(cache) >= _PRICES_KEPT:
            cache.clear()
        moved = cache[price] = _price(Decimal(repr(price)) * factor)
    return moved


def _price(value: Decimal) -> float:
    return float(value.quantize(_PRICE_STEP, rounding=ROUND_HALF_UP))
