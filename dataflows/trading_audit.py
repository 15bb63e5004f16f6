"""The trading loop's dead letters and signal corrections into the trading store.

Why a store and not just the JSON-lines file: the API and the dashboard serve them
(``/trading/dead-letters``, ``/trading/signal-corrections``) wherever they run; see
:mod:`trading.store.dead_letters`. Wired by :func:`store_trading_audit` beside the file output,
which stays as an extra.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from trading.adapters.store import TradingDeadLetters
from trading.core.signals import SignalCorrection, SignalDeadLetter

__all__ = ["store_trading_audit"]

Item = SignalDeadLetter | SignalCorrection


def store_trading_audit(
    step_id: str,
    dead_letters: Stream[SignalDeadLetter],
    corrections: Stream[SignalCorrection],
    store: TradingDeadLetters,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Append every dead letter and correction to ``trading_dead_letters``."""
    merged = op.merge(f"{step_id}_merge", dead_letters, corrections)
    op.output(f"{step_id}_out", merged, _StoreSink(store, now))


class _StoreSink(DynamicSink[Item]):
    def __init__(self, store: TradingDeadLetters, now: Callable[[], datetime]) -> None:
        self._store = store
        self._now = now

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self._store, self._now)


class _StorePartition(StatelessSinkPartition[Item]):
    def __init__(self, store: TradingDeadLetters, now: Callable[[], datetime]) -> None:
        self._store = store
        self._now = now

    def write_batch(self, items: list[Item]) -> None:
        self._store.record(items, self._now())
