"""Reconciliation: keep the store equal to the broker, and deny trading while it is not.

Two channels feed order state into the store, both through the order state machine
(:meth:`trading.core.executor.OrderExecutor.record` → ``apply_order_update``), so each accepted
transition appends one ``order_events`` row and a repeated or stale observation writes nothing:

* the ``trade_updates`` stream (:mod:`trading.adapters.trade_updates`, on its own thread) — fast;
* a periodic pass (``TRADING_RECONCILE_INTERVAL_S``, :meth:`Reconciler.reconcile_once`) — the
  safety net for a dropped stream: it resolves intents still ``pending_submit``, polls every
  execution not yet confirmed by the broker (non-terminal, or changed since it was last
  reconciled), adopts open broker orders the store does not know, then compares positions
  (``position_snapshots``). Each execution whose stored state equals the broker's answer is
  stamped ``reconciled_at`` (the API's "reconciled"); a terminal one confirmed once is not
  polled again.

Drift (broker position ≠ position implied by our executions) is re-checked once after a fresh
order sync before it counts, because a fill landing between the two reads is not drift. Confirmed
drift sets the ``torghut_trading_position_drift`` gauge and, with ``RISK_HALT_ON_POSITION_DRIFT``,
raises a persisted ``position_drift`` halt (the control store): the risk engine then denies every
new order until a pass finds no drift *and* an operator has resumed.

Never blind: a pass that fails for any reason — the broker unreachable, a 4xx such as a 401 after
a key rotation, the store down — is counted (``torghut_trading_reconcile_errors_total{kind}``),
logged and retried with exponential back-off (tenacity) by a thread that cannot die of it. While
no pass has completed for ``RISK_RECONCILE_MAX_AGE_S`` trading is denied at once
(:attr:`Reconciler.halted_reason`, computed from the clock, so even a pass stuck in a call
halts) and a ``reconcile_failing`` halt is persisted for the API; it is cleared by a resume once
a pass has completed again. Until the first pass has completed (at start, or after a failing
start: the flow starts anyway) trading is denied too, so no order is sent before the store has
converged with the broker.

An open order the broker answers 404 for (a paper-account reset) is marked
``unknown_at_broker`` (terminal), counted and reported in the control audit trail — never an
error that stops the pass.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter, Gauge
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from torghut.logs import get_logger
from trading.core.clock import Clock
from trading.core.control_state import ControlAction, HaltKind, Origin
from trading.core.executor import OrderExecutor
from trading.core.orders import OrderStatus
from trading.core.ports import (
    Broker,
    BrokerOrder,
    BrokerRejected,
    BrokerUnavailable,
    DecisionStore,
    StoreError,
)
from trading.core.records import PositionDrift, StoredExecution

__all__ = ["ReconcileReport", "Reconciler"]

_log = get_logger("trading.core.reconcile")

TRANSITIONS = Counter(
    "torghut_trading_reconcile_updates_total",
    "Order state changes recorded by reconciliation",
    ["channel"],
)
DRIFT = Gauge(
    "torghut_trading_position_drift", "Broker minus local position, per symbol", ["symbol"]
)
HALTED = Gauge("torghut_trading_halted", "1 while reconciliation denies new orders")
PASSES = Counter("torghut_trading_reconcile_passes_total", "Reconciliation passes", ["result"])
ERRORS = Counter(
    "torghut_trading_reconcile_errors_total",
    "Reconciliation passes that failed, by kind",
    ["kind"],
)
LAST_SUCCESS = Gauge(
    "torghut_trading_reconcile_last_success_timestamp_seconds",
    "Wall-clock time of the last completed reconciliation pass",
)
UNKNOWN_AT_BROKER = Counter(
    "torghut_trading_orders_unknown_at_broker_total", "Open orders the broker answered 404 for"
)
_BACKOFF_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    at: datetime
    orders_checked: int
    updates: int
    intents_resolved: int
    drifts: tuple[PositionDrift, ...] = field(default_factory=tuple)

    @property
    def in_sync(self) -> bool:
        return not self.drifts


class Reconciler:
    """Stream + periodic reconciliation; see the module docstring."""

    def __init__(
        self,
        store: DecisionStore,
        broker: Broker,
        executor: OrderExecutor,
        clock: Clock,
        *,
        interval_s: float,
        halt_on_drift: bool,
        max_age_s: float = 60.0,
    ) -> None:
        self._store = store
        self._broker = broker
        self._executor = executor
        self._interval = interval_s
        self._halt_on_drift = halt_on_drift
        self._max_age = max_age_s
        self._backoff_max = max(interval_s, min(_BACKOFF_MAX_S, max_age_s / 4))
        self._now = clock.now
        self._clock = clock.monotonic
        self._completed = False
        self._last_success = clock.monotonic()
        self.last_error: str | None = None
        self.exclusive = threading.Lock()
        """Held by a pass and by the pipeline around each decision (adjudicate → record →
        submit → record): no order is in flight, unrecorded, while positions are compared."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: ReconcileReport | None = None
        HALTED.set(1)

    @property
    def halted_reason(self) -> str | None:
        """Why reconciliation denies orders in this process right now: no pass completed yet,
        or none for longer than the configured age (drift is a persisted halt instead)."""
        error = f": {self.last_error}" if self.last_error else ""
        if not self._completed:
            reason: str | None = f"reconciliation has not completed yet{error}"
        else:
            age = self._clock() - self._last_success
            reason = (
                f"reconciliation failing for {age:.1f}s (max {self._max_age:g}s){error}"
                if age > self._max_age
                else None
            )
        HALTED.set(1 if reason else 0)
        return reason

    # --- one pass ---------------------------------------------------------------------------

    def reconcile_once(self) -> ReconcileReport:
        """Resolve intents, sync orders, compare positions; raises what made the pass fail,
        after counting it and, past the configured age, persisting the halt."""
        with self.exclusive:
            try:
                report = self._pass()
            except Exception as exc:
                self._failed(exc)
                raise
        self.last_report = report
        self._completed = True
        self._last_success = self._clock()
        self.last_error = None
        LAST_SUCCESS.set(report.at.timestamp())
        controls = self._store.controls
        controls.cause_gone(HaltKind.RECONCILE_FAILING)
        if report.drifts and self._halt_on_drift:
            controls.raise_halt(
                HaltKind.POSITION_DRIFT,
                ", ".join(
                    f"{d.symbol} broker {d.broker_qty} local {d.local_qty}" for d in report.drifts
                ),
                requires_resume=True,
            )
        elif not report.drifts:
            controls.cause_gone(HaltKind.POSITION_DRIFT)
        HALTED.set(0)
        PASSES.labels(result="drift" if report.drifts else "in_sync").inc()
        return report

    def _failed(self, exc: Exception) -> None:
        kind = (
            "broker_unavailable"
            if isinstance(exc, BrokerUnavailable)
            else "broker_rejected"
            if isinstance(exc, BrokerRejected)
            else "store"
            if isinstance(exc, StoreError)
            else "unexpected"
        )
        ERRORS.labels(kind=kind).inc()
        PASSES.labels(result="failed").inc()
        self.last_error = f"{kind}: {str(exc).splitlines()[0][:300] if str(exc) else repr(exc)}"
        _log.warning("reconcile_pass_failed", kind=kind, error=self.last_error)
        age = self._clock() - self._last_success
        if age <= self._max_age:
            return
        detail = (
            f"no reconciliation pass completed for {age:.1f}s (max {self._max_age:g}s): "
            f"{self.last_error}"
        )
        try:
            self._store.controls.raise_halt(
                HaltKind.RECONCILE_FAILING, detail, requires_resume=True
            )
        except StoreError as store_exc:  # the in-memory reason still denies orders
            _log.error("reconcile_halt_not_persisted", error=str(store_exc)[:300])

    def _pass(self) -> ReconcileReport:
        resolved = len(self._executor.resolve_pending())
        checked, updates = self._sync_orders()
        drifts = self._drifts()
        if drifts:
            more_checked, more_updates = self._sync_orders()
            checked += more_checked
            updates += more_updates
            drifts = self._drifts()
        for d in drifts:
            DRIFT.labels(symbol=d.symbol).set(float(d.drift))
            _log.error(
                "position_drift",
                symbol=d.symbol,
                broker_qty=str(d.broker_qty),
                local_qty=str(d.local_qty),
            )
        return ReconcileReport(self._now(), checked, updates, resolved, tuple(drifts))

    def _sync_orders(self) -> tuple[int, int]:
        with self._store.unit_of_work() as uow:
            unconfirmed = uow.executions_to_reconcile()
        broker = self._broker
        seen = {o.id: o for o in broker.open_orders()}
        for execution in unconfirmed:
            order_id = execution.alpaca_order_id
            if order_id in seen:
                continue
            try:
                seen[order_id] = broker.get_order(order_id)
            except BrokerRejected as exc:
                if exc.status != 404:
                    raise
                seen[order_id] = self._unknown_at_broker(execution)
        with self._store.unit_of_work() as uow:
            held = uow.get_executions(seen)
        updates = 0
        for order in seen.values():
            if _as_held(held.get(order.id), order):
                continue
            if self._executor.record(order, event_type="poll"):
                updates += 1
        self._stamp_reconciled(seen.values())
        TRANSITIONS.labels(channel="poll").inc(updates)
        return len(seen), updates

    def _stamp_reconciled(self, orders: Collection[BrokerOrder]) -> None:
        """``reconciled_at`` = now for every execution whose stored state is the broker's."""
        at = self._now()
        with self._store.unit_of_work() as uow:
            stored = uow.get_executions([o.id for o in orders])
            uow.mark_reconciled(
                [
                    o.id
                    for o in orders
                    if (e := stored.get(o.id)) is not None
                    and e.status is o.status
                    and e.filled_qty == o.filled_qty
                ],
                at,
            )
            uow.commit()

    def _unknown_at_broker(self, execution: StoredExecution) -> BrokerOrder:
        """The broker does not know an order we hold as open: mark it and report it."""
        UNKNOWN_AT_BROKER.inc()
        detail = (
            f"order {execution.alpaca_order_id} ({execution.symbol} {execution.side} "
            f"{execution.qty}, client_order_id {execution.client_order_id}) is unknown to the "
            f"broker (404); marked {OrderStatus.UNKNOWN_AT_BROKER.value}"
        )
        _log.error("order_unknown_at_broker", order_id=execution.alpaca_order_id, detail=detail)
        self._store.controls.record(
            ControlAction.ORDER_UNKNOWN,
            detail,
            Origin.AUTOMATIC,
            result={"order_id": execution.alpaca_order_id, "symbol": execution.symbol},
        )
        return BrokerOrder(
            id=execution.alpaca_order_id,
            client_order_id=execution.client_order_id,
            symbol=execution.symbol,
            side="sell" if execution.side == "sell" else "buy",
            qty=execution.qty,
            status=OrderStatus.UNKNOWN_AT_BROKER,
            filled_qty=execution.filled_qty,
            filled_avg_price=execution.filled_avg_price,
            submitted_at=execution.submitted_at,
            updated_at=max(self._now(), execution.last_update_at),
        )

    def _drifts(self) -> list[PositionDrift]:
        positions = self._broker.positions()
        with self._store.unit_of_work() as uow:
            drifts = uow.record_positions(self._now(), positions)
            uow.commit()
        for d in drifts:
            if d.drift == 0:
                DRIFT.labels(symbol=d.symbol).set(0)
        return [d for d in drifts if d.drift != 0]

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic pass on its own thread."""
        self._thread = threading.Thread(
            target=self._poll_forever, name="reconcile-poll", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _poll_forever(self) -> None:
        """A pass every interval; a failing one is retried with exponential back-off (capped at
        a quarter of the max age, so recovery is noticed in time) until one completes. Nothing
        that a pass raises ends this thread (each failure was counted in :meth:`reconcile_once`)."""
        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=self._interval, max=self._backoff_max),
            stop=lambda _: self._stop.is_set(),
            sleep=self._pause,
            reraise=True,
        )
        while not self._stop.is_set():
            try:
                retrying(self.reconcile_once)
            except Exception as exc:  # noqa: BLE001 - only reached when stopping mid-retry
                _log.info("reconcile_stopped_while_failing", error=str(exc)[:300])
            self._stop.wait(self._interval)


def _as_held(held: StoredExecution | None, order: BrokerOrder) -> bool:
    """The broker's view of an order is exactly what the store holds: nothing to record.

    Why: a pass records only what changed. It runs under the lock the trading loop takes to
    send, and recording every open order (a read, an update and a commit each, then one more
    read to stamp it) made a pass grow with the open orders: in a 30-minute paper run whose 660
    orders all stayed open, the loop waited on the lock half of the time and its decisions fell
    minutes behind. Anything else goes through :meth:`OrderExecutor.record`, which decides
    under the row's lock as before."""
    return (
        held is not None
        and held.status is order.status
        and held.filled_qty == order.filled_qty
        and held.last_update_at == order.updated_at
    )
