"""The alpaca-py broker adapter: :class:`~trading.core.ports.Broker` over ``TradingClient``.

Why it is more than a pass-through: alpaca-py's errors become the port's
(:class:`~trading.core.ports.BrokerRejected` with the HTTP status, or
:class:`~trading.core.ports.BrokerUnavailable`), a retry that meets Alpaca's 422
"client_order_id must be unique" is answered with the existing order (so the executor's
crash-safety holds, :mod:`trading.core.executor`), quantities are sent exactly as stored, and
every request has a timeout.

Endpoint selection is :func:`client_target`, a pure function over
:func:`trading.core.live_gates.trading_endpoint`: a live endpoint needs ``TRADING_MODE=live``,
``TRADING_LIVE_ENABLED=true`` *and* ``ALPACA_LIVE_BASE_URL``; anything short of that is paper
(``paper=True``) and, with no ``ALPACA_PAPER_BASE_URL``, the built-in broker simulator
(:func:`start_embedded_broker`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from requests.adapters import HTTPAdapter

from torghut.config import AlpacaSettings, TradingSettings
from torghut.logs import get_logger
from torghut.sim.broker import BrokerSimulator
from torghut.sim.quotes import QuoteSource
from trading.core.domain import OrderType
from trading.core.executor import SUBMITS
from trading.core.live_gates import trading_endpoint
from trading.core.orders import OrderStatus
from trading.core.ports import (
    AccountSnapshot,
    BrokerOrder,
    BrokerRejected,
    BrokerUnavailable,
    ClockSnapshot,
    OrderRequest,
    PositionSnapshot,
)
from trading.core.quantity import wire_qty

__all__ = [
    "AlpacaBroker",
    "ClientTarget",
    "build_trading_client",
    "client_target",
    "start_embedded_broker",
    "stream_url_for",
    "to_broker_order",
]

_log = get_logger("trading.adapters.alpaca_broker")
_ORDERS_PAGE = 500
"""The most orders Alpaca's ``GET /v2/orders`` returns at once."""

HTTP_TIMEOUT_S = 10.0
"""Per-request timeout of the broker client: a dropped response must not hang the flow."""
RETRY_WAIT_S = 1
"""alpaca-py waits this long between its 429/504 retries (its default is 3 s)."""


# --- endpoint selection ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientTarget:
    """How to build the ``TradingClient``: ``url`` empty = the built-in simulator."""

    paper: bool
    url: str


def client_target(trading: TradingSettings, alpaca: AlpacaSettings) -> ClientTarget:
    """Pure: ``paper=False`` only when every live gate is set (else ``LiveGateError``)."""
    endpoint = trading_endpoint(trading, alpaca)
    return ClientTarget(paper=not endpoint.live, url=endpoint.base_url)


class _TimeoutAdapter(HTTPAdapter):
    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=HTTP_TIMEOUT_S if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def build_trading_client(
    target: ClientTarget, alpaca: AlpacaSettings, embedded_url: str | None = None
) -> TradingClient:
    """A ``TradingClient`` for ``target`` (``embedded_url`` when the target is the simulator).

    alpaca-py has no timeout or retry-wait parameter; its ``requests`` session gets a timeout
    adapter and a shorter retry wait, so one stuck request cannot stall the trading worker.
    """
    url = target.url or embedded_url
    if not url:
        raise ValueError("no broker URL: start the embedded broker simulator first")
    if not target.paper and not target.url:
        raise ValueError("a live client needs an explicit live URL")
    client = TradingClient(
        alpaca.key_id.get_secret_value(),
        alpaca.secret_key.get_secret_value(),
        paper=target.paper,
        url_override=url,
    )
    session: requests.Session = client._session
    session.mount("http://", _TimeoutAdapter())
    session.mount("https://", _TimeoutAdapter())
    client._retry_wait = RETRY_WAIT_S
    return client


