"""Execution: the alpaca-py ``Broker`` adapter and the executor that turns intents into orders.

Why the executor is shaped this way (a crash between "the broker has the order" and "Postgres
knows it" must never duplicate and must always converge):

1. The decision and its order intent are committed *before* anything is sent (status
   ``pending_submit``, ``client_order_id`` = decision hash; see :mod:`trading.pipeline`).
2. :meth:`OrderExecutor.submit` sends it. A retry that meets Alpaca's 422 "client_order_id must
   be unique" is answered by fetching the existing order (:meth:`AlpacaBroker.submit`), so the
   broker's id uniqueness is the last line of defence and is never an error for us.
3. The answer is persisted (:meth:`~trading.store.UnitOfWork.record_submission`, then the
   order's current state through the order state machine).
4. An intent still ``pending_submit`` after a restart (or after a transport fault) is resolved
   by :meth:`OrderExecutor.resolve`: look the ``client_order_id`` up at the broker; if the broker
   has it, record it; if not, submit it only while the decision is still fresh
   (``RISK_MAX_SIGNAL_STALENESS_S``), otherwise mark it failed with ``expired: ...``.

Nothing is sent while the process is stopping or trading is denied: :meth:`OrderExecutor.submit`
checks the process-wide :data:`STOPPING` flag (set by the SIGINT/SIGTERM handler) and the
executor's ``gate`` (the runtime kill switch and halts, :mod:`trading.controls`) right before
every submit, so a signal or a kill switch that arrives while a decision is being adjudicated
still stops its order. A gated intent is marked failed (``blocked: ...``) and never sent; an
intent stopped by :data:`STOPPING` stays ``pending_submit`` for the next start to resolve.

Endpoint selection is :func:`client_target`, a pure function over
:func:`trading.live_gates.trading_endpoint`: a live endpoint needs ``TRADING_MODE=live``,
``TRADING_LIVE_ENABLED=true`` *and* ``ALPACA_LIVE_BASE_URL``; anything short of that is paper
(``paper=True``) and, with no ``ALPACA_PAPER_BASE_URL``, the built-in broker simulator.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from prometheus_client import Counter
from requests.adapters import HTTPAdapter
from sqlalchemy.exc import IntegrityError

from torghut.config import AlpacaSettings, TradingSettings
from torghut.logs import get_logger
from torghut.sim.broker import BrokerSimulator
from torghut.sim.quotes import QuoteSource
from trading.domain import OrderType
from trading.live_gates import trading_endpoint
from trading.orders import InvalidOrderTransition, OrderStatus, Transition
from trading.ports import (
    AccountSnapshot,
    Broker,
    BrokerOrder,
    ClockSnapshot,
    OrderRequest,
    PositionSnapshot,
)
from trading.quantity import wire_qty
from trading.store import StoredDecision, TradingStore

__all__ = [
    "STOPPING",
    "AlpacaBroker",
    "BrokerRejected",
    "BrokerUnavailable",
    "ClientTarget",
    "ExecutionOutcome",
    "OrderExecutor",
    "Outcome",
    "TradingStopped",
    "broker_status",
    "build_trading_client",
    "client_target",
    "start_embedded_broker",
    "stream_url_for",
]

_log = get_logger("trading.execution")

SUBMITS = Counter(
    "torghut_trading_order_submits_total",
    "Order submissions by result",
    ["result"],
)
HTTP_TIMEOUT_S = 10.0
"""Per-request timeout of the broker client: a dropped response must not hang the flow."""
RETRY_WAIT_S = 1
"""alpaca-py waits this long between its 429/504 retries (its default is 3 s)."""


STOPPING = threading.Event()
"""Process-wide: set once the process is stopping; from then on no order leaves it."""


class TradingStopped(RuntimeError):
    """Raised by the pipeline when :data:`STOPPING` cut a batch short: the flow must end as a
    crash (no final snapshot), so a restart replays the decisions it did not handle."""


class BrokerRejected(RuntimeError):
    """The broker definitively refused the request (4xx other than a duplicate id)."""


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached or failed (transport error, timeout, 5xx, 429)."""


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
    """``trading.ports.Broker`` over alpaca-py's ``TradingClient``."""

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
            if broker_status(exc) == 404:
                return None
            raise
        return to_broker_order(order)

    def open_orders(self) -> Sequence[BrokerOrder]:
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500)
        return [to_broker_order(o) for o in self._call(lambda: self.client.get_orders(query))]

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
            raise BrokerRejected(f"{status}: {exc}") from exc
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


def broker_status(exc: BaseException) -> int | None:
    """The HTTP status behind a :class:`BrokerRejected`/:class:`BrokerUnavailable` (if any)."""
    cause = exc.__cause__
    return cause.status_code if isinstance(cause, APIError) else None


def _is_duplicate_id(exc: BrokerRejected) -> bool:
    cause = exc.__cause__
    if not isinstance(cause, APIError) or cause.status_code != 422:
        return False
    try:
        message = str(json.loads(str(cause)).get("message", ""))
    except (ValueError, AttributeError):
        message = str(cause)
    return "client_order_id must be unique" in message


