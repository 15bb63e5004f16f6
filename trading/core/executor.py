"""The executor: turns committed order intents into broker orders and records the answers.

Why it is shaped this way (a crash between "the broker has the order" and the store knowing it
must never duplicate and must always converge):

1. The decision and its order intent are committed *before* anything is sent (status
   ``pending_submit``, ``client_order_id`` = decision hash; see :mod:`trading.core.pipeline`).
2. :meth:`OrderExecutor.submit` sends it through the :class:`~trading.core.ports.Broker` port.
   A broker adapter answers a retry that meets the broker's "client_order_id must be unique"
   with the existing order, so the broker's id uniqueness is the last line of defence and is
   never an error for us.
3. The answer is persisted (``record_submission``, then the order's current state through the
   order state machine).
4. An intent still ``pending_submit`` after a restart (or after a transport fault) is resolved
   by :meth:`OrderExecutor.resolve`: look the ``client_order_id`` up at the broker; if the broker
   has it, record it; if not, submit it only while the decision is still fresh
   (``RISK_MAX_SIGNAL_STALENESS_S``), otherwise mark it failed with ``expired: ...``.

Nothing is sent while the process is stopping or trading is denied: :meth:`OrderExecutor.submit`
checks the process-wide :data:`STOPPING` flag (set by the SIGINT/SIGTERM handler) and the
executor's ``gate`` (the runtime kill switch and halts, :mod:`trading.core.controls`) right before
every submit, so a signal or a kill switch that arrives while a decision is being adjudicated
still stops its order. A gated intent is marked failed (``blocked: ...``) and never sent; an
intent stopped by :data:`STOPPING` stays ``pending_submit`` for the next start to resolve.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from prometheus_client import Counter

from torghut.logs import get_logger
from trading.core.clock import Clock
from trading.core.orders import InvalidOrderTransition, Transition
from trading.core.ports import (
    Broker,
    BrokerOrder,
    BrokerRejected,
    BrokerUnavailable,
    DecisionStore,
    StoreConflict,
)
from trading.core.records import StoredDecision

__all__ = [
    "STOPPING",
    "ExecutionOutcome",
    "OrderExecutor",
    "Outcome",
    "TradingStopped",
]

_log = get_logger("trading.core.executor")

SUBMITS = Counter(
    "torghut_trading_order_submits_total",
    "Order submissions by result",
    ["result"],
)

STOPPING = threading.Event()
"""Process-wide: set once the process is stopping; from then on no order leaves it."""


class TradingStopped(RuntimeError):
    """Raised by the pipeline when :data:`STOPPING` cut a batch short: the flow must end as a
    crash (no final snapshot), so a restart replays the decisions it did not handle."""


class Outcome(StrEnum):
    SUBMITTED = "submitted"
    ADOPTED = "adopted"
    """The broker already had the order (crash or retry); recorded from its state."""
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNRESOLVED = "unresolved"
    """Broker unreachable (or the process is stopping): the intent stays ``pending_submit`` and
    is resolved later."""
    BLOCKED = "blocked"
    """Trading was denied between adjudication and submit (kill switch, halt): never sent."""


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    decision_hash: str
    outcome: Outcome
    order: BrokerOrder | None = None
    detail: str = ""


class OrderExecutor:
    """Sends order intents and records the broker's answers (see the module docstring)."""

    def __init__(
        self,
        store: DecisionStore,
        broker: Broker,
        clock: Clock,
        *,
        max_intent_age: timedelta,
        gate: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._max_age = max_intent_age
        self._clock = clock
        self.gate = gate
        """Why orders are denied right now (``None``: they are not); checked before each submit."""

    def submit(self, decision: StoredDecision) -> ExecutionOutcome:
        """Send a freshly committed intent and record the answer (unless stopping or gated)."""
        h = decision.decision_hash
        if STOPPING.is_set():
            SUBMITS.labels(result="stopping").inc()
            return ExecutionOutcome(h, Outcome.UNRESOLVED, detail="process stopping")
        denied = self.gate()
        if denied is not None:
            detail = f"blocked: {denied}"
            SUBMITS.labels(result="blocked").inc()
            self._failed(h, detail)
            _log.warning("order_blocked", decision_hash=h, detail=detail)
            return ExecutionOutcome(h, Outcome.BLOCKED, detail=detail)
        try:
            order = self._broker.submit(decision.order_request())
        except BrokerRejected as exc:
            SUBMITS.labels(result="rejected").inc()
            self._failed(h, str(exc))
            _log.warning("order_rejected", decision_hash=h, error=str(exc))
            return ExecutionOutcome(h, Outcome.REJECTED, detail=str(exc))
        except BrokerUnavailable as exc:
            SUBMITS.labels(result="unresolved").inc()
            _log.warning("order_submit_unresolved", decision_hash=h, error=str(exc))
            return ExecutionOutcome(h, Outcome.UNRESOLVED, detail=str(exc))
        SUBMITS.labels(result="submitted").inc()
        self.record(order, event_type="submitted")
        return ExecutionOutcome(h, Outcome.SUBMITTED, order)

    def resolve(self, decision: StoredDecision) -> ExecutionOutcome:
        """Converge one ``pending_submit`` intent with the broker (after a crash or fault)."""
        h = decision.decision_hash
        try:
            order = self._broker.get_order_by_client_id(h)
        except BrokerUnavailable as exc:
            return ExecutionOutcome(h, Outcome.UNRESOLVED, detail=str(exc))
        if order is not None:
            SUBMITS.labels(result="adopted").inc()
            self.record(order, event_type="adopted")
            _log.info("order_intent_adopted", decision_hash=h, order_id=order.id)
            return ExecutionOutcome(h, Outcome.ADOPTED, order)
        age = self._clock.now() - decision.event_ts
        if age <= self._max_age:
            return self.submit(decision)
        detail = (
            f"expired: intent never reached the broker; signal age {age.total_seconds():.0f}s"
            f" > {self._max_age.total_seconds():g}s"
        )
        SUBMITS.labels(result="expired").inc()
        self._failed(h, detail)
        _log.warning("order_intent_expired", decision_hash=h, detail=detail)
        return ExecutionOutcome(h, Outcome.EXPIRED, detail=detail)

    def resolve_pending(self) -> list[ExecutionOutcome]:
        """Resolve every intent still ``pending_submit`` in the store."""
        with self._store.unit_of_work() as uow:
            pending = uow.pending_submissions()
        return [self.resolve(d) for d in pending]

    def _failed(self, decision_hash: str, detail: str) -> None:
        with self._store.unit_of_work() as uow:
            uow.record_submit_failure(decision_hash, detail)
            uow.commit()

    def record(self, order: BrokerOrder, *, event_type: str, at: datetime | None = None) -> bool:
        """Persist ``order`` (creating its execution if needed); True if anything changed.

        Idempotent and safe against the ``trade_updates`` thread recording the same order at
        the same time (a lost insert race is retried once; stale observations are skipped).
        """
        for attempt in (1, 2):
            try:
                return self._record_once(order, event_type, at or order.updated_at)
            except StoreConflict:
                if attempt == 2:
                    raise
        return False

    def _record_once(self, order: BrokerOrder, event_type: str, at: datetime) -> bool:
        with self._store.unit_of_work() as uow:
            existing = uow.get_execution(order.id)
            if existing is None:
                if uow.get_decision(order.client_order_id) is not None:
                    uow.record_submission(order)
                    uow.commit()
                    return True
                uow.apply_order_update(order, event_type=event_type, at=at)
                uow.commit()
                return True
            try:
                step = uow.apply_order_update(order, event_type=event_type, at=at)
            except InvalidOrderTransition:
                return False
            uow.commit()
            return step is Transition.ADVANCE
