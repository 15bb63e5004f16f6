"""The simulated market of a backtest: its clock, the touch the paper book fills against, fees.

Why the paper broker's own engine (:class:`torghut.sim.broker.book.PaperBook`): the backtest
must fill, reserve buying power, refuse shorts and mark positions exactly as the paper broker
the live paper flow trades against does. What a backtest adds is only *which touch* the book
sees (the fill model), moved against the order by the slippage, and the fees of each fill,
which the book does not charge (:class:`BookBroker` subtracts them from cash and equity).

Time is simulated: :class:`ReplayClock` is set to each signal row's event time by the engine,
and it is the only clock the book, risk and the broker snapshots read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

from torghut.events import Signal
from torghut.sim.broker.book import Fill, Order, PaperBook
from torghut.sim.broker.book import OrderRequest as BookOrderRequest
from torghut.sim.broker.errors import BrokerError
from torghut.sim.quotes import Touch
from trading.backtest.config import FillConfig
from trading.domain import SignalRow
from trading.orders import OrderStatus
from trading.ports import (
    AccountSnapshot,
    BrokerOrder,
    ClockSnapshot,
    OrderRequest,
    PositionSnapshot,
)

__all__ = ["BookBroker", "FeeModel", "ReplayClock", "ReplayQuotes", "SubmitRefused"]

_BPS = Decimal(10_000)
_CENT = Decimal("0.01")
_PRICE_STEP = Decimal("0.000001")
_UNLIMITED = 1e12
"""Displayed size of a replayed touch: ``ta_signals`` keeps the quote at the bar close only, so
depth is not modelled (an order never fills partially)."""


class SubmitRefused(Exception):
    """The book refused an order (buying power, shorting); the backtest records it as a fill
    that did not happen, like a broker rejection in the live flow."""


class ReplayClock:
    """Event time of the row being replayed; never the wall clock."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        if at > self._now:
            self._now = at


class ReplayQuotes:
    """The touch of each symbol as the fill model sees it (a ``QuoteSource`` for the book).

    Each row's indicators are kept as they are; the touch is built only when the book asks for
    it (at a submit or a match), once per row: most rows never trade."""

    def __init__(self, fill: FillConfig) -> None:
        self._last: dict[str, tuple[Signal, datetime]] = {}
        self._touch: dict[str, tuple[Signal, Touch]] = {}
        self._slip = fill.slippage_bps / _BPS
        self._at_close = fill.model == "next_bar"

    def update(self, row: SignalRow) -> float | None:
        """Take the row's quote; its close (``None`` for a row without a usable close)."""
        ind = row.indicators
        close = ind.close
        if close is None or close <= 0:
            return None
        self._last[row.symbol] = (ind, row.event_ts)
        return close

    def latest_quote(self, symbol: str) -> Touch | None:
        last = self._last.get(symbol)
        if last is None:
            return None
        ind, at = last
        cached = self._touch.get(symbol)
        if cached is not None and cached[0] is ind:
            return cached[1]
        bid = ask = _dec(ind.close)
        if not self._at_close and ind.imbalance_bid_px and ind.imbalance_ask_px:
            bid, ask = _dec(ind.imbalance_bid_px), _dec(ind.imbalance_ask_px)
        touch = Touch(
            _price(bid * (1 - self._slip)),
            _UNLIMITED,
            _price(ask * (1 + self._slip)),
            _UNLIMITED,
            at,
        )
        self._touch[symbol] = (ind, touch)
        return touch


class FeeModel:
    def __init__(self, fill: FillConfig) -> None:
        self._per_share = fill.fee_per_share
        self._rate = fill.fee_bps / _BPS
        self._min = fill.min_fee

    def fee(self, qty: Decimal, price: Decimal) -> Decimal:
        raw = qty * self._per_share + qty * price * self._rate
        return max(raw, self._min).quantize(_CENT, rounding=ROUND_HALF_UP)


class BookBroker:
    """The ``Broker`` port over a :class:`PaperBook`, with fees charged to the account."""

    def __init__(self, book: PaperBook, fees: FeeModel, clock: ReplayClock) -> None:
        self.book = book
        self._fees = fees
        self._clock = clock
        self.fees_paid = Decimal(0)
        self.last_equity = book.account().equity
        """Equity at the start of the current session day (the daily loss stop's reference);
        the engine rolls it at each new UTC date."""

    def submit(self, request: OrderRequest) -> BrokerOrder:
        try:
            order = self.book.submit(
                BookOrderRequest(
                    symbol=request.symbol,
                    side=request.side,
                    type=request.order_type.value,
                    time_in_force=request.time_in_force,
                    qty=request.qty,
                    limit_price=request.limit_price,
                    client_order_id=request.client_order_id,
                )
            )
        except BrokerError as exc:
            raise SubmitRefused(str(exc)) from exc
        return _order(self.book.order(order.id))

    def match(self, symbol: str) -> None:
        """A new touch for ``symbol``: its resting orders may fill."""
        self.book.on_quote(symbol)

    def take_fills(self) -> list[tuple[Fill, Decimal]]:
        """Fills since the last call, each with its fee (charged here)."""
        out: list[tuple[Fill, Decimal]] = []
        for update in self.book.drain_events():
            if update.fill is not None:
                fee = self._fees.fee(update.fill.qty, update.fill.price)
                self.fees_paid += fee
                out.append((update.fill, fee))
        return out

    def get_order(self, order_id: str) -> BrokerOrder:
        return _order(self.book.order(UUID(order_id)))

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        try:
            return _order(self.book.order_by_client_id(client_order_id))
        except BrokerError:
            return None

    def open_orders(self) -> Sequence[BrokerOrder]:
        return [_order(o) for o in self.book.orders(status="open")]

    def cancel(self, order_id: str) -> None:
        self.book.cancel(UUID(order_id))

    def positions(self) -> Sequence[PositionSnapshot]:
        return [
            PositionSnapshot(p.symbol, p.qty, p.market_value, p.avg_entry_price)
            for p in self.book.positions()
        ]

    def account(self) -> AccountSnapshot:
        view = self.book.account()
        equity = view.equity - self.fees_paid
        return AccountSnapshot(
            equity=equity,
            last_equity=self.last_equity,
            buying_power=view.buying_power,
            cash=view.cash - self.fees_paid,
        )

    def clock(self) -> ClockSnapshot:
        view = self.book.clock()
        return ClockSnapshot(view.timestamp, view.is_open, view.next_open, view.next_close)


def _order(o: Order) -> BrokerOrder:
    return BrokerOrder(
        id=str(o.id),
        client_order_id=o.client_order_id,
        symbol=o.symbol,
        side=o.side,
        qty=o.qty,
        status=OrderStatus(o.status),
        filled_qty=o.filled_qty,
        filled_avg_price=o.filled_avg_price,
        submitted_at=o.submitted_at.astimezone(UTC),
        updated_at=o.updated_at.astimezone(UTC),
        limit_price=o.limit_price,
    )


def _dec(value: float | None) -> Decimal:
    return Decimal(repr(value))


def _price(value: Decimal) -> float:
    return float(value.quantize(_PRICE_STEP, rounding=ROUND_HALF_UP))