# --- the executor ---------------------------------------------------------------------------


class Outcome(StrEnum):
    SUBMITTED = "submitted"
    ADOPTED = "adopted"
    """The broker already had the order (crash or retry); recorded from its state."""
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNRESOLVED = "unresolved"
    """Broker unreachable (or the process is stopping): the intent stays ``pending_submit`` and
    is resolved later."""
    BLOCKED = "blocked"
    """Trading was denied between adjudication and submit (kill switch, halt): never sent."""


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    decision_hash: str
    outcome: Outcome
    order: BrokerOrder | None = None
    detail: str = ""


class OrderExecutor:
    """Sends order intents and records the broker's answers (see the module docstring)."""

    def __init__(
        self,
        store: TradingStore,
        broker: Broker,
        *,
        max_intent_age: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        gate: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._max_age = max_intent_age
        self._now = now
        self.gate = gate
        """Why orders are denied right now (``None``: they are not); checked before each submit."""

    def submit(self, decision: StoredDecision) -> ExecutionOutcome:
        """Send a freshly committed intent and record the answer (unless stopping or gated)."""
        h = decision.decision_hash
        if STOPPING.is_set():
            SUBMITS.labels(result="stopping").inc()
            return ExecutionOutcome(h, Outcome.UNRESOLVED, detail="process stopping")
        denied = self.gate()
        if denied is not None:
            detail = f"blocked: {denied}"
            SUBMITS.labels(result="blocked").inc()
            self._store.record_submit_failure(h, detail)
            _log.warning("order_blocked", decision_hash=h, detail=detail)
            return ExecutionOutcome(h, Outcome.BLOCKED, detail=detail)
        try:
            order = self._broker.submit(decision.order_request())
        except BrokerRejected as exc:
            SUBMITS.labels(result="rejected").inc()
            self._store.record_submit_failure(h, str(exc))
            _log.warning("order_rejected", decision_hash=h, error=str(exc))
            return ExecutionOutcome(h, Outcome.REJECTED, detail=str(exc))
        except BrokerUnavailable as exc:
            SUBMITS.labels(result="unresolved").inc()
            _log.warning("order_submit_unresolved", decision_hash=h, error=str(exc))
            return ExecutionOutcome(h, Outcome.UNRESOLVED, detail=str(exc))
        SUBMITS.labels(result="submitted").inc()
        self.record(order, event_type="submitted")
        return ExecutionOutcome(h, Outcome.SUBMITTED, order)

    def resolve(self, decision: StoredDecision) -> ExecutionOutcome:
        """Converge one ``pending_submit`` intent with the broker (after a crash or fault)."""
        h = decision.decision_hash
        try:
            order = self._broker.get_order_by_client_id(h)
        except BrokerUnavailable as exc:
            return ExecutionOutcome(h, Outcome.UNRESOLVED, detail=str(exc))
        if order is not None:
            SUBMITS.labels(result="adopted").inc()
            self.record(order, event_type="adopted")
            _log.info("order_intent_adopted", decision_hash=h, order_id=order.id)
            return ExecutionOutcome(h, Outcome.ADOPTED, order)
        age = self._now() - decision.event_ts
        if age <= self._max_age:
            return self.submit(decision)
        detail = (
            f"expired: intent never reached the broker; signal age {age.total_seconds():.0f}s"
            f" > {self._max_age.total_seconds():g}s"
        )
        SUBMITS.labels(result="expired").inc()
        self._store.record_submit_failure(h, detail)
        _log.warning("order_intent_expired", decision_hash=h, detail=detail)
        return ExecutionOutcome(h, Outcome.EXPIRED, detail=detail)

    def resolve_pending(self) -> list[ExecutionOutcome]:
        """Resolve every intent still ``pending_submit`` in the store."""
        with self._store.unit_of_work() as uow:
            pending = uow.pending_submissions()
        return [self.resolve(d) for d in pending]

    def record(self, order: BrokerOrder, *, event_type: str, at: datetime | None = None) -> bool:
        """Persist ``order`` (creating its execution if needed); True if anything changed.

        Idempotent and safe against the ``trade_updates`` thread recording the same order at
        the same time (a lost insert race is retried once; stale observations are skipped).
        """
        for attempt in (1, 2):
            try:
                return self._record_once(order, event_type, at or order.updated_at)
            except IntegrityError:
                if attempt == 2:
                    raise
        return False

    def _record_once(self, order: BrokerOrder, event_type: str, at: datetime) -> bool:
        with self._store.unit_of_work() as uow:
            existing = uow.get_execution(order.id)
            if existing is None:
                if uow.get_decision(order.client_order_id) is not None:
                    uow.record_submission(order)
                    uow.commit()
                    return True
                uow.apply_order_update(order, event_type=event_type, at=at)
                uow.commit()
                return True
            if existing.last_update_at > order.updated_at or existing.filled_qty > order.filled_qty:
                return False
            try:
                step = uow.apply_order_update(order, event_type=event_type, at=at)
            except InvalidOrderTransition:
                return False
            uow.commit()
            return step is Transition.ADVANCE
