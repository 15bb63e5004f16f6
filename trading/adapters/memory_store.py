"""The decision store in memory: the core's store ports without a database.

Why: a backtest replays millions of signals through the live pipeline (:mod:`trading.core`) and
must not need Postgres, and a test or a demo may want the pipeline with no database at all.
:class:`MemoryStore` implements :class:`~trading.core.ports.DecisionStore` (units of work) and
:class:`~trading.core.ports.ControlStore` with the SQL store's semantics:

* a unit of work is a transaction: its writes are visible to itself at once and to everyone
  else only after ``commit()``; leaving it without one discards them. Units of work run one at
  a time (a lock, as SQLite serialises writers), so the review lanes may use it too;
* a decision is inserted if its hash is new (``created=True``), with the status of the domain's
  lifecycle (:func:`~trading.core.decisions.initial_status`) and the reviewed quantity; later
  changes go through the decision and order state machines;
* ids are derived from the decision hash and the broker's order id (UUID5) and times come from
  the clock, so the same replay stores the same records.

The records are read back with :meth:`MemoryStore.decisions`, :meth:`MemoryStore.executions`,
:meth:`MemoryStore.order_events` and :meth:`MemoryStore.adjudication` (the review and risk
verdict as adjudicated).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from trading.core.adjudicate import Adjudication
from trading.core.clock import Clock
from trading.core.control_state import (
    COMMANDS,
    CommandState,
    ControlAction,
    ControlEvent,
    ControlState,
    Halt,
    HaltKind,
    KillSwitch,
    Origin,
)
from trading.core.decisions import DecisionStatus, initial_status
from trading.core.decisions import check_transition as check_decision
from trading.core.orders import (
    ACTIVE,
    OrderStatus,
    Transition,
    check_observation,
    check_transition,
)
from trading.core.ports import BrokerOrder, PositionSnapshot, SignalCursor, ids_not_one
from trading.core.records import (
    PositionDrift,
    StoredDecision,
    StoredExecution,
    StoredOrderEvent,
    position_drifts,
)
from trading.core.risk import RecentOrder

__all__ = ["MemoryControls", "MemoryStore", "MemoryUnitOfWork"]

_IDS = uuid.UUID("6f1c1e0a-54d2-4b43-9a55-7d0c6b2f8e11")
"""Namespace of the derived record ids."""


@dataclass
class _Tables:
    """Committed state; a unit of work stages its changes in one of these and merges it."""

    decisions: dict[str, StoredDecision] = field(default_factory=dict)
    adjudications: dict[str, Adjudication] = field(default_factory=dict)
    executions: dict[str, StoredExecution] = field(default_factory=dict)
    events: list[StoredOrderEvent] = field(default_factory=list)
    cursors: dict[str, SignalCursor] = field(default_factory=dict)
    snapshots: list[tuple[datetime, PositionDrift]] = field(default_factory=list)


class MemoryUnitOfWork:
    """One transaction over a :class:`MemoryStore` (see the module docstring)."""

    def __init__(self, base: _Tables, clock: Clock) -> None:
        self._base = base
        self._new = _Tables()
        self._clock = clock

    def commit(self) -> None:
        base, new = self._base, self._new
        base.decisions.update(new.decisions)
        base.adjudications.update(new.adjudications)
        base.executions.update(new.executions)
        base.events.extend(new.events)
        base.cursors.update(new.cursors)
        base.snapshots.extend(new.snapshots)
        self._new = _Tables()

    # --- decisions ----------------------------------------------------------------------

    def record_decisions(self, adjudications: Sequence[Adjudication]) -> list[StoredDecision]:
        return [self.record_decision(a) for a in adjudications]

    def record_decision(self, adjudication: Adjudication) -> StoredDecision:
        decision = adjudication.decision
        h = decision.decision_hash
        existing = self.get_decision(h)
        if existing is not None:
            return msgspec.structs.replace(existing, created=False)
        status = initial_status(adjudication)
        risk = adjudication.risk
        stored = StoredDecision(
            id=uuid.uuid5(_IDS, h),
            decision_hash=h,
            strategy_id=decision.strategy_id,
            strategy_version=decision.strategy_version,
            symbol=decision.symbol,
            side=decision.action.value,
            qty=adjudication.final.qty,
            order_type=decision.order_type,
            limit_price=decision.limit_price,
            event_ts=decision.event_ts,
            status=status,
            status_detail=None,
            risk_reasons=risk.reasons if status is DecisionStatus.REJECTED and risk else (),
            created_at=self._clock.now(),
            executed_at=None,
        )
        self._new.decisions[h] = stored
        self._new.adjudications[h] = adjudication
        return msgspec.structs.replace(stored, created=True)

    def get_decision(self, decision_hash: str) -> StoredDecision | None:
        return self._new.decisions.get(decision_hash) or self._base.decisions.get(decision_hash)

    def pending_submissions(self) -> list[StoredDecision]:
        return sorted(
            (d for d in self._decisions() if d.status is DecisionStatus.PENDING_SUBMIT),
            key=lambda d: d.created_at,
        )

    def record_submission(self, order: BrokerOrder) -> StoredExecution:
        if self.get_decision(order.client_order_id) is None:
            raise LookupError(f"no decision with hash {order.client_order_id}")
        existing = self.get_execution(order.id)
        if existing is not None:
            return existing
        return self._create_execution(order, "submitted", {}, order.updated_at)

    def record_submit_failure(self, decision_hash: str, error: str) -> None:
        stored = self.get_decision(decision_hash)
        if stored is None:
            raise LookupError(f"no decision with hash {decision_hash}")
        check_decision(decision_hash, stored.status, DecisionStatus.SUBMIT_FAILED)
        self._new.decisions[decision_hash] = msgspec.structs.replace(
            stored, status=DecisionStatus.SUBMIT_FAILED, status_detail=error[:1000]
        )

    # --- orders -------------------------------------------------------------------------

    def apply_order_update(
        self,
        order: BrokerOrder,
        *,
        event_type: str,
        at: datetime,
        payload: dict[str, Any] | None = None,
    ) -> Transition:
        current = self.get_execution(order.id)
        if current is None:
            self._create_execution(order, event_type, payload or {}, at)
            return Transition.ADVANCE
        step = check_observation(
            order.id,
            status_from=current.status,
            updated_from=current.last_update_at,
            filled_from=current.filled_qty,
            status_to=order.status,
            updated_to=order.updated_at,
            filled_to=order.filled_qty,
        )
        if step is not Transition.ADVANCE:
            return step
        self._new.executions[order.id] = msgspec.structs.replace(
            current,
            status=order.status,
            filled_qty=order.filled_qty,
            filled_avg_price=order.filled_avg_price,
            last_update_at=order.updated_at,
        )
        self._event(order, current.status, event_type, payload or {}, at)
        return step

    def mark_reconciled(self, alpaca_order_ids: Collection[str], at: datetime) -> None:
        ids_not_one(alpaca_order_ids)
        for alpaca_order_id in alpaca_order_ids:
            current = self.get_execution(alpaca_order_id)
            if current is not None:
                self._new.executions[alpaca_order_id] = msgspec.structs.replace(
                    current, reconciled_at=at
                )

    def executions_to_reconcile(self) -> list[StoredExecution]:
        return sorted(
            (
                e
                for e in self._executions()
                if e.status in ACTIVE
                or e.reconciled_at is None
                or e.reconciled_at < e.last_update_at
            ),
            key=lambda e: e.submitted_at,
        )

    def get_execution(self, alpaca_order_id: str) -> StoredExecution | None:
        found = self._new.executions.get(alpaca_order_id)
        return found if found is not None else self._base.executions.get(alpaca_order_id)

    def get_executions(self, alpaca_order_ids: Collection[str]) -> dict[str, StoredExecution]:
        ids_not_one(alpaca_order_ids)
        found = {i: self.get_execution(i) for i in alpaca_order_ids}
        return {i: e for i, e in found.items() if e is not None}

    def recent_orders(self, since: datetime) -> list[RecentOrder]:
        """Newest first, back to ``since`` only: decisions are kept in the order they were
        recorded, on a clock that does not go back, so a long replay does not rescan them all."""
        live = (DecisionStatus.PENDING_SUBMIT, DecisionStatus.SUBMITTED)
        found: list[RecentOrder] = []
        for d in self._newest_first():
            if d.created_at < since:
                break
            if d.status in live:
                found.append(RecentOrder(d.symbol, d.created_at))
        return found

    def local_positions(self) -> dict[str, Decimal]:
        """Signed filled quantity per symbol over all recorded executions."""
        held: dict[str, Decimal] = {}
        for e in self._executions():
            signed = e.filled_qty if e.side == "buy" else -e.filled_qty
            held[e.symbol] = held.get(e.symbol, Decimal(0)) + signed
        return held

    def record_positions(
        self, taken_at: datetime, broker: Sequence[PositionSnapshot]
    ) -> list[PositionDrift]:
        drifts = position_drifts(self.local_positions(), broker)
        self._new.snapshots.extend((taken_at, d) for d in drifts)
        return drifts

    # --- signal cursor ------------------------------------------------------------------

    def load_cursor(self, source: str) -> SignalCursor | None:
        return self._new.cursors.get(source) or self._base.cursors.get(source)

    def save_cursor(self, source: str, cursor: SignalCursor) -> None:
        self._new.cursors[source] = cursor

    # --- helpers ------------------------------------------------------------------------

    def _newest_first(self) -> Iterator[StoredDecision]:
        """Decisions newest first: this unit's inserts, then the committed ones (as changed
        here). A commit appends inserts to the committed dict, keeping this order."""
        new, base = self._new.decisions, self._base.decisions
        yield from (d for h, d in reversed(new.items()) if h not in base)
        yield from (new.get(h, d) for h, d in reversed(base.items()))

    def _decisions(self) -> Iterator[StoredDecision]:
        new = self._new.decisions
        yield from (d for h, d in self._base.decisions.items() if h not in new)
        yield from new.values()

    def _executions(self) -> Iterator[StoredExecution]:
        new = self._new.executions
        yield from (e for i, e in self._base.executions.items() if i not in new)
        yield from new.values()

    def _create_execution(
        self, order: BrokerOrder, event_type: str, payload: dict[str, Any], at: datetime
    ) -> StoredExecution:
        """From ``intent``; through its decision if ``client_order_id`` is one of our hashes
        (the decision becomes ``submitted``), else as an order placed outside the loop."""
        check_transition(order.id, OrderStatus.INTENT, order.status, filled_to=order.filled_qty)
        decision = self.get_decision(order.client_order_id)
        execution = StoredExecution(
            id=uuid.uuid5(_IDS, f"order:{order.id}"),
            decision_id=decision.id if decision is not None else None,
            alpaca_order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            status=order.status,
            filled_qty=order.filled_qty,
            filled_avg_price=order.filled_avg_price,
            submitted_at=order.submitted_at,
            last_update_at=order.updated_at,
            reconciled_at=None,
        )
        self._new.executions[order.id] = execution
        self._event(order, OrderStatus.INTENT, event_type, payload, at)
        if decision is not None and decision.status is DecisionStatus.PENDING_SUBMIT:
            check_decision(decision.decision_hash, decision.status, DecisionStatus.SUBMITTED)
            self._new.decisions[decision.decision_hash] = msgspec.structs.replace(
                decision, status=DecisionStatus.SUBMITTED, executed_at=order.submitted_at
            )
        return execution

    def _event(
        self,
        order: BrokerOrder,
        status_from: OrderStatus,
        event_type: str,
        payload: dict[str, Any],
        at: datetime,
    ) -> None:
        self._new.events.append(
            StoredOrderEvent(
                id=len(self._base.events) + len(self._new.events) + 1,
                alpaca_order_id=order.id,
                event_type=event_type,
                status_from=status_from,
                status_to=order.status,
                filled_qty=order.filled_qty,
                at=at,
                payload=payload,
            )
        )


class MemoryStore:
    """:class:`~trading.core.ports.DecisionStore` in memory (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tables = _Tables()
        self._lock = threading.RLock()
        self.controls = MemoryControls(clock)

    @contextmanager
    def unit_of_work(self) -> Iterator[MemoryUnitOfWork]:
        with self._lock:
            yield MemoryUnitOfWork(self._tables, self._clock)

    # --- read models --------------------------------------------------------------------

    def decisions(self) -> list[StoredDecision]:
        """Every committed decision, in the order it was recorded."""
        with self._lock:
            return list(self._tables.decisions.values())

    def adjudication(self, decision_hash: str) -> Adjudication | None:
        """The decision as adjudicated (its review and risk verdict)."""
        with self._lock:
            return self._tables.adjudications.get(decision_hash)

    def executions(self) -> list[StoredExecution]:
        with self._lock:
            return list(self._tables.executions.values())

    def order_events(self, alpaca_order_id: str) -> list[StoredOrderEvent]:
        with self._lock:
            return [e for e in self._tables.events if e.alpaca_order_id == alpaca_order_id]


class MemoryControls:
    """:class:`~trading.core.ports.ControlStore` in memory, with the SQL store's rules: a kill
    switch is its latest engage/release, commands stay pending until completed, a halt is
    refreshed rather than duplicated and one that requires a resume is only marked when its
    cause goes."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[ControlEvent] = []
        self._halts: dict[str, Halt] = {}

    def state(self) -> ControlState:
        with self._lock:
            switch = next(
                (
                    e
                    for e in reversed(self._events)
                    if e.action in (ControlAction.ENGAGE, ControlAction.RELEASE)
                ),
                None,
            )
            return ControlState(
                kill_switch=KillSwitch(engaged=False)
                if switch is None
                else KillSwitch(
                    engaged=switch.action == ControlAction.ENGAGE,
                    reason=switch.reason,
                    since=switch.at,
                    origin=switch.origin,
                ),
                halts=tuple(self._halts.values()),
                pending=tuple(e for e in self._events if e.state == CommandState.PENDING),
            )

    def record(
        self,
        action: ControlAction,
        reason: str,
        origin: Origin,
        *,
        result: dict[str, Any] | None = None,
    ) -> ControlEvent:
        with self._lock:
            return self._append(action, reason, origin, result)

    def set_kill_switch(self, engaged: bool, reason: str, origin: Origin) -> ControlEvent:
        action = ControlAction.ENGAGE if engaged else ControlAction.RELEASE
        return self.record(action, reason, origin)

    def complete(self, event_id: int, *, ok: bool, result: dict[str, Any]) -> None:
        with self._lock:
            self._events = [
                msgspec.structs.replace(
                    e,
                    state=(CommandState.DONE if ok else CommandState.FAILED).value,
                    completed_at=self._clock.now(),
                    result=result,
                )
                if e.id == event_id
                else e
                for e in self._events
            ]

    def raise_halt(self, kind: HaltKind, detail: str, *, requires_resume: bool) -> bool:
        with self._lock:
            current = self._halts.get(kind.value)
            if current is not None:
                self._halts[kind.value] = msgspec.structs.replace(
                    current, detail=detail, cause_gone_at=None
                )
                return False
            self._halts[kind.value] = Halt(kind.value, detail, self._clock.now(), requires_resume)
            self._append(ControlAction.HALT, f"{kind.value}: {detail}", Origin.AUTOMATIC, None)
            return True

    def cause_gone(self, kind: HaltKind) -> bool:
        with self._lock:
            current = self._halts.get(kind.value)
            if current is None:
                return False
            if current.requires_resume:
                if current.cause_gone_at is None:
                    self._halts[kind.value] = msgspec.structs.replace(
                        current, cause_gone_at=self._clock.now()
                    )
                return False
            del self._halts[kind.value]
            reason = f"{kind.value}: cause gone"
            self._append(ControlAction.HALT_CLEARED, reason, Origin.AUTOMATIC, None)
            return True

    def _append(
        self,
        action: ControlAction,
        reason: str,
        origin: Origin,
        result: dict[str, Any] | None,
    ) -> ControlEvent:
        pending = action in COMMANDS
        now = self._clock.now()
        event = ControlEvent(
            id=len(self._events) + 1,
            at=now,
            action=action.value,
            reason=reason,
            origin=origin.value,
            state=(CommandState.PENDING if pending else CommandState.DONE).value,
            completed_at=None if pending else now,
            result=result,
        )
        self._events.append(event)
        return event
