"""The broker port over the paper matching engine itself, in process: no HTTP, no alpaca-py.

Why: live paper trading reaches the broker simulator through alpaca-py and its HTTP shell
(:mod:`trading.adapters.alpaca_broker`), which proves the real client works. A backtest (and a
pipeline run without network) needs the same fills without a server: this adapter calls
:class:`torghut.sim.broker.book.PaperBook` directly and translates its orders, positions and
refusals (``BrokerError`` 404/403/422) into the port's values and errors. The book reads time
from the same :class:`~trading.core.clock.Clock` the core is driven by, so simulated time moves
both; its matching (market orders against the touch, limits when crossed) is the simulator's.
A repeated ``client_order_id`` is answered with the existing order, as the alpaca-py adapter
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from torghut.sim.broker.book import AccountConfig, Order, PaperBook
from torghut.sim.broker.book import OrderRequest as BookRequest
from torghut.sim.broker.clock import AlwaysOpen, Schedule
from torghut.sim.broker.errors import BrokerError
from torghut.sim.quotes import QuoteSource
from trading.core.clock import Clock
from trading.core.domain import OrderType
from trading.core.orders import OrderStatus
from trading.core.ports import (
    AccountSnapshot,
    BrokerOrder,
    BrokerRejected,
    ClockSnapshot,
    OrderRequest,
    PositionSnapshot,
)

__all__ = ["PaperBookBroker"]


class PaperBookBroker:
    """:class:`~trading.core.ports.Broker` over an in-process :class:`PaperBook`."""

    def __init__(
        self,
        quotes: QuoteSource,
        clock: Clock,
        *,
        schedule: Schedule | None = None,
        account: AccountConfig | None = None,
    ) -> None:
        self.book = PaperBook(
            quotes, now=clock.now, schedule=schedule or AlwaysOpen(), account=account
        )

    def submit(self, request: OrderRequest) -> BrokerOrder:
        book_request = BookRequest(
            symbol=request.symbol,
            side=request.side,
            type=request.order_type.value,
            time_in_force=request.time_in_force,
            qty=request.qty,
            limit_price=request.limit_price,
            client_order_id=request.client_order_id,
        )
        try:
            return _order(self.book.submit(book_request))
        except BrokerError as exc:
            if exc.status == 422 and "client_order_id must be unique" in exc.message:
                existing = self.get_order_by_client_id(request.client_order_id)
                if existing is not None:
                    return existing
            raise _rejected(exc) from exc

    def get_order(self, order_id: str) -> BrokerOrder:
        try:
            return _order(self.book.order(UUID(order_id)))
        except BrokerError as exc:
            raise _rejected(exc) from exc

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        try:
            return _order(self.book.order_by_client_id(client_order_id))
        except BrokerError as exc:
            if exc.status == 404:
                return None
            raise _rejected(exc) from exc

    def open_orders(self) -> Sequence[BrokerOrder]:
        return [_order(o) for o in self.book.orders(status="open")]

    def cancel(self, order_id: str) -> None:
        try:
            self.book.cancel(UUID(order_id))
        except BrokerError as exc:
            raise _rejected(exc) from exc

    def positions(self) -> Sequence[PositionSnapshot]:
        return [
            PositionSnapshot(p.symbol, p.qty, p.market_value, p.avg_entry_price)
            for p in self.book.positions()
        ]

    def account(self) -> AccountSnapshot:
        a = self.book.account()
        # The book keeps no daily close: the starting cash stands in for yesterday's equity.
        return AccountSnapshot(
            equity=a.equity, last_equity=a.config.cash, buying_power=a.buying_power, cash=a.cash
        )

    def clock(self) -> ClockSnapshot:
        c = self.book.clock()
        return ClockSnapshot(c.timestamp, c.is_open, c.next_open, c.next_close)


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
        submitted_at=o.submitted_at,
        updated_at=_latest(o.updated_at, o.filled_at),
        order_type=OrderType.LIMIT if o.type == "limit" else OrderType.MARKET,
        limit_price=o.limit_price,
    )


def _latest(updated: datetime, filled: datetime | None) -> datetime:
    return updated if filled is None else max(updated, filled)


def _rejected(exc: BrokerError) -> BrokerRejected:
    return BrokerRejected(f"{exc.status}: {exc.message}", status=exc.status)
