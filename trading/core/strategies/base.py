"""What every strategy is, and how a strategy steps through one symbol's signal rows.

Why this split: a strategy is a pure function ``decide(row, state) -> (state, decision)`` over a
small immutable state, so it is trivially deterministic, replayable and snapshot-able (the
trading flow keeps :class:`SymbolState` in Bytewax recovery state; msgspec structs pickle and
encode). Ordering concerns are solved once, here, for all strategies:

* a row older than the last one seen is ignored (the reader's cursor order makes this rare);
* a row with the *same* event time is a correction (higher ``version``): it is decided again from
  the state *before* the corrected row, so a correction replaces rather than chains. If the
  corrected row decides the same action, the decision hash is the same and the store keeps one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from trading.core.domain import Action, Decision, OrderType, ParamValue, SignalRow

__all__ = ["OrderParams", "Strategy", "SymbolState", "advance", "initial_state", "make_decision"]

S = TypeVar("S")
_CENT = Decimal("0.01")
_BPS = Decimal(10_000)


class OrderParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Order sizing shared by all strategies; each strategy's params extend this."""

    qty: Decimal = Decimal(1)
    order_type: OrderType = OrderType.MARKET
    limit_offset_bps: Decimal = Decimal(0)


class Strategy(Protocol, Generic[S]):
    """A deterministic, versioned strategy. ``params`` become part of every decision hash."""

    @property
    def id(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def params(self) -> Mapping[str, ParamValue]: ...

    def initial(self) -> S: ...

    def decide(self, row: SignalRow, state: S) -> tuple[S, Decision | None]: ...


class SymbolState(msgspec.Struct, frozen=True):
    """A strategy's state for one symbol: before and after the last event time seen."""

    last_event_ts: datetime | None
    base: Any
    current: Any


def initial_state(strategy: Strategy[Any]) -> SymbolState:
    start = strategy.initial()
    return SymbolState(last_event_ts=None, base=start, current=start)


def advance(
    strategy: Strategy[Any], state: SymbolState, row: SignalRow
) -> tuple[SymbolState, Decision | None]:
    """Feed one row; returns the new state and the decision (``None`` = hold)."""
    last = state.last_event_ts
    if last is None or row.event_ts > last:
        current, decision = strategy.decide(row, state.current)
        return SymbolState(row.event_ts, state.current, current), decision
    if row.event_ts == last:
        current, decision = strategy.decide(row, state.base)
        return SymbolState(last, state.base, current), decision
    return state, None


def make_decision(
    strategy: Strategy[Any],
    order: OrderParams,
    row: SignalRow,
    action: Action,
    close: float,
    rationale: str,
) -> Decision:
    """A decision for ``row`` with the order sizing of ``order`` (limit priced off ``close``)."""
    reference = Decimal(repr(close))
    limit: Decimal | None = None
    if order.order_type is OrderType.LIMIT:
        offset = order.limit_offset_bps / _BPS
        factor = 1 + offset if action is Action.BUY else 1 - offset
        limit = (reference * factor).quantize(_CENT, rounding=ROUND_HALF_UP)
    params = dict(strategy.params)
    params["window_size"] = row.window_size
    return Decision(
        strategy_id=strategy.id,
        strategy_version=strategy.version,
        symbol=row.symbol,
        event_ts=row.event_ts,
        action=action,
        qty=order.qty,
        order_type=order.order_type,
        params=params,
        rationale=rationale,
        limit_price=limit,
        window_size=row.window_size,
        signal_seq=row.seq,
        reference_price=reference,
    )
