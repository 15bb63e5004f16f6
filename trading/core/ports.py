"""The ports of the trading core: the small interfaces adapters implement, the plain data that
crosses them, and the errors they may raise.

Why ports: the core (strategies, review policy, risk rules, order and decision state machines,
the pipeline) must run the same way live (alpaca-py + ClickHouse + Postgres), in the backtester
(replay + simulated broker + in-memory store) and in tests (the simulators). So it only ever sees
these protocols, value types and errors; the adapters (:mod:`trading.adapters`) translate from
and to the outside world, their libraries' exceptions included. Money and quantities are
``Decimal`` (Alpaca sends strings); timestamps are timezone-aware UTC. The clock port is
:mod:`trading.core.clock`.

* :class:`Broker` — orders, account, positions, market clock; raises :class:`BrokerRejected`
  (a definitive refusal) or :class:`BrokerUnavailable` (try again later);
* :class:`SignalReader` — deduplicated signal rows after a :class:`SignalCursor`;
* :class:`Reviewer` — an LLM provider; never raises for provider faults;
* :class:`DecisionStore` / :class:`UnitOfWork` — the audit trail, one transaction per decision;
  :class:`ControlStore` — kill switch, halts and operator commands; both raise
  :class:`StoreUnavailable`, :class:`StoreConflict` or :class:`StoreRejected` (never a database
  library's exception).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from trading.core.domain import OrderType, ParamValue, SignalRow
from trading.core.orders import OrderStatus, Transition

if TYPE_CHECKING:
    from trading.core.adjudicate import Adjudication
    from trading.core.control_state import (
        ControlAction,
        ControlEvent,
        ControlState,
        HaltKind,
        Origin,
    )
    from trading.core.records import PositionDrift, StoredDecision, StoredExecution
    from trading.core.risk import RecentOrder

__all__ = [
    "AccountSnapshot",
    "Broker",
    "BrokerOrder",
    "BrokerRejected",
    "BrokerUnavailable",
    "ClockSnapshot",
    "ControlStore",
    "DecisionStore",
    "OrderRequest",
    "PositionSnapshot",
    "ProviderReply",
    "ReviewRequest",
    "Reviewer",
    "Side",
    "SignalCursor",
    "SignalReader",
    "StoreConflict",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "UnitOfWork",
    "WorkingOrder",
    "ids_not_one",
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


class WorkingOrder(msgspec.Struct, frozen=True):
    """An order that may still fill, as risk counts it: open at the broker (``qty``: what is
    left of it), or approved and not yet sent (``unsent``: the broker's buying power does not
    reserve for it yet). ``price``: what its notional is counted at (its limit price, else the
    symbol's latest price the caller knows)."""

    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    unsent: bool = False


class ClockSnapshot(msgspec.Struct, frozen=True):
    """The market clock (Alpaca ``GET /v2/clock``)."""

    timestamp: datetime
    is_open: bool
    next_open: datetime | None = None
    next_close: datetime | None = None

    def changes_at(self) -> datetime | None:
        """The next instant ``is_open`` changes (the next close while open, else the next
        open), if the broker said."""
        return self.next_close if self.is_open else self.next_open


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


class BrokerRejected(RuntimeError):
    """The broker definitively refused the request (4xx other than a duplicate id).

    ``status`` is the broker's HTTP status when there was one (404: it does not know the order).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached or failed (transport error, timeout, 5xx, 429)."""


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


class SignalCursor(msgspec.Struct, frozen=True, order=True, gc=False):
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


# --- the decision store ---------------------------------------------------------------------


def ids_not_one(ids: Collection[str]) -> None:
    """Refuse one id where a collection of ids is asked for (a ``str`` is a collection of
    one-character strings, which a type checker accepts)."""
    if isinstance(ids, str):
        raise TypeError(f"a collection of ids is needed, not the single id {ids!r}")


class StoreError(RuntimeError):
    """A store operation failed; adapters raise its subclasses, never their library's errors."""


class StoreUnavailable(StoreError):
    """The store could not be read or written (connection lost, timeout, disk full, …)."""


class StoreConflict(StoreError):
    """Another writer got there first (a unique key taken meanwhile): read again and retry."""


class StoreRejected(StoreError):
    """The store refused the write as invalid (a constraint such as a CHECK): never retried."""


class UnitOfWork(Protocol):
    """One transaction over the decision store: nothing is kept unless :meth:`commit` is called.

    A decision, its review, risk verdict and order intent (and the signal cursor) are recorded
    together, so a crash leaves all or none of them.
    """

    def commit(self) -> None: ...

    def record_decision(self, adjudication: Adjudication) -> StoredDecision:
        """Insert the adjudicated decision if its hash is new (``created=True``); otherwise
        return the stored one and write nothing. The status is the lifecycle's
        :func:`~trading.core.decisions.initial_status`; ``qty`` is the reviewed one."""
        ...

    def record_decisions(self, adjudications: Sequence[Adjudication]) -> list[StoredDecision]:
        """:meth:`record_decision` of each, in order (one write for a whole batch)."""
        ...

    def get_decision(self, decision_hash: str) -> StoredDecision | None: ...

    def pending_submissions(self) -> list[StoredDecision]:
        """Order intents not yet acknowledged by the broker, oldest first."""
        ...

    def record_submission(self, order: BrokerOrder) -> StoredExecution:
        """The broker acknowledged the order of decision ``order.client_order_id``."""
        ...

    def record_submit_failure(self, decision_hash: str, error: str) -> None:
        """The order of a ``pending_submit`` decision was refused, blocked or expired."""
        ...

    def apply_order_update(
        self,
        order: BrokerOrder,
        *,
        event_type: str,
        at: datetime,
        payload: dict[str, Any] | None = None,
    ) -> Transition:
        """One observed broker order state, through the order state machine; an observation
        older than the recorded state is ``Transition.STALE`` and changes nothing (decided
        against the state as held under the unit of work's lock)."""
        ...

    def mark_reconciled(self, alpaca_order_ids: Collection[str], at: datetime) -> None:
        """Reconciliation compared these executions with the broker at ``at`` (one write)."""
        ...

    def executions_to_reconcile(self) -> list[StoredExecution]:
        """Non-terminal executions, and those not reconciled since they last changed."""
        ...

    def get_execution(self, alpaca_order_id: str) -> StoredExecution | None: ...

    def get_executions(self, alpaca_order_ids: Collection[str]) -> dict[str, StoredExecution]:
        """The stored executions of these orders, by order id (those that exist; one read)."""
        ...

    def recent_orders(self, since: datetime) -> list[RecentOrder]: ...

    def record_positions(
        self, taken_at: datetime, broker: Sequence[PositionSnapshot]
    ) -> list[PositionDrift]:
        """Broker vs local position per symbol (either non-zero), recorded; returns them all."""
        ...

    def load_cursor(self, source: str) -> SignalCursor | None: ...

    def save_cursor(self, source: str, cursor: SignalCursor) -> None: ...


class ControlStore(Protocol):
    """The runtime controls: kill switch, automatic halts, operator commands."""

    def state(self) -> ControlState: ...

    def record(
        self,
        action: ControlAction,
        reason: str,
        origin: Origin,
        *,
        result: dict[str, Any] | None = None,
    ) -> ControlEvent: ...

    def set_kill_switch(self, engaged: bool, reason: str, origin: Origin) -> ControlEvent: ...

    def complete(self, event_id: int, *, ok: bool, result: dict[str, Any]) -> None: ...

    def raise_halt(self, kind: HaltKind, detail: str, *, requires_resume: bool) -> bool:
        """True when this started a new halt (an active one is refreshed instead)."""
        ...

    def cause_gone(self, kind: HaltKind) -> bool:
        """True when this cleared a halt (one that requires a resume is only marked)."""
        ...


class DecisionStore(Protocol):
    """Where decisions, executions, the cursor and the controls are kept."""

    @property
    def controls(self) -> ControlStore: ...

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]: ...
