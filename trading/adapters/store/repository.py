"""The trading store: a unit of work per decision over the SQLAlchemy models.

Why a unit of work (cosmicpython ch. 6): a decision, its LLM review, its risk verdict and the
order intent are committed in one transaction, so a crash leaves all or none of them. The
decision hash is unique; :meth:`UnitOfWork.record_decision` inserts *if absent* (``INSERT … ON
CONFLICT DO NOTHING`` on both Postgres and SQLite) and a replay or a concurrent duplicate gets
the existing row back (``created=False``) and writes nothing else.

Order updates go through the order state machine (:mod:`trading.core.orders`): each accepted
transition updates ``executions`` and appends one ``order_events`` row in the same transaction;
a repeated observation writes nothing; an invalid one raises
:class:`~trading.core.orders.InvalidOrderTransition` (logged and counted there) and writes nothing.

Use :class:`TradingStore` for one-call transactions, or ``with store.unit_of_work() as uow:``
to group several steps (e.g. a decision and the signal cursor) and ``uow.commit()``; leaving
the block without ``commit()`` rolls everything back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from torghut.logs import get_logger
from trading.adapters.store.controls import ControlStore
from trading.adapters.store.errors import translated
from trading.adapters.store.migrate import upgrade
from trading.adapters.store.models import (
    ExecutionRow,
    LlmReviewRow,
    OrderEventRow,
    PositionSnapshotRow,
    TradeCursorRow,
    TradeDecisionRow,
)
from trading.adapters.system_clock import SystemClock
from trading.core.adjudicate import Adjudication
from trading.core.clock import Clock
from trading.core.decisions import DecisionStatus, initial_status
from trading.core.decisions import check_transition as check_decision
from trading.core.domain import OrderType
from trading.core.llm.policy import ReviewOutcome
from trading.core.orders import (
    ACTIVE,
    OrderStatus,
    Transition,
    check_observation,
    check_transition,
)
from trading.core.ports import (
    BrokerOrder,
    PositionSnapshot,
    SignalCursor,
    StoreUnavailable,
    ids_not_one,
)
from trading.core.records import (
    PositionDrift,
    StoredDecision,
    StoredExecution,
    StoredOrderEvent,
    position_drifts,
)
from trading.core.risk import RecentOrder, RiskCheck, RiskReason

__all__ = ["OPEN_FAILURES", "TradingStore", "UnitOfWork", "create_engine"]

log = get_logger("trading.adapters.store")

OPEN_FAILURES = Counter(
    "torghut_trading_store_open_failures_total",
    "Attempts to open (connect and migrate) the trading store that found it unavailable.",
)


class UnitOfWork:
    """One transaction over the trading store. Commit explicitly; otherwise it rolls back."""

    def __init__(self, session: Session, now: Callable[[], datetime]) -> None:
        self.session = session
        self._now = now
        self._pg = session.get_bind().dialect.name == "postgresql"

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    # --- decisions ----------------------------------------------------------------------

    def record_decision(self, adjudication: Adjudication) -> StoredDecision:
        """:meth:`record_decisions` of one decision."""
        return self.record_decisions([adjudication])[0]

    def record_decisions(self, adjudications: Sequence[Adjudication]) -> list[StoredDecision]:
        """Insert each adjudicated decision with its review, risk verdict and order intent, if
        absent, in order. The status is the domain's
        (:func:`~trading.core.decisions.initial_status`), ``qty`` the reviewed one
        (``adjudication.final``); ``decision_json`` keeps the deterministic decision as the
        strategy made it.

        Why one statement for all: the trading loop records a poll's decisions (hundreds at
        10 k events/s) in one unit of work, and an ORM insert per decision cost ~5 ms of Python
        each — most of the decision lag. A Core ``INSERT … ON CONFLICT DO NOTHING RETURNING``
        over all rows (SQLAlchemy's "insertmanyvalues" batches them) returns the inserted rows;
        only conflicts (replays, a concurrent duplicate) are read back."""
        if not adjudications:
            return []
        now = self._now()
        values = [_decision_values(a, now) for a in adjudications]
        table = cast(sa.Table, TradeDecisionRow.__table__)
        insert = postgresql.insert if self._pg else sqlite.insert
        stmt = (
            insert(table)
            .on_conflict_do_nothing(index_elements=["decision_hash"])
            .returning(*table.c)
        )
        inserted = {r.decision_hash: _decision(r) for r in self.session.execute(stmt, values)}
        hashes = [v["decision_hash"] for v in values]
        existing = self._decisions_by_hash([h for h in hashes if h not in inserted])
        stored: list[StoredDecision] = []
        reviews: list[LlmReviewRow] = []
        for adjudication, h in zip(adjudications, hashes, strict=True):
            new = inserted.pop(h, None)  # a repeat of it later in the batch finds it existing
            if new is not None:
                existing[h] = new
                stored.append(msgspec.structs.replace(new, created=True))
                if adjudication.review is not None:
                    reviews.append(_review_row(new.id, adjudication.review, now))
                continue
            found = existing.get(h)
            if found is None:
                raise RuntimeError(f"decision {h} conflicted but is not visible")
            stored.append(found)
        if reviews:
            self.session.add_all(reviews)
            self.session.flush()
        return stored

    def _decisions_by_hash(self, hashes: Sequence[str]) -> dict[str, StoredDecision]:
        if not hashes:
            return {}
        rows = self.session.scalars(
            sa.select(TradeDecisionRow).where(TradeDecisionRow.decision_hash.in_(set(hashes)))
        )
        return {r.decision_hash: _decision(r) for r in rows}

    def get_decision(self, decision_hash: str) -> StoredDecision | None:
        row = self.session.scalars(
            sa.select(TradeDecisionRow).where(TradeDecisionRow.decision_hash == decision_hash)
        ).one_or_none()
        return None if row is None else _decision(row)

    def pending_submissions(self) -> list[StoredDecision]:
        """Order intents not yet acknowledged by the broker (to resolve after a restart)."""
        rows = self.session.scalars(
            sa.select(TradeDecisionRow)
            .where(TradeDecisionRow.status == DecisionStatus.PENDING_SUBMIT.value)
            .order_by(TradeDecisionRow.created_at)
        )
        return [_decision(r) for r in rows]

    def record_submission(self, order: BrokerOrder) -> StoredExecution:
        """The broker acknowledged the order of decision ``order.client_order_id``.

        Creates the execution (idempotent on the order ids), appends the ``intent → status``
        event and marks the decision ``submitted``.
        """
        decision = self._decision_row(order.client_order_id, lock=True)
        if decision is None:
            raise LookupError(f"no decision with hash {order.client_order_id}")
        existing = self._execution_row(order.id, lock=True)
        if existing is not None:
            return _execution(existing)
        return _execution(self._create_execution(order, decision, "submitted", {}))

    def record_submit_failure(self, decision_hash: str, error: str) -> None:
        """The broker definitively refused the order (not a transport fault: those are retried)."""
        row = self._decision_row(decision_hash, lock=True)
        if row is None:
            raise LookupError(f"no decision with hash {decision_hash}")
        check_decision(decision_hash, DecisionStatus(row.status), DecisionStatus.SUBMIT_FAILED)
        row.status = DecisionStatus.SUBMIT_FAILED.value
        row.status_detail = error[:1000]
        self.session.flush()

    # --- orders -------------------------------------------------------------------------

    def apply_order_update(
        self,
        order: BrokerOrder,
        *,
        event_type: str,
        at: datetime,
        payload: dict[str, Any] | None = None,
    ) -> Transition:
        """Apply one observed broker order state (stream event or poll).

        An order we never recorded is adopted: through its decision if ``client_order_id`` is one
        of our decision hashes (the crash-between-submit-and-persist case), else as an execution
        without a decision (an order placed outside this loop), in both cases from ``intent``.
        ``payload`` (the raw event, for audit) must be JSON-ready: ``msgspec.to_builtins(...)``.
        """
        row = self._execution_row(order.id, lock=True)
        if row is None:
            decision = self._decision_row(order.client_order_id, lock=True)
            self._create_execution(order, decision, event_type, payload or {}, at=at)
            return Transition.ADVANCE
        current = OrderStatus(row.status)
        step = check_observation(
            row.alpaca_order_id,
            status_from=current,
            updated_from=row.last_update_at,
            filled_from=row.filled_qty,
            status_to=order.status,
            updated_to=order.updated_at,
            filled_to=order.filled_qty,
        )
        if step is not Transition.ADVANCE:
            return step
        row.status = order.status.value
        row.filled_qty = order.filled_qty
        row.filled_avg_price = order.filled_avg_price
        row.last_update_at = order.updated_at
        self.session.add(
            OrderEventRow(
                execution_id=row.id,
                alpaca_order_id=row.alpaca_order_id,
                event_type=event_type,
                status_from=current.value,
                status_to=order.status.value,
                filled_qty=order.filled_qty,
                payload=payload or {},
                at=at,
                recorded_at=self._now(),
            )
        )
        self.session.flush()
        return step

    def mark_reconciled(self, alpaca_order_ids: Collection[str], at: datetime) -> None:
        ids_not_one(alpaca_order_ids)
        if alpaca_order_ids:
            self.session.execute(
                sa.update(ExecutionRow)
                .where(ExecutionRow.alpaca_order_id.in_(set(alpaca_order_ids)))
                .values(reconciled_at=at)
            )

    def executions_to_reconcile(self) -> list[StoredExecution]:
        """Executions the broker has not confirmed as stored: non-terminal ones, and those never
        reconciled or changed since (the reconciler polls these)."""
        e = ExecutionRow
        rows = self.session.scalars(
            sa.select(e)
            .where(
                e.status.in_([s.value for s in ACTIVE])
                | e.reconciled_at.is_(None)
                | (e.reconciled_at < e.last_update_at)
            )
            .order_by(e.submitted_at)
        )
        return [_execution(r) for r in rows]

    def get_execution(self, alpaca_order_id: str) -> StoredExecution | None:
        row = self._execution_row(alpaca_order_id, lock=False)
        return None if row is None else _execution(row)

    def get_executions(self, alpaca_order_ids: Collection[str]) -> dict[str, StoredExecution]:
        ids_not_one(alpaca_order_ids)
        if not alpaca_order_ids:
            return {}
        rows = self.session.scalars(
            sa.select(ExecutionRow).where(ExecutionRow.alpaca_order_id.in_(set(alpaca_order_ids)))
        )
        return {r.alpaca_order_id: _execution(r) for r in rows}

    def order_events(self, alpaca_order_id: str) -> list[StoredOrderEvent]:
        rows = self.session.scalars(
            sa.select(OrderEventRow)
            .where(OrderEventRow.alpaca_order_id == alpaca_order_id)
            .order_by(OrderEventRow.id)
        )
        return [
            StoredOrderEvent(
                id=r.id,
                alpaca_order_id=r.alpaca_order_id,
                event_type=r.event_type,
                status_from=OrderStatus(r.status_from) if r.status_from else None,
                status_to=OrderStatus(r.status_to),
                filled_qty=r.filled_qty,
                at=r.at,
                payload=r.payload,
            )
            for r in rows
        ]

    def recent_orders(self, since: datetime) -> list[RecentOrder]:
        """Order intents and submitted orders since ``since`` (for rate and cooldown rules)."""
        rows = self.session.execute(
            sa.select(TradeDecisionRow.symbol, TradeDecisionRow.created_at).where(
                TradeDecisionRow.created_at >= since,
                TradeDecisionRow.status.in_(
                    [DecisionStatus.PENDING_SUBMIT.value, DecisionStatus.SUBMITTED.value]
                ),
            )
        )
        return [RecentOrder(symbol, at) for symbol, at in rows]

    def local_positions(self) -> dict[str, Decimal]:
        """Signed filled quantity per symbol over all recorded executions."""
        held: dict[str, Decimal] = {}
        rows = self.session.execute(
            sa.select(ExecutionRow.symbol, ExecutionRow.side, ExecutionRow.filled_qty)
        )
        for symbol, side, filled in rows:
            held[symbol] = held.get(symbol, Decimal(0)) + (filled if side == "buy" else -filled)
        return held

    def record_positions(
        self, taken_at: datetime, broker: Sequence[PositionSnapshot]
    ) -> list[PositionDrift]:
        """Store broker vs local position per symbol (either side non-zero); returns them all."""
        drifts = position_drifts(self.local_positions(), broker)
        self.session.add_all(
            PositionSnapshotRow(
                id=uuid.uuid4(),
                taken_at=taken_at,
                symbol=d.symbol,
                broker_qty=d.broker_qty,
                local_qty=d.local_qty,
                drift_qty=d.drift,
            )
            for d in drifts
        )
        self.session.flush()
        return drifts

    # --- signal cursor ------------------------------------------------------------------

    def load_cursor(self, source: str) -> SignalCursor | None:
        row = self.session.get(TradeCursorRow, source)
        if row is None:
            return None
        return SignalCursor(row.window_size, row.event_ts, row.symbol, row.seq)

    def save_cursor(self, source: str, cursor: SignalCursor) -> None:
        values = {
            "source": source,
            "window_size": cursor.window_size,
            "event_ts": cursor.event_ts,
            "symbol": cursor.symbol,
            "seq": cursor.seq,
            "updated_at": self._now(),
        }
        insert = postgresql.insert if self._pg else sqlite.insert
        stmt = insert(TradeCursorRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source"], set_={k: stmt.excluded[k] for k in values if k != "source"}
        )
        self.session.execute(stmt)

    # --- read models (API) --------------------------------------------------------------

    def decisions(
        self, symbol: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[StoredDecision]:
        q = sa.select(TradeDecisionRow).order_by(TradeDecisionRow.created_at.desc()).limit(limit)
        if symbol is not None:
            q = q.where(TradeDecisionRow.symbol == symbol)
        if since is not None:
            q = q.where(TradeDecisionRow.created_at >= since)
        return [_decision(r) for r in self.session.scalars(q)]

    def executions(
        self, symbol: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[StoredExecution]:
        q = sa.select(ExecutionRow).order_by(ExecutionRow.submitted_at.desc()).limit(limit)
        if symbol is not None:
            q = q.where(ExecutionRow.symbol == symbol)
        if since is not None:
            q = q.where(ExecutionRow.submitted_at >= since)
        return [_execution(r) for r in self.session.scalars(q)]

    def review_count(self, decision_hash: str) -> int:
        return (
            self.session.scalar(
                sa.select(sa.func.count())
                .select_from(LlmReviewRow)
                .join(TradeDecisionRow, LlmReviewRow.decision_id == TradeDecisionRow.id)
                .where(TradeDecisionRow.decision_hash == decision_hash)
            )
            or 0
        )

    # --- helpers ------------------------------------------------------------------------

    def _decision_row(self, decision_hash: str, *, lock: bool) -> TradeDecisionRow | None:
        q = sa.select(TradeDecisionRow).where(TradeDecisionRow.decision_hash == decision_hash)
        return self.session.scalars(q.with_for_update() if lock else q).one_or_none()

    def _execution_row(self, alpaca_order_id: str, *, lock: bool) -> ExecutionRow | None:
        q = sa.select(ExecutionRow).where(ExecutionRow.alpaca_order_id == alpaca_order_id)
        return self.session.scalars(q.with_for_update() if lock else q).one_or_none()

    def _create_execution(
        self,
        order: BrokerOrder,
        decision: TradeDecisionRow | None,
        event_type: str,
        payload: dict[str, Any],
        at: datetime | None = None,
    ) -> ExecutionRow:
        check_transition(order.id, OrderStatus.INTENT, order.status, filled_to=order.filled_qty)
        row = ExecutionRow(
            id=uuid.uuid4(),
            decision_id=decision.id if decision is not None else None,
            alpaca_order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            status=order.status.value,
            filled_qty=order.filled_qty,
            filled_avg_price=order.filled_avg_price,
            submitted_at=order.submitted_at,
            last_update_at=order.updated_at,
            reconciled_at=None,
        )
        self.session.add(row)
        self.session.flush()
        self.session.add(
            OrderEventRow(
                execution_id=row.id,
                alpaca_order_id=order.id,
                event_type=event_type,
                status_from=OrderStatus.INTENT.value,
                status_to=order.status.value,
                filled_qty=order.filled_qty,
                payload=payload,
                at=at or order.updated_at,
                recorded_at=self._now(),
            )
        )
        if decision is not None and decision.status == DecisionStatus.PENDING_SUBMIT.value:
            check_decision(
                decision.decision_hash, DecisionStatus.PENDING_SUBMIT, DecisionStatus.SUBMITTED
            )
            decision.status = DecisionStatus.SUBMITTED.value
            decision.executed_at = order.submitted_at
        self.session.flush()
        return row


class TradingStore:
    """The store's entry point: opens units of work; one-call transactions for the common steps."""

    def __init__(self, engine: sa.Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        clock = clock or SystemClock()
        self._now = clock.now
        self.controls = ControlStore(engine, clock)
        """The control store (kill switch, halts, commands) over the same engine."""

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, wait_s: float = 0.0) -> TradingStore:
        """Engine for ``url`` (SQLite: foreign keys on, WAL, busy timeout); migrated to head.

        Safe for processes starting together (the migration takes a Postgres advisory lock); not
        for threads of one process (Alembic's context is process-global): open once, share it.
        A store that does not answer raises :class:`~trading.core.ports.StoreUnavailable`,
        after trying again for up to ``wait_s`` seconds (with back-off, each failure logged
        and counted in ``torghut_trading_store_open_failures_total``). A SQLite file is not
        waited for: a local file that cannot be opened is a mistake, not an outage.
        """
        if url.startswith("sqlite"):
            wait_s = 0.0
        retrying = Retrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential(multiplier=0.25, max=5.0),
            stop=stop_after_delay(wait_s),
            before_sleep=_log_open_retry,
            reraise=True,
        )
        return retrying(cls._open_once, url, migrate)

    @classmethod
    def _open_once(cls, url: str, migrate: bool) -> TradingStore:
        engine = create_engine(url)
        if migrate:  # the first connection; without it the engine connects on first use
            try:
                with translated():
                    upgrade(engine)
            except StoreUnavailable:
                engine.dispose()
                OPEN_FAILURES.inc()
                raise
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction; SQLAlchemy errors leave it as the port's ``StoreError``s."""
        with translated(), self._sessions() as session:
            uow = UnitOfWork(session, self._now)
            try:
                yield uow
            finally:
                session.rollback()

    def record_decision(self, adjudication: Adjudication) -> StoredDecision:
        with self.unit_of_work() as uow:
            stored = uow.record_decision(adjudication)
            uow.commit()
            return stored

    def record_submission(self, order: BrokerOrder) -> StoredExecution:
        with self.unit_of_work() as uow:
            stored = uow.record_submission(order)
            uow.commit()
            return stored

    def apply_order_update(
        self,
        order: BrokerOrder,
        *,
        event_type: str,
        at: datetime,
        payload: dict[str, Any] | None = None,
    ) -> Transition:
        with self.unit_of_work() as uow:
            step = uow.apply_order_update(order, event_type=event_type, at=at, payload=payload)
            uow.commit()
            return step


