"""Runtime controls and automatic halts, persisted in the trading store.

Why in the store: the API that takes an operator's command may run in another process than the
trading flow that must obey it (both share Postgres), and a halt must survive a restart and be
visible to whoever looks (``/trading/status``, ``/readyz``, the CLI). So every change is a row:

* ``trading_control_events`` is the append-only audit (when, what, why, from where). The kill
  switch is its latest ``engage``/``release`` row; ``cancel_all`` and ``flatten`` are commands,
  written ``pending`` and completed by the running trading flow, which owns the broker
  connection (:mod:`trading.core.controls`); with no flow running they stay pending, visibly.
* ``trading_halts`` holds the automatic halts. A halt is raised again (not duplicated) while its
  cause persists; when the cause goes it is cleared at once, or — for the kinds an operator must
  look at (drift, a reconciliation that could not run) — only by a later ``resume``.

Every method is one short transaction; callers poll :meth:`ControlStore.state`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from trading.adapters.store.errors import translated
from trading.adapters.store.models import ControlEventRow, TradingHaltRow
from trading.adapters.system_clock import SystemClock
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

__all__ = ["ControlStore"]


class ControlStore:
    """Reads and writes of the two control tables (see the module docstring)."""

    def __init__(self, engine: sa.Engine, clock: Clock | None = None) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._now = (clock or SystemClock()).now

    # --- operator changes -------------------------------------------------------------------

    def record(
        self,
        action: ControlAction,
        reason: str,
        origin: Origin,
        *,
        result: dict[str, Any] | None = None,
    ) -> ControlEvent:
        """Append one change; commands start ``pending``, everything else is ``done``."""
        pending = action in COMMANDS
        with self._session() as s:
            row = ControlEventRow(
                at=self._now(),
                action=action.value,
                reason=reason,
                origin=origin.value,
                state=(CommandState.PENDING if pending else CommandState.DONE).value,
                completed_at=None if pending else self._now(),
                result=result,
            )
            s.add(row)
            s.commit()
            return _event(row)

    def set_kill_switch(self, engaged: bool, reason: str, origin: Origin) -> ControlEvent:
        action = ControlAction.ENGAGE if engaged else ControlAction.RELEASE
        return self.record(action, reason, origin)

    def resume(self, reason: str, origin: Origin) -> ControlEvent:
        """Clear every active halt whose cause is gone; report what stays halted and why."""
        now = self._now()
        with self._session() as s:
            active = list(s.scalars(_active_halts()))
            cleared = [h for h in active if h.cause_gone_at is not None]
            for h in cleared:
                h.cleared_at = now
            result = {
                "cleared": [h.kind for h in cleared],
                "still_halted": [
                    {"kind": h.kind, "detail": h.detail} for h in active if h not in cleared
                ],
            }
            row = ControlEventRow(
                at=now,
                action=ControlAction.RESUME.value,
                reason=reason,
                origin=origin.value,
                state=CommandState.DONE.value,
                completed_at=now,
                result=result,
            )
            s.add(row)
            s.commit()
            return _event(row)

    # --- commands carried out by the trading flow -------------------------------------------

    def complete(self, event_id: int, *, ok: bool, result: dict[str, Any]) -> None:
        with self._session() as s:
            s.execute(
                sa.update(ControlEventRow)
                .where(ControlEventRow.id == event_id)
                .values(
                    state=(CommandState.DONE if ok else CommandState.FAILED).value,
                    completed_at=self._now(),
                    result=result,
                )
            )
            s.commit()

    # --- automatic halts --------------------------------------------------------------------

    def raise_halt(self, kind: HaltKind, detail: str, *, requires_resume: bool) -> bool:
        """Halt for ``kind`` (or refresh the active one); True when this started a new halt."""
        now = self._now()
        with self._session() as s:
            current = s.scalars(_active_halts().where(TradingHaltRow.kind == kind.value)).first()
            if current is not None:
                current.detail = detail
                current.updated_at = now
                current.cause_gone_at = None
                s.commit()
                return False
            s.add(
                TradingHaltRow(
                    kind=kind.value,
                    detail=detail,
                    since=now,
                    updated_at=now,
                    requires_resume=requires_resume,
                )
            )
            s.add(_automatic(now, ControlAction.HALT, f"{kind.value}: {detail}"))
            s.commit()
            return True

    def cause_gone(self, kind: HaltKind) -> bool:
        """The condition behind ``kind`` has gone: clear it, or mark it ready for a resume.

        True when a halt was cleared by this call.
        """
        now = self._now()
        with self._session() as s:
            current = s.scalars(_active_halts().where(TradingHaltRow.kind == kind.value)).first()
            if current is None:
                return False
            if current.requires_resume:
                if current.cause_gone_at is None:
                    current.cause_gone_at = now
                    current.updated_at = now
                    s.commit()
                return False
            current.cause_gone_at = now
            current.cleared_at = now
            s.add(_automatic(now, ControlAction.HALT_CLEARED, f"{kind.value}: cause gone"))
            s.commit()
            return True

    # --- reads ------------------------------------------------------------------------------

    def state(self) -> ControlState:
        with self._session() as s:
            switch = s.scalars(
                sa.select(ControlEventRow)
                .where(
                    ControlEventRow.action.in_(
                        [ControlAction.ENGAGE.value, ControlAction.RELEASE.value]
                    )
                )
                .order_by(ControlEventRow.id.desc())
                .limit(1)
            ).first()
            halts = s.scalars(_active_halts().order_by(TradingHaltRow.id))
            pending = s.scalars(
                sa.select(ControlEventRow)
                .where(ControlEventRow.state == CommandState.PENDING.value)
                .order_by(ControlEventRow.id)
            )
            return ControlState(
                kill_switch=_kill_switch(switch),
                halts=tuple(_halt(h) for h in halts),
                pending=tuple(_event(e) for e in pending),
            )

    def events(self, limit: int = 100) -> list[ControlEvent]:
        """The audit trail, newest first."""
        with self._session() as s:
            rows = s.scalars(
                sa.select(ControlEventRow).order_by(ControlEventRow.id.desc()).limit(limit)
            )
            return [_event(r) for r in rows]

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One short transaction; a database fault leaves as a port error (``StoreError``)."""
        with translated(), self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()


def _active_halts() -> sa.Select[TradingHaltRow]:
    return sa.select(TradingHaltRow).where(TradingHaltRow.cleared_at.is_(None))


def _automatic(at: datetime, action: ControlAction, reason: str) -> ControlEventRow:
    return ControlEventRow(
        at=at,
        action=action.value,
        reason=reason,
        origin=Origin.AUTOMATIC.value,
        state=CommandState.DONE.value,
        completed_at=at,
    )


def _event(row: ControlEventRow) -> ControlEvent:
    return ControlEvent(
        id=row.id,
        at=row.at,
        action=row.action,
        reason=row.reason,
        origin=row.origin,
        state=row.state,
        completed_at=row.completed_at,
        result=row.result,
    )


def _halt(row: TradingHaltRow) -> Halt:
    return Halt(
        kind=row.kind,
        detail=row.detail,
        since=row.since,
        requires_resume=row.requires_resume,
        cause_gone_at=row.cause_gone_at,
    )


def _kill_switch(row: ControlEventRow | None) -> KillSwitch:
    """The latest engage/release: its reason, time and origin whichever it was."""
    if row is None:
        return KillSwitch(engaged=False)
    engaged = row.action == ControlAction.ENGAGE.value
    return KillSwitch(engaged=engaged, reason=row.reason, since=row.at, origin=row.origin)
