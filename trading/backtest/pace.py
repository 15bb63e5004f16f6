"""The backtest's recent orders, kept so that the risk engine's pace rules need no scan.

Why: the rate and cooldown rules ask, per decision, how many recent orders were made in the
last minute and when the symbol's last one was; counted over the recent-order list that is
work linear in the orders of the last minute (hundreds, on a busy replay) — twice per decision
(risk runs before and after the review). Orders are made in event-time order, so the list is
sorted: the count is a bisection, and the last order per symbol is kept in a map.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter

from trading.core.risk import OrderPace, RecentOrder

__all__ = ["PaceView", "RecentOrders"]

_SUBMITTED_AT = attrgetter("submitted_at")


class RecentOrders:
    """Orders of the last ``lookback`` of event time, oldest first."""

    def __init__(self, lookback: timedelta) -> None:
        self._lookback = lookback
        self._orders: deque[RecentOrder] = deque()
        self._listed: tuple[RecentOrder, ...] | None = ()
        """``_orders`` as the last view listed them (``None`` once they changed): most
        decisions of an event time see the same orders, and a minute of them is hundreds."""
        self._last: dict[str, datetime] = {}
        self._made = 0

    def add(self, order: RecentOrder) -> None:
        """Record an order; ``submitted_at`` never precedes the previous order's."""
        if self._orders and order.submitted_at < self._orders[-1].submitted_at:
            raise ValueError(f"order at {order.submitted_at} before the previous one")
        self._orders.append(order)
        self._listed = None
        self._last[order.symbol] = order.submitted_at
        self._made += 1

    @property
    def made(self) -> int:
        """How many orders were ever added."""
        return self._made

    def view(self, now: datetime) -> PaceView:
        """The orders after ``now - lookback`` (the risk context's list) and their pace."""
        horizon = now - self._lookback
        orders = self._orders
        while orders and orders[0].submitted_at <= horizon:
            orders.popleft()
            self._listed = None
        if self._listed is None:
            self._listed = tuple(orders)
        return PaceView(self._listed, horizon, self._last, self._made, self)


@dataclass(frozen=True, slots=True)
class PaceView:
    """:class:`~trading.core.risk.Pace` of ``orders``, answered without scanning them.

    ``last`` is the live map of every symbol's latest order: it answers for ``orders`` while
    no order has been added since (``made``); afterwards the view counts over ``orders``."""

    orders: tuple[RecentOrder, ...]
    horizon: datetime
    last_by_symbol: dict[str, datetime]
    made: int
    log: RecentOrders

    def count_after(self, at: datetime) -> int:
        return len(self.orders) - bisect_right(self.orders, at, key=_SUBMITTED_AT)

    def last(self, symbol: str) -> datetime | None:
        if self.log.made != self.made:
            return OrderPace(self.orders).last(symbol)
        at = self.last_by_symbol.get(symbol)
        return at if at is not None and at > self.horizon else None