def create_engine(url: str) -> sa.Engine:
    """An engine for the trading store; SQLite gets the pragmas the models rely on and its
    file's directory (the embedded default lives under ``TORGHUT_DATA_DIR``)."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    return engine


def _decision_values(adjudication: Adjudication, now: datetime) -> dict[str, Any]:
    """The ``trade_decisions`` row of an adjudicated decision (see ``record_decisions``)."""
    decision, risk = adjudication.decision, adjudication.risk
    status = initial_status(adjudication)
    reasons = (
        [{"code": r.code.value, "detail": r.detail} for r in risk.reasons]
        if status is DecisionStatus.REJECTED and risk is not None
        else None
    )
    return {
        "id": uuid.uuid4(),
        "decision_hash": decision.decision_hash,
        "strategy_id": decision.strategy_id,
        "strategy_version": decision.strategy_version,
        "symbol": decision.symbol,
        "side": decision.action.value,
        "qty": adjudication.final.qty,
        "order_type": decision.order_type.value,
        "limit_price": decision.limit_price,
        "event_ts": decision.event_ts,
        "status": status.value,
        "status_detail": None,
        "risk_reasons": reasons,
        "decision_json": msgspec.to_builtins(decision),
        "created_at": now,
        "executed_at": None,
    }


def _review_row(decision_id: uuid.UUID, review: ReviewOutcome, now: datetime) -> LlmReviewRow:
    return LlmReviewRow(
        id=uuid.uuid4(),
        decision_id=decision_id,
        model=review.model,
        prompt_version=review.prompt_version,
        verdict=review.verdict,
        effective_verdict=review.effective_verdict,
        confidence=review.confidence,
        adjusted_qty=review.adjusted_qty,
        shadow=review.shadow,
        fallback=review.fallback,
        tokens_in=review.tokens_in,
        tokens_out=review.tokens_out,
        latency_ms=review.latency_ms,
        raw_response=review.raw_response,
        error=review.error,
        created_at=now,
    )


def _decision(row: TradeDecisionRow | sa.Row[Any]) -> StoredDecision:
    return StoredDecision(
        id=row.id,
        decision_hash=row.decision_hash,
        strategy_id=row.strategy_id,
        strategy_version=row.strategy_version,
        symbol=row.symbol,
        side=row.side,
        qty=row.qty,
        order_type=OrderType(row.order_type),
        limit_price=row.limit_price,
        event_ts=row.event_ts,
        status=DecisionStatus(row.status),
        status_detail=row.status_detail,
        risk_reasons=tuple(
            RiskReason(RiskCheck(r["code"]), r["detail"]) for r in (row.risk_reasons or ())
        ),
        created_at=row.created_at,
        executed_at=row.executed_at,
    )


def _execution(row: ExecutionRow) -> StoredExecution:
    return StoredExecution(
        id=row.id,
        decision_id=row.decision_id,
        alpaca_order_id=row.alpaca_order_id,
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=row.side,
        qty=row.qty,
        status=OrderStatus(row.status),
        filled_qty=row.filled_qty,
        filled_avg_price=row.filled_avg_price,
        submitted_at=row.submitted_at,
        last_update_at=row.last_update_at,
        reconciled_at=row.reconciled_at,
    )


def _log_open_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "trading_store_unavailable_waiting",
        attempt=state.attempt_number,
        waited_s=round(state.seconds_since_start or 0.0, 1),
        retry_in_s=round(state.upcoming_sleep, 2),
        error=str(error),
    )
