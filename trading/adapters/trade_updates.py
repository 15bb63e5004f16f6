"""The ``trade_updates`` stream: alpaca-py's ``TradingStream`` feeding the executor's record.

Why an adapter of its own: it is the fast channel of reconciliation (the periodic pass of
:class:`trading.core.reconcile.Reconciler` is the safety net for a dropped stream), and it is all
alpaca-py: the websocket, its event loop and its ``TradeUpdate`` model. Each update becomes the
port's :class:`~trading.core.ports.BrokerOrder` and goes through
:meth:`~trading.core.executor.OrderExecutor.record` (the order state machine), off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from alpaca.trading.models import TradeUpdate
from alpaca.trading.stream import TradingStream

from torghut.logs import get_logger
from trading.adapters.alpaca_broker import to_broker_order
from trading.core.executor import OrderExecutor
from trading.core.reconcile import ERRORS, TRANSITIONS

__all__ = ["TradeUpdates"]

_log = get_logger("trading.adapters.trade_updates")


class TradeUpdates:
    """Subscribes to ``trade_updates`` and records every order update, on its own thread."""

    def __init__(self, executor: OrderExecutor, stream_factory: Callable[[], TradingStream]):
        self._executor = executor
        self._factory = stream_factory
        self._stream: TradingStream | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    async def on_trade_update(self, update: TradeUpdate) -> None:
        """Record the order's new state (off the event loop: the store call blocks)."""
        order = to_broker_order(update.order)
        event = getattr(update.event, "value", str(update.event))
        changed = await asyncio.to_thread(
            self._executor.record, order, event_type=str(event), at=update.timestamp
        )
        if changed:
            TRANSITIONS.labels(channel="stream").inc()

    def start(self) -> None:
        stream = self._factory()
        stream.subscribe_trade_updates(self.on_trade_update)
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name="trade-updates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """alpaca-py's stream stops at its next message or reconnect, so its (daemon) thread is
        given a short grace only."""
        self._stop.set()
        if self._stream is not None:
            self._stream.stop()
        if self._thread is not None:
            self._thread.join(0.2)
            self._thread = None

    def _run(self) -> None:
        """alpaca-py reconnects by itself but ends on some errors (a refused login): say so,
        the periodic pass carries on alone."""
        assert self._stream is not None
        try:
            self._stream.run()
        except Exception as exc:  # noqa: BLE001 - reported; the poll thread is the safety net
            ERRORS.labels(kind="stream").inc()
            _log.error("trade_updates_stream_ended", error=repr(exc)[:300])
            return
        if not self._stop.is_set():
            ERRORS.labels(kind="stream").inc()
            _log.error("trade_updates_stream_ended", error="returned while not stopping")
