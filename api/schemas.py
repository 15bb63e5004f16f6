"""Response bodies of the API as ``msgspec.Struct`` s (typed, fast JSON, shown in OpenAPI).

Shapes follow the product design's examples (``/trading/status``, ``/trading/health``) and add
what an operator needs to audit a decision end to end. Money and quantities are ``Decimal`` and
therefore JSON strings (exact); timestamps are ISO-8601 UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from torghut.events import Signal

__all__ = [
    "Bar",
    "BarsPage",
    "ControlEvent",
    "ControlRequest",
    "ControlResult",
    "Controls",
    "Decision",
    "DecisionsPage",
    "DependencyState",
    "Execution",
    "ExecutionsPage",
    "Halt",
    "KillSwitchRequest",
    "KillSwitchState",
    "Liveness",
    "OrderEvent",
    "Readiness",
    "Review",
    "RiskReason",
    "SignalPoint",
    "SignalsPage",
    "Symbols",
    "TaLatest",
    "TradingHealth",
    "TradingStatus",
]

DependencyState = Literal["ok", "error", "unknown"]


class KillSwitchState(msgspec.Struct):
    """The persisted kill switch: its latest engage/release (``since`` = when, ``origin`` =
    ``api``/``cli``/``startup``)."""

    engaged: bool
    reason: str | None = None
    since: datetime | None = None
    origin: str | None = None


class Halt(msgspec.Struct):
    """An automatic halt in force. ``reason`` is its kind (``reconcile_failing``,
    ``position_drift``, ``pipeline_lag``); ``resume_required``: it lifts only after an operator's
    ``POST /trading/resume`` once ``cause_gone``."""

    reason: str
    since: datetime
    detail: str
    resume_required: bool
    cause_gone: bool


class ControlEvent(msgspec.Struct):
    """One row of the control audit trail; commands are ``pending`` until the flow ran them."""

    id: int
    at: datetime
    action: str
    reason: str
    origin: str
    state: str
    completed_at: datetime | None
    result: dict[str, Any] | None


class Controls(msgspec.Struct):
    kill_switch: KillSwitchState
    halts: list[Halt]
    pending: list[ControlEvent]
    events: list[ControlEvent]


class KillSwitchRequest(msgspec.Struct, forbid_unknown_fields=True):
    engaged: bool
    reason: str


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str


class ControlResult(msgspec.Struct):
    """The change just recorded and the control state after it."""

    event: ControlEvent
    kill_switch: KillSwitchState
    halts: list[Halt]
    pending: list[ControlEvent]


class TradingStatus(msgspec.Struct):
    """``state`` is ``halted`` while anything denies new orders (kill switch or a halt)."""

    enabled: bool
    mode: Literal["paper", "live"]
    live_enabled: bool
    kill_switch: bool
    last_decision_at: datetime | None
    llm_enabled: bool
    strategies: list[str]
    state: Literal["active", "halted", "disabled"]
    kill_switch_state: KillSwitchState
    halts: list[Halt]
    pending_commands: list[ControlEvent]


class TradingHealth(msgspec.Struct):
    """``status`` is ``degraded`` while trading is halted (kill switch or a halt), ``down``
    while a dependency is."""

    status: Literal["ok", "degraded", "down"]
    clickhouse: DependencyState
    alpaca: DependencyState
    postgres: DependencyState
    last_reconcile_at: datetime | None
    halts: list[Halt]
    kill_switch: bool


class RiskReason(msgspec.Struct):
    code: str
    detail: str


class Review(msgspec.Struct):
    """The LLM review of a decision (advisory; ``shadow`` = recorded without acting)."""

    model: str
    prompt_version: str
    verdict: str | None
    effective_verdict: str
    confidence: float | None
    adjusted_qty: Decimal | None
    shadow: bool
    fallback: bool
    latency_ms: int
    error: str | None
    created_at: datetime


class Decision(msgspec.Struct):
    id: uuid.UUID
    decision_hash: str
    strategy_id: str
    strategy_version: str
    symbol: str
    side: str
    qty: Decimal
    order_type: str
    limit_price: Decimal | None
    event_ts: datetime
    created_at: datetime
    executed_at: datetime | None
    status: str
    status_detail: str | None
    risk_reasons: list[RiskReason]
    review: Review | None
    execution_status: str | None
    alpaca_order_id: str | None


class DecisionsPage(msgspec.Struct):
    decisions: list[Decision]
    count: int


class OrderEvent(msgspec.Struct):
    id: int
    event_type: str
    status_from: str | None
    status_to: str
    filled_qty: Decimal
    at: datetime


class Execution(msgspec.Struct):
    id: uuid.UUID
    decision_id: uuid.UUID | None
    alpaca_order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    status: str
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    submitted_at: datetime
    last_update_at: datetime
    reconciled_at: datetime | None
    reconciliation: Literal["reconciled", "pending"]
    events: list[OrderEvent]


class ExecutionsPage(msgspec.Struct):
    executions: list[Execution]
    count: int


class Bar(msgspec.Struct):
    event_ts: datetime
    seq: int
    version: int
    is_final: bool
    ingest_ts: datetime
    o: float
    h: float
    l: float  # noqa: E741 - the domain's name
    c: float
    v: float
    vwap: float | None
    count: int


class BarsPage(msgspec.Struct, rename={"start": "from", "end": "to"}):
    symbol: str
    window: str
    start: datetime
    end: datetime
    bars: list[Bar]
    count: int


class SignalPoint(msgspec.Struct):
    event_ts: datetime
    seq: int
    version: int
    is_final: bool
    ingest_ts: datetime
    values: Signal


class SignalsPage(msgspec.Struct, rename={"start": "from", "end": "to"}):
    symbol: str
    window: str
    start: datetime
    end: datetime
    signals: list[SignalPoint]
    count: int


class TaLatest(msgspec.Struct):
    """The newest signal of a symbol; all ``None`` when it has none yet.

    ``lag_ms`` = now - ``event_ts`` (how stale the newest signal is, the design's "lag");
    ``ingest_lag_ms`` = ``ingest_ts`` - ``event_ts`` (pipeline latency of that signal).
    """

    symbol: str
    window: str
    event_ts: datetime | None
    ingest_ts: datetime | None
    lag_ms: int | None
    ingest_lag_ms: int | None
    values: Signal | None


class Symbols(msgspec.Struct):
    """Configured symbols plus those with signals in the last day (the dashboard's rows)."""

    symbols: list[str]


class Liveness(msgspec.Struct):
    status: Literal["ok"]


class Readiness(msgspec.Struct):
    """``degraded`` (503) while trading is halted: the halts say why."""

    status: Literal["ok", "unavailable", "degraded"]
    clickhouse: DependencyState
    postgres: DependencyState
    kill_switch: bool = False
    halts: list[Halt] = msgspec.field(default_factory=list)