def stream_url_for(base_url: str) -> str:
    """The ``trade_updates`` websocket URL of a trading REST base URL (Alpaca: ``/stream``)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/stream", "", ""))


def start_embedded_broker(
    quotes: QuoteSource, alpaca: AlpacaSettings, *, shorting: bool = False
) -> BrokerSimulator:
    """The built-in paper broker (embedded default), serving on a free local port."""
    from torghut.sim.broker import AccountConfig

    sim = BrokerSimulator(
        quotes,
        key_id=alpaca.key_id.get_secret_value(),
        secret_key=alpaca.secret_key.get_secret_value(),
        account=AccountConfig(shorting_enabled=shorting),
    )
    sim.start()
    return sim


# --- the alpaca-py adapter ------------------------------------------------------------------


class AlpacaBroker:
    """``trading.core.ports.Broker`` over alpaca-py's ``TradingClient``."""

    def __init__(self, client: TradingClient) -> None:
        self.client = client

    def submit(self, request: OrderRequest) -> BrokerOrder:
        side = OrderSide.BUY if request.side == "buy" else OrderSide.SELL
        tif = TimeInForce(request.time_in_force)
        try:
            qty = wire_qty(request.qty)  # exactly the stored quantity, or no order at all
        except ValueError as exc:
            raise BrokerRejected(f"order {request.client_order_id}: {exc}") from exc
        payload: MarketOrderRequest | LimitOrderRequest
        if request.order_type is OrderType.LIMIT:
            if request.limit_price is None:
                raise BrokerRejected(f"limit order {request.client_order_id} without a price")
            payload = LimitOrderRequest(
                symbol=request.symbol,
                qty=qty,
                side=side,
                time_in_force=tif,
                limit_price=float(request.limit_price),
                client_order_id=request.client_order_id,
            )
        else:
            payload = MarketOrderRequest(
                symbol=request.symbol,
                qty=qty,
                side=side,
                time_in_force=tif,
                client_order_id=request.client_order_id,
            )
        try:
            order = self._call(lambda: self.client.submit_order(payload))
        except BrokerRejected as exc:
            if not _is_duplicate_id(exc):
                raise
            existing = self.get_order_by_client_id(request.client_order_id)
            if existing is None:
                raise BrokerUnavailable(
                    f"broker says {request.client_order_id} exists but cannot find it"
                ) from exc
            SUBMITS.labels(result="duplicate_resolved").inc()
            _log.info("order_duplicate_resolved", client_order_id=request.client_order_id)
            return existing
        return to_broker_order(order)

    def get_order(self, order_id: str) -> BrokerOrder:
        return to_broker_order(self._call(lambda: self.client.get_order_by_id(order_id)))

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        try:
            order = self._call(lambda: self.client.get_order_by_client_id(client_order_id))
        except BrokerRejected as exc:
            if exc.status == 404:
                return None
            raise
        return to_broker_order(order)

    def open_orders(self) -> Sequence[BrokerOrder]:
        """Every open order, oldest first.

        Why pages: Alpaca lists at most 500 orders a request (newest first), and with more
        open, the rest were missing — the reconciliation pass then asked for each of them
        alone, one request per order while holding the trading loop's lock, and "cancel all"
        cancelled the newest 500 and reported failure. Each page goes back from the oldest
        submission of the one before (``until`` is exclusive, so the page ends a microsecond
        after it and repeats that instant; repeats are dropped by id)."""
        found: dict[str, BrokerOrder] = {}
        until: datetime | None = None
        while True:
            query = GetOrdersRequest(
                status=QueryOrderStatus.OPEN, limit=_ORDERS_PAGE, direction=Sort.DESC, until=until
            )
            listed = self._call(functools.partial(self.client.get_orders, query))
            page = [to_broker_order(o) for o in listed]
            fresh = [o for o in page if o.id not in found]
            found.update((o.id, o) for o in fresh)
            if len(page) < _ORDERS_PAGE or not fresh:
                return sorted(found.values(), key=lambda o: o.submitted_at)
            until = min(o.submitted_at for o in page) + timedelta(microseconds=1)

    def cancel(self, order_id: str) -> None:
        self._call(lambda: self.client.cancel_order_by_id(order_id))

    def positions(self) -> Sequence[PositionSnapshot]:
        return [_position(p) for p in self._call(self.client.get_all_positions)]

    def account(self) -> AccountSnapshot:
        a: TradeAccount = self._call(self.client.get_account)
        return AccountSnapshot(
            equity=_dec(a.equity),
            last_equity=_dec(a.last_equity),
            buying_power=_dec(a.buying_power),
            cash=_dec(a.cash),
        )

    def clock(self) -> ClockSnapshot:
        c = self._call(self.client.get_clock)
        return ClockSnapshot(
            timestamp=_aware(c.timestamp) or datetime.now(UTC),
            is_open=bool(c.is_open),
            next_open=_aware(c.next_open),
            next_close=_aware(c.next_close),
        )

    @staticmethod
    def _call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except APIError as exc:
            status = exc.status_code
            if status is None or status >= 500 or status == 429:
                raise BrokerUnavailable(f"broker error {status}: {exc}") from exc
            raise BrokerRejected(f"{status}: {exc}", status=status) from exc
        except requests.RequestException as exc:
            raise BrokerUnavailable(f"broker unreachable: {exc}") from exc


def to_broker_order(order: Order) -> BrokerOrder:
    """An alpaca-py ``Order`` (REST answer or ``trade_updates`` payload) as the port's value."""
    side = order.side.value if order.side is not None else "buy"
    kind = order.type.value if order.type is not None else "market"
    return BrokerOrder(
        id=str(order.id),
        client_order_id=order.client_order_id,
        symbol=order.symbol or "",
        side="sell" if side == "sell" else "buy",
        qty=_dec(order.qty),
        status=OrderStatus(order.status.value),
        filled_qty=_dec(order.filled_qty),
        filled_avg_price=None if order.filled_avg_price is None else _dec(order.filled_avg_price),
        submitted_at=_aware(order.submitted_at) or _aware(order.created_at) or datetime.now(UTC),
        updated_at=_aware(order.updated_at) or datetime.now(UTC),
        order_type=OrderType.LIMIT if kind == "limit" else OrderType.MARKET,
        limit_price=None if order.limit_price is None else _dec(order.limit_price),
    )


def _position(p: Position) -> PositionSnapshot:
    qty = _dec(p.qty)
    if getattr(p.side, "value", p.side) == "short" and qty > 0:
        qty = -qty
    return PositionSnapshot(
        symbol=p.symbol,
        qty=qty,
        market_value=_dec(p.market_value),
        avg_entry_price=_dec(p.avg_entry_price),
    )


def _dec(v: Any) -> Decimal:
    return Decimal(0) if v is None or v == "" else Decimal(str(v))


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _is_duplicate_id(exc: BrokerRejected) -> bool:
    cause = exc.__cause__
    if not isinstance(cause, APIError) or cause.status_code != 422:
        return False
    try:
        message = str(json.loads(str(cause)).get("message", ""))
    except (ValueError, AttributeError):
        message = str(cause)
    return "client_order_id must be unique" in message
