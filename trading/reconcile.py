"""Reconciliation: keep the store equal to the broker, and deny trading while it is not.

Two channels feed order state into the store, both through the order state machine
(:meth:`trading.execution.OrderExecutor.record` → ``apply_order_update``), so each accepted
transition appends one ``order_events`` row and a repeated or stale observation writes nothing:

* the ``trade_updates`` stream (alpaca-py ``TradingStream`` on its own thread) — fast;
* a periodic pass (``TRADING_RECONCILE_INTERVAL_S``, :meth:`Reconciler.reconcile_once`) — the
  safety net for a dropped stream: it resolves intents still ``pending_submit``, polls every
  non-terminal execution, adopts open broker orders the store does not know, then compares
  positions (``position_snapshots``).

Drift (broker position ≠ position implied by our executions) is re-checked once after a fresh
order sync before it counts, because a fill landing between the two reads is not drift. Confirmed
drift sets the ``torghut_trading_position_drift`` gauge and, with ``RISK_HALT_ON_POSITION_DRIFT``,
halts trading: :attr:`Reconciler.halted_reason` is passed to the risk engine, which then denies
every new order, until a pass finds no drift. The first pass (at start) also halts until it has
completed, so no order is sent before the store has converged with the broker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alpaca.trading.models import TradeUpdate
from alpaca.trading.stream import TradingStream
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import OperationalError

from torghut.logs import get_logger
from trading.execution import BrokerUnavailable, OrderExecutor, to_broker_order
from trading.ports import Broker
from trading.store import PositionDrift, TradingStore

__all__ = ["ReconcileReport", "Reconciler"]

_log = get_logger("trading.reconcile")

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
        store: TradingStore,
        broker: Broker,
        executor: OrderExecutor,
        *,
        interval_s: float,
        halt_on_drift: bool,
        stream_factory: Callable[[], TradingStream] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._broker = broker
        self._executor = executor
        self._interval = interval_s
        self._halt_on_drift = halt_on_drift
        self._stream_factory = stream_factory
        self._now = now
        self._halted: str | None = "reconciliation has not completed yet"
        self.exclusive = threading.Lock()
        """Held by a pass and by the pipeline around each decision (adjudicate → record →
        submit → record): no order is in flight, unrecorded, while positions are compared."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stream: TradingStream | None = None
        self.last_report: ReconcileReport | None = None
        HALTED.set(1)

    @property
    def halted_reason(self) -> str | None:
        return self._halted

    # --- one pass ---------------------------------------------------------------------------

    def reconcile_once(self) -> ReconcileReport:
        """Resolve intents, sync orders, compare positions; updates the halt flag."""
        with self.exclusive:
            try:
                report = self._pass()
            except BrokerUnavailable as exc:
                PASSES.labels(result="broker_unavailable").inc()
                _log.warning("reconcile_broker_unavailable", error=str(exc))
                raise
        self.last_report = report
        if report.drifts and self._halt_on_drift:
            self._halted = "position drift: " + ", ".join(
                f"{d.symbol} broker {d.broker_qty} local {d.local_qty}" for d in report.drifts
            )
        else:
            self._halted = None
        HALTED.set(1 if self._halted else 0)
        PASSES.labels(result="drift" if report.drifts else "in_sync").inc()
        return report

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
            open_ids = [e.alpaca_order_id for e in uow.open_executions()]
        broker = self._broker
        seen = {o.id: o for o in broker.open_orders()}
        for order_id in open_ids:
            if order_id not in seen:
                seen[order_id] = broker.get_order(order_id)
        updates = 0
        for order in seen.values():
            if self._executor.record(order, event_type="poll"):
                updates += 1
        TRANSITIONS.labels(channel="poll").inc(updates)
        return len(seen), updates

    def _drifts(self) -> list[PositionDrift]:
        positions = self._broker.positions()
        drifts = self._store.record_positions(self._now(), positions)
        for d in drifts:
            if d.drift == 0:
                DRIFT.labels(symbol=d.symbol).set(0)
        return [d for d in drifts if d.drift != 0]

    # --- the stream -------------------------------------------------------------------------

    async def on_trade_update(self, update: TradeUpdate) -> None:
        """``trade_updates`` handler: record the order's new state (off the event loop)."""
        order = to_broker_order(update.order)
        event = getattr(update.event, "value", str(update.event))
        changed = await asyncio.to_thread(
            self._executor.record, order, event_type=str(event), at=update.timestamp
        )
        if changed:
            TRANSITIONS.labels(channel="stream").inc()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic pass and (if configured) the stream, each on its own thread."""
        poll = threading.Thread(target=self._poll_forever, name="reconcile-poll", daemon=True)
        self._threads.append(poll)
        poll.start()
        if self._stream_factory is not None:
            stream = self._stream_factory()
            stream.subscribe_trade_updates(self.on_trade_update)
            self._stream = stream
            thread = threading.Thread(target=stream.run, name="trade-updates", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads. alpaca-py's stream stops at its next message or reconnect, so its
        (daemon) thread is given a short grace only; the poll thread is always joined."""
        self._stop.set()
        if self._stream is not None:
            self._stream.stop()
        for t in self._threads:
            t.join(timeout if t.name == "reconcile-poll" else 0.2)
        self._threads.clear()

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile_once()
            except (BrokerUnavailable, OperationalError) as exc:
                _log.warning("reconcile_pass_failed", error=str(exc)[:500])
            self._stop.wait(self._interval)
