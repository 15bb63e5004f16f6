"""The paper broker's engine: account, orders, fills and positions, with no I/O.

Everything that decides an outcome lives here so it is deterministic given its inputs (the
requests, the quote source, the clock and the id seed) and testable without a socket. The HTTP
and websocket shell in :mod:`torghut.sim.broker.app` only parses, locks, renders and publishes.

Rules, following Alpaca's paper trading where it is documented (see shared/alpaca-protocol.md):

* Orders move ``pending_new`` -> ``new`` -> ``partially_filled`` -> ``filled`` during the regular
  session; submitted while the market is closed they wait as ``accepted`` and go ``new`` at the
  open. ``canceled``, ``expired`` (day orders at the close of their session), ``replaced`` and
  ``rejected`` end an order. Every transition is queued as a trade update for the stream.
* Market orders take the touch (buy at the ask, sell at the bid); limit orders fill at the touch
  once it crosses their limit; stop orders trigger when the touch reaches the stop. One quote's
  displayed size is shared by all orders of its symbol, so a large order fills partially,
  quote by quote, and waits for fresh quotes for the rest.
* ``ioc`` cancels what it cannot fill at once; ``fok`` fills completely at once or is canceled.
* Buying power = max(0, equity x multiplier - gross position value) - what open orders reserve
  (remaining qty x limit price, or x the touch at submission for market and stop orders).
  An order that would exceed it is refused with 403; a fill that would (the price moved) rejects
  the order, or cancels its remainder when it has already partly filled.
* Selling more than the position (less what open sells hold) is refused with 403 unless the
  account allows shorting.
* Positions are marked at the mid of the current touch (either side if only one is quoted, else
  the last fill price).

Notional orders, trailing stops, ``opg``/``cls`` and bracket/oco/oto classes are refused with a
422 naming the unsupported feature.
"""

from __future__ import annotations

import pickle
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import Literal
from uuid import UUID

from torghut.sim.broker.clock import Now, Schedule
from torghut.sim.broker.errors import BrokerError, forbidden, not_found, unprocessable
from torghut.sim.quotes import ChangeTrackingQuotes, QuoteSource, Touch

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "ioc", "fok"]
OrderListStatus = Literal["open", "closed", "all"]

OPEN_STATUSES = frozenset({"accepted", "pending_new", "new", "partially_filled"})
ZERO = Decimal(0)
_CASH_MARGIN = Decimal("1e-9")
"""Share of the cash a cost must stay below for :meth:`PaperBook._surely_covered` (far above
the rounding of the 28-digit decimal sums in :meth:`PaperBook._buying_power`)."""
ASSET_NAMESPACE = uuid.UUID("6f1d3c52-5b0e-4f3a-9c57-2b8f5e1d7a10")
MAX_CLIENT_ORDER_ID = 128


def asset_id(symbol: str) -> UUID:
    """The stable asset id the simulator reports for ``symbol``."""
    return uuid.uuid5(ASSET_NAMESPACE, symbol)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated new-order request (quantities and prices as decimals)."""

    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = None
    extended_hours: bool = False


@dataclass(slots=True)
class Order:
    """An order as the broker holds it; queries hand out copies (:meth:`snapshot`)."""

    id: UUID
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    qty: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    status: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime
    reference_price: Decimal
    expires_at: datetime | None = None
    filled_qty: Decimal = ZERO
    filled_value: Decimal = ZERO
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    canceled_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: UUID | None = None
    replaces: UUID | None = None
    stop_triggered: bool = False

    @property
    def asset_id(self) -> UUID:
        return asset_id(self.symbol)

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        return self.filled_value / self.filled_qty if self.filled_qty else None

    def snapshot(self) -> Order:
        # every field, positionally: dataclasses.replace costs 5x as much, and each order is
        # copied for every event it emits
        return Order(*_ORDER_FIELDS(self))


_ORDER_FIELDS = attrgetter(*(f.name for f in fields(Order)))


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution; ``position_qty`` is the signed position after it."""

    execution_id: UUID
    order_id: UUID
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    timestamp: datetime
    position_qty: Decimal


