"""The ports of the trading domain: the small interfaces adapters implement, and the plain data
that crosses them.

Why ports: the domain (strategies, review policy, risk rules, order state machine) must run the
same way live (alpaca-py + ClickHouse + Postgres), in the backtester (replay + simulated broker)
and in tests (the simulators). So it only ever sees these protocols and value types; the
adapters (``trading/execution*``, ``trading/signals*``, ``trading/store``, ``trading/llm``)
translate from and to the outside world. Money and quantities are ``Decimal`` (Alpaca sends
strings); timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

import msgspec

from trading.domain import OrderType, ParamValue, SignalRow
from trading.orders import OrderStatus

__all__ = [
    "AccountSnapshot",
    "Broker",
    "BrokerOrder",
    "ClockSnapshot",
    "OrderRequest",
    "PositionSnapshot",
    "ProviderReply",
    "ReviewRequest",
    "Reviewer",
    "Side",
    "SignalCursor",
    "SignalReader",
]

Side = Literal["buy", "sell"]


# --- broker ---------------------------------------------------------------------------------


class AccountSnapshot(msgspec.Struct, frozen=True):
    """The account figures risk needs (Alpaca ``GET /v2/account``)."""

    equity: Decimal
    last_equity: Decimal
    buying_power: Decimal
    cash: Decimal


class PositionSnapshot(msgspec.Struct, frozen=True):
    """One open position; ``qty`` is signed (negative = short)."""

    symbol: str
    qty: Decimal
    market_value: Decimal
    avg_entry_price: Decimal = Decimal(0)


class ClockSnapshot(msgspec.Struct, frozen=True):
    """The market clock (Alpaca ``GET /v2/clock``)."""

    timestamp: datetime
    is_open: bool
    next_open: datetime | None = None
    next_close: datetime | None = None


class OrderRequest(msgspec.Struct, frozen=True):
    """What the executor submits. ``client_order_id`` is the decision hash."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None
    time_in_force: Literal["day", "gtc", "ioc", "fok"] = "day"


class BrokerOrder(msgspec.Struct, frozen=True):
    """The broker's view of one order, as submitted, polled or pushed by ``trade_updates``."""

    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    status: OrderStatus
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    submitted_at: datetime
    updated_at: datetime
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None


class Broker(Protocol):
    """Order execution and account state (the alpaca-py adapter; the paper simulator in tests).

    ``submit`` must be idempotent on ``client_order_id``: when the broker answers that the id is
    already used (Alpaca 422), the adapter returns the existing order instead of failing.
    """

    def submit(self, request: OrderRequest) -> BrokerOrder: ...

    def get_order(self, order_id: str) -> BrokerOrder: ...

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None: ...

    def open_orders(self) -> Sequence[BrokerOrder]: ...

    def cancel(self, order_id: str) -> None: ...

    def positions(self) -> Sequence[PositionSnapshot]: ...

    def account(self) -> AccountSnapshot: ...

    def clock(self) -> ClockSnapshot: ...


# --- signals --------------------------------------------------------------------------------


class SignalCursor(msgspec.Struct, frozen=True, order=True):
    """Position of the signal reader, in the query's own order.

    Field order is the sort order (``window_size, event_ts, symbol, seq``), so comparing two
    cursors compares them exactly as ``ORDER BY`` does: the reader never re-reads or skips.
    """

    window_size: str
    event_ts: datetime
    symbol: str
    seq: int


class SignalReader(Protocol):
    """Reads deduplicated signal rows strictly after a cursor, in cursor order."""

    def read(self, after: SignalCursor | None, limit: int) -> Sequence[SignalRow]: ...


# --- LLM review -----------------------------------------------------------------------------


class ReviewRequest(msgspec.Struct, frozen=True):
    """Structured input of a review: the decision's fields and recent indicator values only.

    Nothing here is free text from an untrusted source; the client JSON-encodes it into the user
    message under a fixed system prompt.
    """

    decision_hash: str
    strategy_id: str
    strategy_version: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    event_ts: datetime
    params: dict[str, ParamValue]
    recent_signals: tuple[SignalRow, ...]
    min_qty: Decimal
    limit_price: Decimal | None = None


class ProviderReply(msgspec.Struct, frozen=True):
    """What a provider returned, before any validation.

    ``content`` is the model's raw message text (``None`` when there was no usable HTTP answer,
    then ``error`` says why). Tokens are ``None`` when the provider does not report them.
    """

    model: str
    content: str | None
    latency_ms: int
    error: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None


class Reviewer(Protocol):
    """An LLM provider. Must not raise for provider faults: report them in ``error``."""

    @property
    def model(self) -> str: ...

    def review(self, request: ReviewRequest) -> ProviderReply: ...
