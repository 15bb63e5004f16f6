"""Gathering what the promotion check judges, from the trading store; the only I/O of a check.

* the run's metrics, decision counts and shadow evaluation (``backtest_runs``);
* the baseline run's verdict rates and the verdict stability between the two;
* the paper record since the last passing promotion (of any subject): realised PnL of the
  paper executions in submission order, as a drawdown on the policy's ``equity``, and the
  reconciliation halts (failing passes, position drift) raised since then versus in the same
  span before;
* whether the subject differs from the last promoted one, and its recorded sign-offs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from trading.adapters.store.models import ExecutionRow, TradingHaltRow
from trading.backtest.records import BacktestRunRow, get_run
from trading.backtest.shadow import verdict_stability
from trading.core.control_state import HaltKind
from trading.promote.policy import Evidence
from trading.promote.records import latest_passing, signoffs_for

__all__ = ["UnknownRun", "gather", "paper_drawdown"]

_RECONCILIATION = (HaltKind.RECONCILE_FAILING.value, HaltKind.POSITION_DRIFT.value)


class UnknownRun(LookupError):
    pass


def gather(
    session: Session,
    run_id: uuid.UUID,
    baseline_id: uuid.UUID | None,
    *,
    paper_equity: float,
    now: datetime,
) -> tuple[Evidence, BacktestRunRow]:
    run = _run(session, run_id)
    baseline = _run(session, baseline_id) if baseline_id is not None else None
    overall: dict[str, Any] = run.metrics["overall"]
    statuses: dict[str, int] = run.summary.get("statuses", {})
    last = latest_passing(session)
    since = last.created_at if last is not None else None
    errors, before = _reconciliation_errors(session, since, now)
    evidence = Evidence(
        sharpe=overall.get("sharpe"),
        max_drawdown=overall.get("max_drawdown"),
        decisions=int(run.summary.get("decisions", 0)),
        rejected=int(statuses.get("rejected", 0)),
        reviewed=run.inputs.get("prompt_version") is not None,
        veto_rate=run.shadow.get("veto_rate"),
        approve_rate=run.shadow.get("approve_rate"),
        baseline_veto_rate=baseline.shadow.get("veto_rate") if baseline else None,
        baseline_approve_rate=baseline.shadow.get("approve_rate") if baseline else None,
        has_baseline=baseline is not None,
        verdict_stability=(
            verdict_stability(run.verdicts, baseline.verdicts) if baseline is not None else None
        ),
        veto_precision=run.shadow.get("veto_precision"),
        veto_recall=run.shadow.get("veto_recall"),
        paper_drawdown=paper_drawdown(session, since, Decimal(str(paper_equity))),
        reconciliation_errors=errors,
        reconciliation_errors_before=before,
        subject_changed=last is None or last.subject_hash != run.subject_hash,
        signoffs=len(signoffs_for(session, run.subject_hash)),
    )
    return evidence, run


def paper_drawdown(session: Session, since: datetime | None, equity: Decimal) -> float | None:
    """Max drawdown (fraction) of ``equity`` + realised PnL of the filled paper executions
    submitted since ``since``; ``None`` without any."""
    q = sa.select(
        ExecutionRow.symbol,
        ExecutionRow.side,
        ExecutionRow.filled_qty,
        ExecutionRow.filled_avg_price,
    ).where(ExecutionRow.filled_qty > Decimal(0), ExecutionRow.filled_avg_price.is_not(None))
    if since is not None:
        q = q.where(ExecutionRow.submitted_at >= since)
    q = q.order_by(ExecutionRow.submitted_at, ExecutionRow.id)
    held: dict[str, tuple[Decimal, Decimal]] = {}
    value = peak = equity
    worst = Decimal(0)
    seen = False
    for symbol, side, qty, filled_price in session.execute(q):
        seen = True
        price = filled_price if filled_price is not None else Decimal(0)
        pos, avg = held.get(symbol, (Decimal(0), Decimal(0)))
        signed = qty if side == "buy" else -qty
        if pos == 0 or (pos > 0) == (signed > 0):
            avg = (avg * abs(pos) + price * qty) / (abs(pos) + qty)
        else:
            closing = min(qty, abs(pos))
            value += (price - avg) * closing * (1 if pos > 0 else -1)
            if qty > abs(pos):
                avg = price
        held[symbol] = (pos + signed, avg)
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return float(worst) if seen else None


def _reconciliation_errors(
    session: Session, since: datetime | None, now: datetime
) -> tuple[int, int]:
    def count(low: datetime | None, high: datetime | None) -> int:
        q = sa.select(sa.func.count()).where(TradingHaltRow.kind.in_(_RECONCILIATION))
        if low is not None:
            q = q.where(TradingHaltRow.since >= low)
        if high is not None:
            q = q.where(TradingHaltRow.since < high)
        return int(session.scalar(q) or 0)

    if since is None:
        return count(None, None), 0
    return count(since, None), count(since - (now - since), since)


def _run(session: Session, run_id: uuid.UUID) -> BacktestRunRow:
    run = get_run(session, run_id)
    if run is None:
        raise UnknownRun(f"no backtest run {run_id} in backtest_runs")
    return run