@dataclass(frozen=True, slots=True)
class TradeUpdate:
    """One trade_updates event: the order as of the event, and the execution for fills."""

    event: str
    order: Order
    timestamp: datetime
    fill: Fill | None = None


@dataclass(frozen=True, slots=True)
class PositionView:
    """A position valued at the current mark."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    current_price: Decimal
    qty_available: Decimal

    @property
    def asset_id(self) -> UUID:
        return asset_id(self.symbol)

    @property
    def side(self) -> Literal["long", "short"]:
        return "long" if self.qty > 0 else "short"

    @property
    def market_value(self) -> Decimal:
        return self.qty * self.current_price

    @property
    def cost_basis(self) -> Decimal:
        return self.qty * self.avg_entry_price

    @property
    def unrealized_pl(self) -> Decimal:
        return self.market_value - self.cost_basis

    @property
    def unrealized_plpc(self) -> Decimal:
        basis = abs(self.cost_basis)
        return self.unrealized_pl / basis if basis else ZERO


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """How the paper account starts and what it may do."""

    cash: Decimal = Decimal(100_000)
    multiplier: int = 1
    shorting_enabled: bool = False
    trading_blocked: bool = False
    account_number: str = "PA0SIMULATOR"


@dataclass(frozen=True, slots=True)
class AccountView:
    """The account's money at the current marks."""

    id: UUID
    account_number: str
    created_at: datetime
    config: AccountConfig
    cash: Decimal
    long_market_value: Decimal
    short_market_value: Decimal
    buying_power: Decimal

    @property
    def equity(self) -> Decimal:
        return self.cash + self.long_market_value + self.short_market_value

    @property
    def initial_margin(self) -> Decimal:
        gross = self.long_market_value - self.short_market_value
        return gross / self.config.multiplier


@dataclass(frozen=True, slots=True)
class ClockView:
    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


@dataclass(slots=True)
class _Position:
    qty: Decimal
    avg_entry_price: Decimal


@dataclass(slots=True)
class _Liquidity:
    """What is left of one quote's displayed size after earlier fills against it."""

    touch: Touch
    ask_left: Decimal
    bid_left: Decimal


@dataclass(slots=True)
class _Ledger:
    fills: list[Fill] = field(default_factory=list)
    events: list[TradeUpdate] = field(default_factory=list)
    outbox: list[TradeUpdate] = field(default_factory=list)


