"""Response bodies of the API as ``msgspec.Struct`` s (typed, fast JSON, shown in OpenAPI).

Shapes follow the product design's examples (``/trading/status``, ``/trading/health``) and add
what an operator needs to audit a decision end to end. Money and quantities are ``Decimal`` and
therefore JSON strings (exact); timestamps are ISO-8601 UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from torghut.events import Signal

__all__ = [
    "Account",
    "Bar",
    "BarsPage",
    "ConsoleState",
    "ConsoleUpdate",
    "ControlEvent",
    "ControlRequest",
    "ControlResult",
    "Controls",
    "CountByReason",
    "DeadLetter",
    "DeadLettersPage",
    "Decision",
    "DecisionsPage",
    "DependencyState",
    "Execution",
    "ExecutionsPage",
    "Halt",
    "KillSwitchRequest",
    "KillSwitchState",
    "Liveness",
    "Marker",
    "MarkerKind",
    "MarkersPage",
    "OrderEvent",
    "Pipeline",
    "PipelineLive",
    "PnlByDay",
    "PnlBySymbol",
    "PnlReport",
    "PnlRow",
    "Position",
    "PositionsPage",
    "Readiness",
    "RejectionReason",
    "Rejections",
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


Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=r"\S")]
"""Why: goes to the audit trail; not blank, at most 1000 characters."""


class KillSwitchRequest(msgspec.Struct, forbid_unknown_fields=True):
    engaged: bool
    reason: Reason


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


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


# --- positions, account, PnL, rejections, dead letters, pipeline ----------------------------


class Position(msgspec.Struct):
    """An open position from the recorded fills (average cost), marked at the last close, with
    the broker's quantity from the latest reconciliation snapshot beside it."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    last_price: Decimal | None
    market_value: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal
    broker_qty: Decimal | None
    drift_qty: Decimal | None
    snapshot_at: datetime | None


class PositionsPage(msgspec.Struct):
    positions: list[Position]
    count: int
    gross_exposure: Decimal
    net_exposure: Decimal


class Account(msgspec.Struct):
    """Figures from the fills (always) and from the broker (``None`` when none is attached or
    it cannot answer: ``broker`` says which)."""

    realized_pnl: Decimal
    unrealized_pnl: Decimal
    gross_exposure: Decimal
    net_exposure: Decimal
    open_positions: int
    fills: int
    broker: DependencyState
    equity: Decimal | None
    last_equity: Decimal | None
    cash: Decimal | None
    buying_power: Decimal | None
    as_of: datetime


class PnlRow(msgspec.Struct):
    day: str
    symbol: str
    realized_pnl: Decimal
    fills: int


class PnlBySymbol(msgspec.Struct):
    symbol: str
    realized_pnl: Decimal
    unrealized_pnl: Decimal | None
    fills: int


class PnlByDay(msgspec.Struct):
    day: str
    realized_pnl: Decimal
    fills: int


class PnlReport(msgspec.Struct):
    """Realised PnL per UTC day and symbol (``rows``), and its totals by day and by symbol."""

    rows: list[PnlRow]
    by_day: list[PnlByDay]
    by_symbol: list[PnlBySymbol]
    realized_pnl: Decimal
    unrealized_pnl: Decimal


class RejectionReason(msgspec.Struct):
    code: str
    count: int
    last_at: datetime
    last_detail: str


class Rejections(msgspec.Struct):
    """Risk rejections (decisions with ``status = rejected``) counted by rule; a decision that
    failed several rules counts once under each."""

    decisions: int
    by_reason: list[RejectionReason]


class DeadLetter(msgspec.Struct):
    """A signal row the trading loop refused (``kind = dead_letter``) or a signal that changed
    after it was acted on (``kind = correction``; audited, never re-traded)."""

    id: int
    kind: Literal["dead_letter", "correction"]
    at: datetime
    symbol: str
    window_size: str
    event_ts: datetime
    seq: int
    reason: str
    detail: str
    record: dict[str, Any]


class DeadLettersPage(msgspec.Struct):
    items: list[DeadLetter]
    count: int


class CountByReason(msgspec.Struct):
    source: str
    reason: str
    count: int


class PipelineLive(msgspec.Struct):
    """What only the process running the dataflows knows (the demo, the all-in-one flow)."""

    ingest_state: str
    ingest_detail: str
    ingest_last_message_at: datetime | None
    ingest_reconnects: int
    watermark_at: datetime | None
    last_snapshot_at: datetime | None
    last_backup_at: datetime | None
    dead_letters: list[CountByReason]


class Pipeline(msgspec.Struct):
    """The dashboard's pipeline panel. ``ta_lag_ms``: now - the newest signal's event time (any
    symbol); ``ta_watermark_lag_ms``: now - the TA watermark when the flow runs in this process;
    ``decision_lag_ms``: the newest decision's ``created_at`` - its signal's ``event_ts``."""

    as_of: datetime
    ingest_state: str
    ingest_detail: str
    ingest_last_message_at: datetime | None
    ta_last_signal_at: datetime | None
    ta_lag_ms: int | None
    ta_watermark_lag_ms: int | None
    last_snapshot_at: datetime | None
    last_backup_at: datetime | None
    last_decision_at: datetime | None
    decision_lag_ms: int | None
    last_reconcile_at: datetime | None
    dead_letters: list[CountByReason]


MarkerKind = Literal["decision", "fill", "rejection", "veto"]


class Marker(msgspec.Struct):
    """A point on the chart: a decision, a fill, a risk rejection or a review veto; ``text`` is
    what the page shows on hover (strategy, side, qty, status and the reasons)."""

    at: datetime
    kind: MarkerKind
    side: str
    text: str


class MarkersPage(msgspec.Struct):
    markers: list[Marker]
    count: int


class ConsoleState(msgspec.Struct):
    """The trading state the console's header shows (cheap: no dependency checks)."""

    state: Literal["active", "halted", "disabled"]
    kill_switch: KillSwitchState
    halts: list[Halt]
    pending_commands: int


class ConsoleUpdate(msgspec.Struct):
    """One push of the live dashboard: the chart's new and revised bars and signals since
    ``since``, the markers since then, the trading state and the pipeline panel."""

    symbol: str
    window: str
    since: datetime
    as_of: datetime
    bars: list[Bar]
    signals: list[SignalPoint]
    markers: list[Marker]
    trading: ConsoleState | None
    pipeline: Pipeline
