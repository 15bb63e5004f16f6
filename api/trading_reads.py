"""Read models of the trading audit trail for the API (read-only, over the store's models).

Why not the repository's own read methods alone: the audit view joins what the repository keeps
apart (a decision with its latest LLM review and its execution; an execution with its order
events) and does it in a fixed number of queries per page instead of one per row. It only reads
the tables of :mod:`trading.adapters.store.models`; writes stay with the trading loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from api import schemas
from api.errors import DependencyUnavailable
from api.portfolio import Fill
from trading.adapters.store import TradingDeadLetters
from trading.adapters.store.dead_letters import DeadLetterKind
from trading.adapters.store.models import (
    ExecutionRow,
    LlmReviewRow,
    OrderEventRow,
    PositionSnapshotRow,
    TradeDecisionRow,
)

__all__ = ["TradingReads"]


class TradingReads:
    """Queries over a SQLAlchemy session factory; store failures become 503s."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def fills(self, symbol: str | None, until: datetime | None = None) -> list[Fill]:
        """Every execution with a filled quantity, as a fill at its average price.

        Stamped with the execution's ``last_update_at`` (when the fill was last seen)."""
        with self._session() as s:
            q = sa.select(ExecutionRow).where(
                ExecutionRow.filled_qty > Decimal(0), ExecutionRow.filled_avg_price.is_not(None)
            )
            if symbol is not None:
                q = q.where(ExecutionRow.symbol == symbol)
            if until is not None:
                q = q.where(ExecutionRow.last_update_at < until)
            rows = list(s.scalars(q.order_by(ExecutionRow.last_update_at, ExecutionRow.id)))
        return [
            Fill(r.symbol, r.side, r.filled_qty, r.filled_avg_price or Decimal(0), r.last_update_at)
            for r in rows
        ]

    def latest_snapshots(self) -> dict[str, PositionSnapshotRow]:
        """The newest reconciliation snapshot per symbol (broker vs local quantity)."""
        with self._session() as s:
            newest = (
                sa.select(
                    PositionSnapshotRow.symbol,
                    sa.func.max(PositionSnapshotRow.taken_at).label("taken_at"),
                )
                .group_by(PositionSnapshotRow.symbol)
                .subquery()
            )
            q = sa.select(PositionSnapshotRow).join(
                newest,
                sa.and_(
                    PositionSnapshotRow.symbol == newest.c.symbol,
                    PositionSnapshotRow.taken_at == newest.c.taken_at,
                ),
            )
            return {r.symbol: r for r in s.scalars(q)}

    def rejections(
        self, symbol: str | None, since: datetime | None
    ) -> tuple[int, list[schemas.RejectionReason]]:
        """Rejected decisions and their failing rules, counted per rule code."""
        with self._session() as s:
            q = sa.select(TradeDecisionRow.created_at, TradeDecisionRow.risk_reasons).where(
                TradeDecisionRow.status == "rejected"
            )
            if symbol is not None:
                q = q.where(TradeDecisionRow.symbol == symbol)
            if since is not None:
                q = q.where(TradeDecisionRow.created_at >= since)
            rows = s.execute(q.order_by(TradeDecisionRow.created_at)).all()
        by_code: dict[str, schemas.RejectionReason] = {}
        for created_at, reasons in rows:
            for reason in reasons or ():
                code = str(reason.get("code", "unknown"))
                held = by_code.get(code)
                by_code[code] = schemas.RejectionReason(
                    code=code,
                    count=(held.count if held else 0) + 1,
                    last_at=created_at,
                    last_detail=str(reason.get("detail", "")),
                )
        ordered = sorted(by_code.values(), key=lambda r: (-r.count, r.code))
        return len(rows), ordered

    def markers(
        self, symbol: str, start: datetime, end: datetime, limit: int
    ) -> list[schemas.Marker]:
        """The chart's markers in ``[start, end)``: decisions (at their signal's event time;
        rejections and vetoes with their reasons) and fills (at the fill time, with price)."""
        out: list[schemas.Marker] = []
        with self._session() as s:
            d = TradeDecisionRow
            for row in s.scalars(
                sa.select(d)
                .where(d.symbol == symbol, d.event_ts >= start, d.event_ts < end)
                .order_by(d.event_ts.desc())
                .limit(limit)
            ):
                out.append(_decision_marker(row))
            x = ExecutionRow
            for ex in s.scalars(
                sa.select(x)
                .where(
                    x.symbol == symbol,
                    x.filled_qty > Decimal(0),
                    x.last_update_at >= start,
                    x.last_update_at < end,
                )
                .order_by(x.last_update_at.desc())
                .limit(limit)
            ):
                out.append(
                    schemas.Marker(
                        at=ex.last_update_at,
                        kind="fill",
                        side=ex.side,
                        text=f"fill {ex.side} {ex.filled_qty} @ {ex.filled_avg_price} "
                        f"({ex.status})",
                    )
                )
        return sorted(out, key=lambda m: m.at)

    def decision_lag(self) -> tuple[datetime | None, int | None]:
        """The newest decision's ``created_at`` and its lag behind its signal's event time."""
        with self._session() as s:
            row = s.execute(
                sa.select(TradeDecisionRow.created_at, TradeDecisionRow.event_ts)
                .order_by(TradeDecisionRow.created_at.desc())
                .limit(1)
            ).first()
        if row is None:
            return None, None
        created, event = row
        return created, int((created - event).total_seconds() * 1000)

    def dead_letters(
        self, kind: DeadLetterKind, symbol: str | None, since: datetime | None, limit: int
    ) -> list[schemas.DeadLetter]:
        with self._errors():
            found = TradingDeadLetters(self._engine()).read(kind, symbol, since, limit)
        return [schemas.DeadLetter(**msgspec.structs.asdict(d)) for d in found]

    def dead_letter_counts(self, since: datetime | None) -> dict[tuple[str, str], int]:
        with self._errors():
            return TradingDeadLetters(self._engine()).counts_by_reason(since)

    def decisions(
        self, symbol: str | None, since: datetime | None, limit: int
    ) -> list[schemas.Decision]:
        """Newest first (``created_at``), with review, risk reasons and execution status."""
        with self._session() as s:
            q = sa.select(TradeDecisionRow).order_by(
                TradeDecisionRow.created_at.desc(), TradeDecisionRow.id
            )
            if symbol is not None:
                q = q.where(TradeDecisionRow.symbol == symbol)
            if since is not None:
                q = q.where(TradeDecisionRow.created_at >= since)
            rows = list(s.scalars(q.limit(limit)))
            ids = [r.id for r in rows]
            reviews: dict[Any, LlmReviewRow] = {}
            execs: dict[Any, ExecutionRow] = {}
            if ids:
                for rv in s.scalars(
                    sa.select(LlmReviewRow)
                    .where(LlmReviewRow.decision_id.in_(ids))
                    .order_by(LlmReviewRow.created_at)
                ):
                    reviews[rv.decision_id] = rv
                for ex in s.scalars(
                    sa.select(ExecutionRow)
                    .where(ExecutionRow.decision_id.in_(ids))
                    .order_by(ExecutionRow.submitted_at)
                ):
                    execs[ex.decision_id] = ex
            return [_decision(r, reviews.get(r.id), execs.get(r.id)) for r in rows]

    def executions(
        self, symbol: str | None, since: datetime | None, limit: int
    ) -> list[schemas.Execution]:
        """Newest first (``submitted_at``), each with its order events in order."""
        with self._session() as s:
            q = sa.select(ExecutionRow).order_by(ExecutionRow.submitted_at.desc(), ExecutionRow.id)
            if symbol is not None:
                q = q.where(ExecutionRow.symbol == symbol)
            if since is not None:
                q = q.where(ExecutionRow.submitted_at >= since)
            rows = list(s.scalars(q.limit(limit)))
            events: dict[Any, list[schemas.OrderEvent]] = {r.id: [] for r in rows}
            if rows:
                for ev in s.scalars(
                    sa.select(OrderEventRow)
                    .where(OrderEventRow.execution_id.in_(list(events)))
                    .order_by(OrderEventRow.id)
                ):
                    events[ev.execution_id].append(
                        schemas.OrderEvent(
                            id=ev.id,
                            event_type=ev.event_type,
                            status_from=ev.status_from,
                            status_to=ev.status_to,
                            filled_qty=ev.filled_qty,
                            at=ev.at,
                        )
                    )
            return [_execution(r, events[r.id]) for r in rows]

    def last_decision_at(self) -> datetime | None:
        with self._session() as s:
            return s.scalar(sa.select(sa.func.max(TradeDecisionRow.created_at)))

    def last_reconcile_at(self) -> datetime | None:
        """The latest reconciliation pass: an execution reconciled or a position snapshot."""
        with self._session() as s:
            orders = s.scalar(sa.select(sa.func.max(ExecutionRow.reconciled_at)))
            positions = s.scalar(sa.select(sa.func.max(PositionSnapshotRow.taken_at)))
        found = [t for t in (orders, positions) if t is not None]
        return max(found) if found else None

    def ping(self) -> None:
        with self._session() as s:
            s.execute(sa.text("SELECT 1"))

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A read session; SQLAlchemy errors (store down, schema missing) become 503s."""
        with self._errors(), self._sessions() as session:
            yield session

    def _engine(self) -> sa.Engine:
        bind = self._sessions.kw["bind"]
        assert isinstance(bind, sa.Engine)
        return bind

    @staticmethod
    @contextmanager
    def _errors() -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise DependencyUnavailable("postgres", str(exc).splitlines()[0][:300]) from exc


def _decision(
    row: TradeDecisionRow, review: LlmReviewRow | None, execution: ExecutionRow | None
) -> schemas.Decision:
    return schemas.Decision(
        id=row.id,
        decision_hash=row.decision_hash,
        strategy_id=row.strategy_id,
        strategy_version=row.strategy_version,
        symbol=row.symbol,
        side=row.side,
        qty=row.qty,
        order_type=row.order_type,
        limit_price=row.limit_price,
        event_ts=row.event_ts,
        created_at=row.created_at,
        executed_at=row.executed_at,
        status=row.status,
        status_detail=row.status_detail,
        risk_reasons=[
            schemas.RiskReason(code=r["code"], detail=r["detail"]) for r in row.risk_reasons or ()
        ],
        review=None if review is None else _review(review),
        execution_status=None if execution is None else execution.status,
        alpaca_order_id=None if execution is None else execution.alpaca_order_id,
    )


def _decision_marker(row: TradeDecisionRow) -> schemas.Marker:
    kind: schemas.MarkerKind = (
        "rejection"
        if row.status == "rejected"
        else "veto"
        if row.status == "vetoed"
        else "decision"
    )
    text = f"{row.strategy_id}: {row.side} {row.qty} ({row.status})"
    reasons = "; ".join(f"{r['code']}: {r['detail']}" for r in row.risk_reasons or ())
    if reasons:
        text += f" — {reasons}"
    elif row.status_detail:
        text += f" — {row.status_detail}"
    return schemas.Marker(at=row.event_ts, kind=kind, side=row.side, text=text)


def _review(row: LlmReviewRow) -> schemas.Review:
    return schemas.Review(
        model=row.model,
        prompt_version=row.prompt_version,
        verdict=row.verdict,
        effective_verdict=row.effective_verdict,
        confidence=row.confidence,
        adjusted_qty=row.adjusted_qty,
        shadow=row.shadow,
        fallback=row.fallback,
        latency_ms=row.latency_ms,
        error=row.error,
        created_at=row.created_at,
    )


def _execution(row: ExecutionRow, events: list[schemas.OrderEvent]) -> schemas.Execution:
    return schemas.Execution(
        id=row.id,
        decision_id=row.decision_id,
        alpaca_order_id=row.alpaca_order_id,
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=row.side,
        qty=row.qty,
        status=row.status,
        filled_qty=row.filled_qty,
        filled_avg_price=row.filled_avg_price,
        submitted_at=row.submitted_at,
        last_update_at=row.last_update_at,
        reconciled_at=row.reconciled_at,
        reconciliation="reconciled" if row.reconciled_at is not None else "pending",
        events=events,
    )
