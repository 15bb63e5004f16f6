"""SQLAlchemy 2 models of the trading audit trail (Postgres in production, SQLite embedded).

The product design's DDL is the base (``trade_decisions`` with a unique ``decision_hash``,
``executions``, ``llm_decision_reviews``, the ``(symbol, created_at DESC)`` index); the columns it
does not name are what an auditor needs to replay a decision: strategy id/version, status, the
risk reasons of a rejection, the order intent (side, qty, type, limit) and the event time.

Order intent lives on the decision row (status ``pending_submit``, ``client_order_id`` = the
decision hash), committed with the review and the risk verdict in one transaction; the
``executions`` row appears once the broker has acknowledged the order, so ``alpaca_order_id``
stays ``NOT NULL`` as designed. Risk rejections are stored on the decision itself
(``status = 'rejected'``, ``risk_reasons`` = every failing rule) — one row per decision keeps
"all or none" trivially true.

The Alembic migration in ``infra/postgres/versions`` creates exactly these tables;
``tests/trading/test_store_*`` compares the two.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trading.adapters.store.types import JSON_DOC, ExactDecimal, UtcDateTime

__all__ = [
    "Base",
    "ControlEventRow",
    "ExecutionRow",
    "LlmReviewRow",
    "OrderEventRow",
    "PositionSnapshotRow",
    "TradeCursorRow",
    "TradeDecisionRow",
    "TradingHaltRow",
]


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "%(table_name)s_%(column_0_N_name)s_idx",
            "uq": "%(table_name)s_%(column_0_N_name)s_key",
            "ck": "%(table_name)s_%(constraint_name)s_check",
            "fk": "%(table_name)s_%(column_0_name)s_fkey",
            "pk": "%(table_name)s_pkey",
        }
    )


_NOW = sa.text("CURRENT_TIMESTAMP")
"""Server-side default that Postgres and SQLite both understand."""


class TradeDecisionRow(Base):
    __tablename__ = "trade_decisions"
    __table_args__ = (sa.Index("trade_decisions_status_idx", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    decision_hash: Mapped[str] = mapped_column(sa.Text, unique=True)
    strategy_id: Mapped[str] = mapped_column(sa.Text)
    strategy_version: Mapped[str] = mapped_column(sa.Text)
    symbol: Mapped[str] = mapped_column(sa.Text)
    side: Mapped[str] = mapped_column(sa.Text)
    qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    order_type: Mapped[str] = mapped_column(sa.Text)
    limit_price: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    event_ts: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(sa.Text)
    status_detail: Mapped[str | None] = mapped_column(sa.Text)
    risk_reasons: Mapped[list[dict[str, str]] | None] = mapped_column(JSON_DOC)
    decision_json: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)
    executed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


sa.Index(
    "trade_decisions_symbol_created_at_idx",
    TradeDecisionRow.symbol,
    TradeDecisionRow.created_at.desc(),
)


class ExecutionRow(Base):
    __tablename__ = "executions"
    __table_args__ = (sa.Index("executions_status_idx", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    decision_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("trade_decisions.id"))
    alpaca_order_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    client_order_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    symbol: Mapped[str] = mapped_column(sa.Text)
    side: Mapped[str] = mapped_column(sa.Text)
    qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    status: Mapped[str] = mapped_column(sa.Text)
    filled_qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    filled_avg_price: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_update_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)
    reconciled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OrderEventRow(Base):
    """Append-only: one row per accepted order state transition."""

    __tablename__ = "order_events"
    __table_args__ = (sa.Index("order_events_execution_id_id_idx", "execution_id", "id"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    execution_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("executions.id"))
    alpaca_order_id: Mapped[str] = mapped_column(sa.Text)
    event_type: Mapped[str] = mapped_column(sa.Text)
    status_from: Mapped[str | None] = mapped_column(sa.Text)
    status_to: Mapped[str] = mapped_column(sa.Text)
    filled_qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)


class LlmReviewRow(Base):
    __tablename__ = "llm_decision_reviews"
    __table_args__ = (
        sa.CheckConstraint("latency_ms >= 0", name="latency_ms_nonnegative"),
        sa.Index("llm_decision_reviews_decision_id_idx", "decision_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    decision_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("trade_decisions.id"))
    model: Mapped[str] = mapped_column(sa.Text)
    prompt_version: Mapped[str] = mapped_column(sa.Text)
    verdict: Mapped[str | None] = mapped_column(sa.Text)
    effective_verdict: Mapped[str] = mapped_column(sa.Text)
    confidence: Mapped[float | None] = mapped_column(sa.Float)
    adjusted_qty: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    shadow: Mapped[bool] = mapped_column(sa.Boolean)
    fallback: Mapped[bool] = mapped_column(sa.Boolean)
    tokens_in: Mapped[int | None] = mapped_column(sa.Integer)
    tokens_out: Mapped[int | None] = mapped_column(sa.Integer)
    latency_ms: Mapped[int] = mapped_column(sa.Integer)
    raw_response: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)


class TradeCursorRow(Base):
    """The signal reader's durable cursor, one row per source name."""

    __tablename__ = "trade_cursor"

    source: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    window_size: Mapped[str] = mapped_column(sa.Text)
    event_ts: Mapped[datetime] = mapped_column(UtcDateTime)
    symbol: Mapped[str] = mapped_column(sa.Text)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)


class PositionSnapshotRow(Base):
    """Broker position vs the position implied by our executions, per reconciliation pass."""

    __tablename__ = "position_snapshots"
    __table_args__ = (sa.Index("position_snapshots_symbol_taken_at_idx", "symbol", "taken_at"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    taken_at: Mapped[datetime] = mapped_column(UtcDateTime)
    symbol: Mapped[str] = mapped_column(sa.Text)
    broker_qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    local_qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    drift_qty: Mapped[Decimal] = mapped_column(ExactDecimal)


class ControlEventRow(Base):
    """Append-only audit of every runtime control change: what, when, why and from where.

    ``action`` is one of :class:`trading.adapters.store.controls.ControlAction`; ``origin`` one of
    ``api``/``cli``/``startup``/``automatic``. Commands the trading flow must carry out
    (``cancel_all``, ``flatten``) are written ``pending`` and completed by that flow
    (``done``/``failed`` with ``completed_at`` and ``result``); every other change is ``done``
    when written. The kill switch's state is its latest ``engage``/``release`` row.
    """

    __tablename__ = "trading_control_events"
    __table_args__ = (sa.Index("trading_control_events_state_action_idx", "state", "action"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    action: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    origin: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.Text)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)


class TradingHaltRow(Base):
    """One automatic halt (reconciliation failing, position drift, pipeline lag) and its life.

    Active while ``cleared_at`` is null. ``cause_gone_at`` is set when the condition that raised
    it has gone; a halt that ``requires_resume`` is cleared only by an operator's resume after
    that, any other one is cleared with it.
    """

    __tablename__ = "trading_halts"
    __table_args__ = (sa.Index("trading_halts_kind_cleared_at_idx", "kind", "cleared_at"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(sa.Text)
    detail: Mapped[str] = mapped_column(sa.Text)
    since: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    requires_resume: Mapped[bool] = mapped_column(sa.Boolean)
    cause_gone_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
