"""What the decision store holds, as the core reads it back: decisions, executions, order
events and position drift.

Why in the core: the pipeline, the executor and the reconciler act on these records whatever
store keeps them (SQL tables live, memory in a backtest); each store adapter converts its rows
into them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from trading.core.decisions import DecisionStatus
from trading.core.domain import OrderType
from trading.core.orders import OrderStatus
from trading.core.ports import OrderRequest, PositionSnapshot
from trading.core.risk import RiskReason

__all__ = [
    "PositionDrift",
    "StoredDecision",
    "StoredExecution",
    "StoredOrderEvent",
    "position_drifts",
]


class StoredDecision(msgspec.Struct, frozen=True):
    """A ``trade_decisions`` row. ``created`` is true only for the call that inserted it."""

    id: uuid.UUID
    decision_hash: str
    strategy_id: str
    strategy_version: str
    symbol: str
    side: str
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    event_ts: datetime
    status: DecisionStatus
    status_detail: str | None
    risk_reasons: tuple[RiskReason, ...]
    created_at: datetime
    executed_at: datetime | None
    created: bool = False

    def order_request(self) -> OrderRequest:
        """The order this decision intends (``client_order_id`` = decision hash)."""
        if self.side not in ("buy", "sell") or self.qty <= 0:
            raise ValueError(
                f"decision {self.decision_hash} is not an order ({self.side} {self.qty})"
            )
        return OrderRequest(
            client_order_id=self.decision_hash,
            symbol=self.symbol,
            side="buy" if self.side == "buy" else "sell",
            qty=self.qty,
            order_type=self.order_type,
            limit_price=self.limit_price,
        )


class StoredExecution(msgspec.Struct, frozen=True):
    id: uuid.UUID
    decision_id: uuid.UUID | None
    alpaca_order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    status: OrderStatus
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    submitted_at: datetime
    last_update_at: datetime
    reconciled_at: datetime | None


class StoredOrderEvent(msgspec.Struct, frozen=True):
    id: int
    alpaca_order_id: str
    event_type: str
    status_from: OrderStatus | None
    status_to: OrderStatus
    filled_qty: Decimal
    at: datetime
    payload: dict[str, Any]


class PositionDrift(msgspec.Struct, frozen=True):
    symbol: str
    broker_qty: Decimal
    local_qty: Decimal

    @property
    def drift(self) -> Decimal:
        return self.broker_qty - self.local_qty


def position_drifts(
    local: Mapping[str, Decimal], broker: Sequence[PositionSnapshot]
) -> list[PositionDrift]:
    """Broker vs local position of every symbol where either is non-zero, by symbol."""
    remote = {p.symbol: p.qty for p in broker}
    return [
        PositionDrift(s, remote.get(s, Decimal(0)), local.get(s, Decimal(0)))
        for s in sorted(set(local) | set(remote))
        if remote.get(s, Decimal(0)) != 0 or local.get(s, Decimal(0)) != 0
    ]
