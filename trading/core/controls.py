"""The trading flow's side of the runtime controls: obey the store, carry out the commands.

Why a poller and not a push: the operator's command may come through an API in another process
or through the CLI while the API is down; the store is the only thing both share. So the flow
reads :meth:`trading.core.ports.ControlStore.state` at most once per poll interval
(``TRADING_POLL_INTERVAL_S``) — before every risk check and again right before every submit
(:attr:`trading.core.executor.OrderExecutor.gate`) — and a control thread on the same interval runs
the pending ``cancel_all`` / ``flatten`` commands with the broker connection the flow owns. A
store that cannot be read denies trading (fail closed) until it can.

The same object raises and clears the pipeline-lag halt (:class:`trading.core.risk.PipelineLag`).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge

from torghut.logs import get_logger
from trading.core.clock import Clock
from trading.core.control_state import (
    ControlAction,
    ControlEvent,
    ControlState,
    HaltKind,
    KillSwitch,
    Origin,
)
from trading.core.domain import OrderType
from trading.core.executor import STOPPING, OrderExecutor
from trading.core.ports import (
    Broker,
    BrokerRejected,
    BrokerUnavailable,
    ControlStore,
    OrderRequest,
    StoreError,
)
from trading.core.risk import LagChange, PipelineLag

__all__ = ["RuntimeControls"]

_log = get_logger("trading.controls")

KILL_SWITCH = Gauge("torghut_trading_kill_switch_engaged", "1 while the kill switch is engaged")
HALTS = Gauge("torghut_trading_halts_active", "Automatic halts in force (store)")
HALTS_RAISED = Counter("torghut_trading_halts_total", "Automatic halts raised", ["kind"])
COMMANDS_RUN = Counter(
    "torghut_trading_control_commands_total", "Control commands carried out", ["action", "result"]
)
LAG = Gauge("torghut_trading_pipeline_lag_seconds", "now − event time of the last signal processed")
CONTROL_ERRORS = Counter(
    "torghut_trading_control_errors_total", "Control state reads or commands that failed"
)
_CANCEL_WAIT_S = 5.0


class RuntimeControls:
    """Cached control state, the command runner and the lag halt (see the module docstring)."""

    def __init__(
        self,
        store: ControlStore,
        broker: Broker,
        executor: OrderExecutor,
        clock: Clock,
        *,
        refresh_s: float,
        exclusive: threading.Lock,
        lag: PipelineLag | None = None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._executor = executor
        self._refresh = refresh_s
        self._exclusive = exclusive
        self._lag = lag
        self._clock = clock.monotonic
        self._now = clock.now
        self._state: ControlState | None = None
        self._read_at = float("-inf")
        self._unreadable: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the flow asks before an order -------------------------------------------------

    def state(self, *, fresh: bool = False) -> ControlState:
        """The store's control state, read again when older than one poll interval."""
        with self._lock:
            if fresh or self._clock() - self._read_at >= self._refresh:
                try:
                    self._state = self._store.state()
                    self._unreadable = None
                except StoreError as exc:
                    CONTROL_ERRORS.inc()
                    self._unreadable = str(exc).splitlines()[0][:200]
                    _log.warning("control_state_unreadable", error=self._unreadable)
                self._read_at = self._clock()
                if self._state is not None:
                    KILL_SWITCH.set(1 if self._state.kill_switch.engaged else 0)
                    HALTS.set(len(self._state.halts))
            return self._state or ControlState(KillSwitch(engaged=False), (), ())

    def kill_switch_reason(self) -> str | None:
        return self.state().kill_switch_reason()

    def halted_reason(self) -> str | None:
        """Active halts from the store, or the store itself when it cannot be read."""
        state = self.state()
        if self._unreadable is not None:
            return f"control state unreadable: {self._unreadable}"
        return state.halted_reason()

    # --- startup, halts, lag ----------------------------------------------------------------

    def engage_at_start(self, reason: str) -> None:
        """``TRADING_KILL_SWITCH=true``: engage the persisted switch (once; audited)."""
        if not self._store.state().kill_switch.engaged:
            self._store.set_kill_switch(True, reason, Origin.STARTUP)
            _log.warning("kill_switch_engaged_at_start", reason=reason)
        self.state(fresh=True)

    def raise_halt(self, kind: HaltKind, detail: str, *, requires_resume: bool) -> None:
        if self._store.raise_halt(kind, detail, requires_resume=requires_resume):
            HALTS_RAISED.labels(kind=kind.value).inc()
            _log.error("trading_halted", kind=kind.value, detail=detail)
        self.state(fresh=True)

    def cause_gone(self, kind: HaltKind) -> None:
        if self._store.cause_gone(kind):
            _log.info("trading_halt_cleared", kind=kind.value)
        self.state(fresh=True)

    def observe_signal_time(self, event_ts: datetime) -> None:
        """Pipeline lag of a signal being processed: halt past the bound, clear when back."""
        if self._lag is None:
            return
        change = self._lag.observe(self._now(), event_ts)
        LAG.set(self._lag.last.total_seconds())
        if change is LagChange.HALT:
            self.raise_halt(HaltKind.PIPELINE_LAG, self._lag.detail(), requires_resume=False)
        elif change is LagChange.CLEAR:
            self.cause_gone(HaltKind.PIPELINE_LAG)

    # --- commands ---------------------------------------------------------------------------

    def run_pending(self) -> list[ControlEvent]:
        """Carry out the pending commands in order; returns those it completed or failed.

        A broker that is unreachable leaves a command pending (tried again next poll); one that
        refuses it fails it with the broker's answer.
        """
        ran: list[ControlEvent] = []
        for event in self.state(fresh=True).pending:
            if STOPPING.is_set() or self._stop.is_set():
                break
            try:
                with self._exclusive:
                    if event.action == ControlAction.CANCEL_ALL:
                        ok, result = self._cancel_all()
                    else:
                        ok, result = self._flatten(event.id)
            except BrokerUnavailable as exc:
                _log.warning("control_command_deferred", action=event.action, error=str(exc)[:300])
                COMMANDS_RUN.labels(action=event.action, result="deferred").inc()
                break
            except BrokerRejected as exc:
                ok, result = False, {"error": str(exc)[:500]}
            self._store.complete(event.id, ok=ok, result=result)
            COMMANDS_RUN.labels(action=event.action, result="done" if ok else "failed").inc()
            _log.warning("control_command_run", action=event.action, ok=ok, result=result)
            ran.append(event)
        self.state(fresh=True)
        return ran

    def _cancel_all(self) -> tuple[bool, dict[str, Any]]:
        """Cancel every open order at the broker; done when the broker lists none."""
        canceled: list[str] = []
        refused: list[str] = []
        for order in self._broker.open_orders():
            try:
                self._broker.cancel(order.id)
                canceled.append(order.id)
            except BrokerRejected as exc:  # filled or canceled meanwhile: not open any more
                refused.append(f"{order.id}: {str(exc)[:120]}")
        deadline = self._clock() + _CANCEL_WAIT_S
        remaining = [o.id for o in self._broker.open_orders()]
        while remaining and self._clock() < deadline and not self._stop.wait(0.1):
            remaining = [o.id for o in self._broker.open_orders()]
        return not remaining, {"canceled": canceled, "refused": refused, "remaining": remaining}

    def _flatten(self, event_id: int) -> tuple[bool, dict[str, Any]]:
        """Cancel open orders, then close every position with a market order (recorded as an
        execution without a decision, so reconciliation sees no drift)."""
        ok, cancel = self._cancel_all()
        closing: list[dict[str, str]] = []
        for position in self._broker.positions():
            if position.qty == 0:
                continue
            if STOPPING.is_set():
                return False, {**cancel, "closing": closing, "error": "process stopping"}
            request = OrderRequest(
                client_order_id=f"flatten-{event_id}-{position.symbol}",
                symbol=position.symbol,
                side="sell" if position.qty > 0 else "buy",
                qty=abs(position.qty),
                order_type=OrderType.MARKET,
            )
            order = self._broker.submit(request)
            self._executor.record(order, event_type="flatten")
            closing.append(
                {"symbol": order.symbol, "side": order.side, "qty": str(order.qty), "id": order.id}
            )
        return ok, {**cancel, "closing": closing}

    # --- the control thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll_forever, name="controls", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _poll_forever(self) -> None:
        """Never dies: a failed round is logged and counted, the next one comes a poll later."""
        while not self._stop.wait(self._refresh):
            try:
                self.run_pending()
            except Exception as exc:  # noqa: BLE001 - the control thread must outlive any fault
                CONTROL_ERRORS.inc()
                _log.error("control_round_failed", error=repr(exc)[:500])