class PaperBook:
    """The paper broker. Not thread-safe: the shell serialises calls."""

    def __init__(
        self,
        quotes: QuoteSource,
        *,
        now: Now,
        schedule: Schedule,
        account: AccountConfig | None = None,
        seed: int = 0,
    ) -> None:
        self._quotes = quotes
        self._now = now
        self._schedule = schedule
        self._config = account or AccountConfig()
        self._rng = random.Random(seed)
        self._account_id = self._new_id()
        self._created_at = now()
        self._cash = self._config.cash
        self._orders: dict[UUID, Order] = {}
        self._open: dict[UUID, Order] = {}
        self._by_client_id: dict[str, UUID] = {}
        self._positions: dict[str, _Position] = {}
        self._last_price: dict[str, Decimal] = {}
        self._liquidity: dict[str, _Liquidity] = {}
        self._marks: dict[str, tuple[Touch, Decimal]] = {}
        self._tracked = quotes if isinstance(quotes, ChangeTrackingQuotes) else None
        """Set when the source reports changed touches: positions' values are then kept."""
        self._values: dict[str, Decimal] | None = None
        """Each position's market value, while :attr:`_tracked` (``None``: to be computed)."""
        self._long = self._short = ZERO
        self._shorts = 0
        """Positions with a negative quantity."""
        self._ledger = _Ledger()
        self._reject_next = 0

    # ----------------------------------------------------------------- persistence

    _PERSISTED = (
        "_rng",
        "_account_id",
        "_created_at",
        "_cash",
        "_orders",
        "_open",
        "_by_client_id",
        "_positions",
        "_last_price",
    )
    _STATE_VERSION = 1

    def export_state(self) -> bytes:
        """The account, its orders, positions and fills, so a restarted simulator continues the
        same account (a process that keeps an audit trail of it would otherwise see every
        position vanish). Pending stream events are not kept: clients reconcile over REST."""
        state = {name: getattr(self, name) for name in self._PERSISTED}
        state["fills"] = self._ledger.fills
        state["events"] = self._ledger.events
        return pickle.dumps((self._STATE_VERSION, state))

    def import_state(self, blob: bytes) -> None:
        """Replace this book's account with one :meth:`export_state` wrote."""
        version, state = pickle.loads(blob)
        if version != self._STATE_VERSION:
            raise ValueError(f"broker state version {version}, expected {self._STATE_VERSION}")
        for name in self._PERSISTED:
            setattr(self, name, state[name])
        self._ledger = _Ledger(fills=state["fills"], events=state["events"])
        self._liquidity = {}
        self._values = None
        self._shorts = sum(1 for p in self._positions.values() if p.qty < 0)

    # ----------------------------------------------------------------- orders

    def submit(self, request: OrderRequest) -> Order:
        """Accept (or refuse with :class:`BrokerError`) a new order; returns it as accepted."""
        now = self._now()
        if self._config.trading_blocked:
            raise forbidden("new orders are rejected by user request")
        self._validate(request)
        client_order_id = request.client_order_id or str(self._new_id())
        if client_order_id in self._by_client_id:
            raise unprocessable("client_order_id must be unique")
        touch = self._quotes.latest_quote(request.symbol)
        reference = self._reference_price(request, touch)
        self._check_funds(request.symbol, request.side, request.qty, reference, exclude=None)
        order = self._new_order(request, client_order_id, reference, now)
        accepted = order.snapshot()
        self._activate(order, touch, now)
        return accepted

    def cancel(self, order_id: UUID) -> None:
        order = self._order(order_id)
        if not order.is_open:
            raise BrokerError(422, 42210000, f'order is already in "{order.status}" state')
        self._finish(order, "canceled", self._now())

    def cancel_all(self) -> list[UUID]:
        """Cancel every open order; returns their ids in submission order."""
        now = self._now()
        ids = []
        for order in self._open_orders():
            self._finish(order, "canceled", now)
            ids.append(order.id)
        return ids

    def replace(
        self,
        order_id: UUID,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """Replace a working order by a new one (Alpaca's PATCH); returns the new order."""
        old = self._order(order_id)
        if old.status not in ("new", "partially_filled"):
            raise BrokerError(422, 42210000, f'order is already in "{old.status}" state')
        request = OrderRequest(
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            time_in_force=time_in_force or old.time_in_force,
            qty=qty if qty is not None else old.remaining,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=stop_price if stop_price is not None else old.stop_price,
            client_order_id=client_order_id,
            extended_hours=old.extended_hours,
        )
        self._validate(request)
        new_client_id = client_order_id or str(self._new_id())
        if new_client_id in self._by_client_id:
            raise unprocessable("client_order_id must be unique")
        now = self._now()
        touch = self._quotes.latest_quote(old.symbol)
        reference = self._reference_price(request, touch)
        self._check_funds(old.symbol, old.side, request.qty, reference, exclude=old.id)
        new = self._new_order(request, new_client_id, reference, now)
        new.replaces = old.id
        old.replaced_by = new.id
        old.replaced_at = now
        self._finish(old, "replaced", now)
        accepted = new.snapshot()
        self._activate(new, touch, now)
        return accepted

    def forget(self, order_id: UUID) -> Order:
        """Drop an order as a paper-account reset does: from now on every lookup of it answers
        404 and it is no longer open (no trade update is emitted; fills it had stay booked)."""
        order = self._order(order_id)
        del self._orders[order_id]
        self._open.pop(order_id, None)
        self._by_client_id.pop(order.client_order_id, None)
        return order.snapshot()

    def reject_next_orders(self, count: int) -> None:
        """Make the venue reject the next ``count`` accepted orders (asynchronous ``rejected``)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._reject_next = count

    # ------------------------------------------------------------- positions

    def close_position(
        self, symbol: str, *, qty: Decimal | None = None, percentage: Decimal | None = None
    ) -> Order:
        """Submit the market order that flattens (part of) a position; returns it."""
        position = self._positions.get(symbol)
        if position is None:
            raise not_found("position does not exist")
        size = abs(position.qty)
        if qty is not None and percentage is not None:
            raise unprocessable("only one of qty or percentage may be given")
        if qty is not None:
            size = qty
        elif percentage is not None:
            if not ZERO < percentage <= 100:
                raise unprocessable("percentage must be in (0, 100]")
            size = abs(position.qty) * percentage / 100
        side: Side = "sell" if position.qty > 0 else "buy"
        return self.submit(
            OrderRequest(symbol=symbol, side=side, type="market", time_in_force="day", qty=size)
        )

    def close_all_positions(
        self, *, cancel_orders: bool = False
    ) -> list[tuple[str, Order | BrokerError]]:
        """Close every position; per symbol the liquidating order or why it was refused."""
        if cancel_orders:
            self.cancel_all()
        outcomes: list[tuple[str, Order | BrokerError]] = []
        for symbol in sorted(self._positions):
            try:
                outcomes.append((symbol, self.close_position(symbol)))
            except BrokerError as refusal:
                outcomes.append((symbol, refusal))
        return outcomes

    # --------------------------------------------------------------- market

    def on_quote(self, symbol: str) -> None:
        """Re-evaluate ``symbol``'s open orders against its current touch."""
        now = self._now()
        self._advance_sessions(now)
        self._match_symbol(symbol, now)

    def tick(self) -> None:
        """Apply the clock (open, close, expiry) and match every symbol with open orders."""
        now = self._now()
        self._advance_sessions(now)
        for symbol in dict.fromkeys(order.symbol for order in self._open_orders()):
            self._match_symbol(symbol, now)

    # --------------------------------------------------------------- queries

    def order(self, order_id: UUID) -> Order:
        return self._order(order_id).snapshot()

    def is_open(self, order_id: UUID) -> bool:
        """``order(order_id).is_open``, without copying the order."""
        return self._order(order_id).is_open

    def order_by_client_id(self, client_order_id: str) -> Order:
        order_id = self._by_client_id.get(client_order_id)
        if order_id is None:
            raise not_found("order not found")
        return self._orders[order_id].snapshot()

    def orders(
        self,
        *,
        status: OrderListStatus = "all",
        limit: int | None = None,
        after: datetime | None = None,
        until: datetime | None = None,
        direction: Literal["asc", "desc"] = "asc",
        side: Side | None = None,
        symbols: Iterable[str] | None = None,
    ) -> list[Order]:
        """Orders filtered as ``GET /v2/orders`` does (times compare with ``submitted_at``)."""
        wanted = frozenset(symbols) if symbols is not None else None
        selected = [
            order.snapshot()
            for order in self._orders.values()
            if (status == "all" or (status == "open") == order.is_open)
            and (after is None or order.submitted_at > after)
            and (until is None or order.submitted_at < until)
            and (side is None or order.side == side)
            and (wanted is None or order.symbol in wanted)
        ]
        if direction == "desc":
            selected.reverse()
        return selected if limit is None else selected[:limit]

    def positions(self) -> list[PositionView]:
        return [self._position_view(symbol) for symbol in sorted(self._positions)]

    def position(self, symbol: str) -> PositionView:
        if symbol not in self._positions:
            raise not_found("position does not exist")
        return self._position_view(symbol)

    def account(self) -> AccountView:
        long_value, short_value = self._market_values()
        return AccountView(
            id=self._account_id,
            account_number=self._config.account_number,
            created_at=self._created_at,
            config=self._config,
            cash=self._cash,
            long_market_value=long_value,
            short_market_value=short_value,
            buying_power=self._buying_power(exclude=None),
        )

    def clock(self) -> ClockView:
        now = self._now()
        return ClockView(
            timestamp=now,
            is_open=self._schedule.is_open(now),
            next_open=self._schedule.next_open(now),
            next_close=self._schedule.next_close(now),
        )

    def fills(self) -> list[Fill]:
        return list(self._ledger.fills)

    def events(self) -> list[TradeUpdate]:
        """Every trade update emitted so far, in order."""
        return list(self._ledger.events)

    def drain_events(self) -> list[TradeUpdate]:
        """Trade updates emitted since the last drain (for the stream publisher)."""
        drained = self._ledger.outbox
        self._ledger.outbox = []
        return drained

    # ------------------------------------------------------------- internals

    def _validate(self, request: OrderRequest) -> None:
        if not request.symbol:
            raise unprocessable("symbol is required")
        if request.qty <= 0:
            raise unprocessable("qty must be > 0")
        needs_limit = request.type in ("limit", "stop_limit")
        needs_stop = request.type in ("stop", "stop_limit")
        if needs_limit != (request.limit_price is not None):
            raise unprocessable(
                "limit_price is required" if needs_limit else "limit_price must not be given"
            )
        if needs_stop != (request.stop_price is not None):
            raise unprocessable(
                "stop_price is required" if needs_stop else "stop_price must not be given"
            )
        for price in (request.limit_price, request.stop_price):
            if price is not None and price <= 0:
                raise unprocessable("prices must be > 0")
        if request.extended_hours and (request.type != "limit" or request.time_in_force != "day"):
            raise unprocessable("extended hours order must be DAY limit orders")
        cid = request.client_order_id
        if cid is not None and not 0 < len(cid) <= MAX_CLIENT_ORDER_ID:
            raise unprocessable("client_order_id must be 1 to 128 characters")

    def _reference_price(self, request: OrderRequest, touch: Touch | None) -> Decimal:
        if request.limit_price is not None:
            return request.limit_price
        if touch is None:
            return self._last_price.get(request.symbol, ZERO)
        price = touch.ask_price if request.side == "buy" else touch.bid_price
        return _dec(price) if price > 0 else self._last_price.get(request.symbol, ZERO)

    def _check_funds(
        self, symbol: str, side: Side, qty: Decimal, reference: Decimal, exclude: UUID | None
    ) -> None:
        if side == "sell":
            position_qty = self._position_qty(symbol)
            held = sum(
                (o.remaining for o in self._open_orders(symbol, "sell") if o.id != exclude), ZERO
            )
            available = max(position_qty, ZERO) - held
            if qty <= available:
                return
            if not self._config.shorting_enabled:
                free = decimal_text(max(available, ZERO))
                raise forbidden(
                    f"insufficient qty available for order "
                    f"(requested: {decimal_text(qty)}, available: {free})",
                    {
                        "available": free,
                        "existing_qty": decimal_text(position_qty),
                        "held_for_orders": decimal_text(held),
                        "symbol": symbol,
                    },
                )
            cost = (qty - max(available, ZERO)) * reference
        else:
            cost = qty * reference
        if self._surely_covered(cost, exclude):
            return
        buying_power = self._buying_power(exclude)
        if cost > buying_power:
            raise forbidden(
                "insufficient buying power",
                {"buying_power": decimal_text(buying_power), "cost_basis": decimal_text(cost)},
            )

    def _new_order(
        self, request: OrderRequest, client_order_id: str, reference: Decimal, now: datetime
    ) -> Order:
        session_open = self._schedule.is_open(now)
        order = Order(
            id=self._new_id(),
            client_order_id=client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force,
            qty=request.qty,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            extended_hours=request.extended_hours,
            status="pending_new" if session_open else "accepted",
            created_at=now,
            updated_at=now,
            submitted_at=now,
            reference_price=reference,
            expires_at=self._schedule.next_close(now) if request.time_in_force == "day" else None,
        )
        self._orders[order.id] = order
        self._open[order.id] = order
        self._by_client_id[client_order_id] = order.id
        self._emit(order.status, order, now)
        return order

    def _activate(self, order: Order, touch: Touch | None, now: datetime) -> None:
        """Route a just-accepted order: reject, go live and match, or wait for the open."""
        if self._reject_next > 0:
            self._reject_next -= 1
            self._finish(order, "rejected", now)
            return
        if order.status == "pending_new":
            self._set_status(order, "new", now)
        if self._tradable(order, now):
            self._match(order, touch, now)
        if order.is_open and order.time_in_force in ("ioc", "fok"):
            self._finish(order, "canceled", now)

    def _tradable(self, order: Order, now: datetime) -> bool:
        return order.status in ("new", "partially_filled") or (
            order.extended_hours and order.status == "accepted"
        )

    def _advance_sessions(self, now: datetime) -> None:
        session_open = self._schedule.is_open(now)
        for order in self._open_orders():
            if order.expires_at is not None and now >= order.expires_at:
                self._finish(order, "expired", now)
            elif order.status == "accepted" and session_open:
                self._set_status(order, "new", now)

    def _match_symbol(self, symbol: str, now: datetime) -> None:
        orders = [o for o in self._open_orders(symbol) if self._tradable(o, now)]
        if not orders:
            return
        touch = self._quotes.latest_quote(symbol)
        for order in orders:
            self._match(order, touch, now)

    def _match(self, order: Order, touch: Touch | None, now: datetime) -> None:
        if touch is None:
            return
        buying = order.side == "buy"
        if order.stop_price is not None and not order.stop_triggered:
            if buying:
                triggered = touch.ask_price > 0 and _dec(touch.ask_price) >= order.stop_price
            else:
                triggered = touch.bid_price > 0 and _dec(touch.bid_price) <= order.stop_price
            if not triggered:
                return
            order.stop_triggered = True
        liquidity = self._liquidity_for(order.symbol, touch)
        raw_price = touch.ask_price if buying else touch.bid_price
        available = liquidity.ask_left if buying else liquidity.bid_left
        if raw_price <= 0 or available <= 0:
            return
        price = _dec(raw_price)
        limit = order.limit_price
        if limit is not None and (price > limit if buying else price < limit):
            return
        qty = min(order.remaining, available)
        if order.time_in_force == "fok" and qty < order.remaining:
            return
        if not buying and not self._config.shorting_enabled:
            qty = min(qty, max(self._position_qty(order.symbol), ZERO))
            if qty <= 0:
                self._finish(order, "canceled" if order.filled_qty else "rejected", now)
                return
        if not self._fill_affordable(order, qty, price):
            self._finish(order, "canceled" if order.filled_qty else "rejected", now)
            return
        if buying:
            liquidity.ask_left -= qty
        else:
            liquidity.bid_left -= qty
        self._execute(order, qty, price, now)

    def _fill_affordable(self, order: Order, qty: Decimal, price: Decimal) -> bool:
        """Whether a fill still fits the buying power (the price may have moved since submit)."""
        position_qty = self._position_qty(order.symbol)
        if order.side == "buy":
            exposure = qty - max(-position_qty, ZERO)
        else:
            exposure = qty - max(position_qty, ZERO)
        if exposure <= 0:
            return True
        cost = exposure * price
        return self._surely_covered(cost, order.id) or cost <= self._buying_power(order.id)

    def _execute(self, order: Order, qty: Decimal, price: Decimal, now: datetime) -> None:
        signed = qty if order.side == "buy" else -qty
        self._cash -= signed * price
        self._last_price[order.symbol] = price
        position_qty = self._apply_to_position(order.symbol, signed, price)
        if self._values is not None:
            self._revalue(self._values, order.symbol)
        order.filled_qty += qty
        order.filled_value += qty * price
        order.updated_at = now
        filled = order.remaining <= 0
        order.status = "filled" if filled else "partially_filled"
        if filled:
            order.filled_at = now
            del self._open[order.id]
        fill = Fill(
            execution_id=self._new_id(),
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            timestamp=now,
            position_qty=position_qty,
        )
        self._ledger.fills.append(fill)
        self._emit("fill" if filled else "partial_fill", order, now, fill)

    def _apply_to_position(self, symbol: str, signed_qty: Decimal, price: Decimal) -> Decimal:
        position = self._positions.get(symbol)
        if position is None:
            self._positions[symbol] = _Position(signed_qty, price)
            self._shorts += signed_qty < 0
            return signed_qty
        new_qty = position.qty + signed_qty
        self._shorts += (new_qty < 0) - (position.qty < 0)
        if new_qty == 0:
            del self._positions[symbol]
        elif (position.qty > 0) == (signed_qty > 0):
            total = position.qty * position.avg_entry_price + signed_qty * price
            position.avg_entry_price = total / new_qty
            position.qty = new_qty
        elif (new_qty > 0) != (position.qty > 0):
            position.qty = new_qty
            position.avg_entry_price = price
        else:
            position.qty = new_qty
        return new_qty

    def _liquidity_for(self, symbol: str, touch: Touch) -> _Liquidity:
        current = self._liquidity.get(symbol)
        if current is None or current.touch != touch:
            current = _Liquidity(touch, _dec(touch.ask_size), _dec(touch.bid_size))
            self._liquidity[symbol] = current
        return current

    def _finish(self, order: Order, status: str, now: datetime) -> None:
        stamp_field = {
            "canceled": "canceled_at",
            "expired": "expired_at",
            "rejected": "failed_at",
            "replaced": "replaced_at",
        }[status]
        setattr(order, stamp_field, now)
        self._set_status(order, status, now)

    def _set_status(self, order: Order, status: str, now: datetime) -> None:
        order.status = status
        order.updated_at = now
        if not order.is_open:
            del self._open[order.id]
        self._emit(status, order, now)

    def _emit(self, event: str, order: Order, now: datetime, fill: Fill | None = None) -> None:
        update = TradeUpdate(event=event, order=order.snapshot(), timestamp=now, fill=fill)
        self._ledger.events.append(update)
        self._ledger.outbox.append(update)

    def _order(self, order_id: UUID) -> Order:
        order = self._orders.get(order_id)
        if order is None:
            raise not_found("order not found")
        return order

    def _open_orders(self, symbol: str | None = None, side: Side | None = None) -> list[Order]:
        return [
            o
            for o in self._open.values()
            if (symbol is None or o.symbol == symbol) and (side is None or o.side == side)
        ]

    def _position_qty(self, symbol: str) -> Decimal:
        position = self._positions.get(symbol)
        return position.qty if position is not None else ZERO

    def _mark(self, symbol: str) -> Decimal:
        touch = self._quotes.latest_quote(symbol)
        if touch is not None:
            cached = self._marks.get(symbol)
            if cached is not None and cached[0] is touch:
                return cached[1]
            mark = self._touch_mark(touch.bid_price, touch.ask_price)
            if mark is not None:
                # Buying power that may bind marks every position: a backtest with hundreds
                # of positions spent most of its time re-parsing unchanged quotes.
                self._marks[symbol] = (touch, mark)
                return mark
        if symbol in self._last_price:
            return self._last_price[symbol]
        return self._positions[symbol].avg_entry_price

    def _touch_mark(self, bid: float, ask: float) -> Decimal | None:
        """The mid of a two-sided touch, else its one price (``None``: no price at all)."""
        return _touch_mark(bid, ask)

    def _market_values(self) -> tuple[Decimal, Decimal]:
        """Long and short market value at the current marks.

        With a change-tracking source only the positions whose touch changed are re-marked
        (and a filled one, in :meth:`_execute`); the sums are exact decimals either way, so
        the totals equal a full re-marking."""
        if self._tracked is None:
            return self._mark_all()
        changed = self._tracked.take_changed()
        values = self._values
        if values is None:
            values = self._values = {}
            self._long = self._short = ZERO
            changed = set(self._positions)
        for symbol in changed:
            self._revalue(values, symbol)
        return self._long, self._short

    def _revalue(self, values: dict[str, Decimal], symbol: str) -> None:
        old = values.pop(symbol, None)
        if old is not None:
            if old > 0:
                self._long -= old
            else:
                self._short -= old
        position = self._positions.get(symbol)
        if position is None:
            return
        value = values[symbol] = position.qty * self._mark(symbol)
        if value > 0:
            self._long += value
        else:
            self._short += value

    def _mark_all(self) -> tuple[Decimal, Decimal]:
        long_value = ZERO
        short_value = ZERO
        for symbol, position in self._positions.items():
            value = position.qty * self._mark(symbol)
            if value > 0:
                long_value += value
            else:
                short_value += value
        return long_value, short_value

    def _buying_power(self, exclude: UUID | None) -> Decimal:
        long_value, short_value = self._market_values()
        equity = self._cash + long_value + short_value
        capacity = max(equity * self._config.multiplier - (long_value - short_value), ZERO)
        return max(capacity - self._reserved(exclude), ZERO)

    def _surely_covered(self, cost: Decimal, exclude: UUID | None) -> bool:
        """Whether the buying power covers ``cost`` whatever the positions' marks are.

        Marks are positive prices (a touch's, a fill's), so without a short position every
        position's value is positive and the capacity, multiplier × equity − gross value =
        multiplier × cash + (multiplier − 1) × long value, is at least the cash for a
        multiplier of 1 or more. A cost (plus what open orders reserve) clearly inside the
        cash is then covered without re-marking anything — a backtest asks this on every
        order, with hundreds of positions whose touch moved. The margin only has to absorb
        the decimal rounding of :meth:`_buying_power`'s sums (28 digits: it could matter only
        with positions worth ~10^18 times the cash); anything closer, a short position or
        cash at or below zero takes :meth:`_buying_power` itself."""
        cash = self._cash
        return (
            self._config.multiplier >= 1
            and not self._shorts
            and cash > 0
            and cost + self._reserved(exclude) <= cash - cash * _CASH_MARGIN
        )

    def _reserved(self, exclude: UUID | None) -> Decimal:
        """What the open orders (but ``exclude``) hold back of the buying power."""
        reserved = ZERO
        for order in self._open_orders():
            if order.id == exclude:
                continue
            if order.side == "buy":
                reserved += order.remaining * order.reference_price
            else:
                long_qty = max(self._position_qty(order.symbol), ZERO)
                reserved += max(order.remaining - long_qty, ZERO) * order.reference_price
        return reserved

    def _position_view(self, symbol: str) -> PositionView:
        position = self._positions[symbol]
        held = sum(
            (o.remaining for o in self._open_orders(symbol, "sell" if position.qty > 0 else "buy")),
            ZERO,
        )
        return PositionView(
            symbol=symbol,
            qty=position.qty,
            avg_entry_price=position.avg_entry_price,
            current_price=self._mark(symbol),
            qty_available=max(abs(position.qty) - held, ZERO) * (1 if position.qty > 0 else -1),
        )

    def _new_id(self) -> UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)


@lru_cache(maxsize=1 << 16, typed=True)
def _touch_mark(bid: float, ask: float) -> Decimal | None:
    """:meth:`PaperBook._touch_mark`, remembered per price pair: a replay re-marks each open
    position whenever its touch moves, and quoted prices recur (parsing and dividing were ~40 %
    of a re-mark). ``typed``: ``1`` and ``1.0`` are equal keys but print, and so parse,
    differently."""
    if bid > 0 and ask > 0:
        return (_dec(bid) + _dec(ask)) / 2
    if bid > 0 or ask > 0:
        return _dec(max(bid, ask))
    return None


def _dec(value: float) -> Decimal:
    """A float from a quote as the decimal it was printed as (no binary noise)."""
    return Decimal(repr(value))


def decimal_text(value: Decimal) -> str:
    """Alpaca's rendering of a decimal: plain digits, no exponent, no trailing zeros."""
    text = format(value.quantize(Decimal("1e-9")).normalize(), "f")
    return "0" if text in ("-0", "") else text
