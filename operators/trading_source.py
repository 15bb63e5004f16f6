"""Bytewax source over the ClickHouse signal reader, with a durable cursor.

Why a one-partition ``FixedPartitionedSource``: the cursor is one position in one global order
(:class:`trading.core.ports.SignalCursor`), so exactly one partition reads and its snapshot — the
cursor after the last item returned, and the correction watermark — is the Bytewax recovery
state. On a start without recovery state the position comes from ``initial_cursor`` (the
store's ``trade_cursor`` row, which the trading pipeline advances), so neither losing the
recovery directory nor the store rewinds the loop to the beginning.

Delivery is exactly-once on a clean stop and at-least-once after a crash: rows after the last
snapshot (or after the store cursor) are read again, and the trading pipeline makes that
harmless (a decision already in the store, found by its hash, is never adjudicated or sent
again).

``next_batch`` never sleeps: between polls it returns ``[]`` and ``next_awake`` says when to
poll again (``TRADING_POLL_INTERVAL_S``); a full batch polls again at once. Corrections (an
audit record, never traded) are looked for every :data:`CORRECTIONS_EVERY` rather than at
every poll: their query costs as much as the read itself, and it delayed every batch of rows.
A bounded source (``TRADING_EXIT_AT_END``) reads every row to the current end, ignoring the
settle horizon, and then ends. A set ``stop`` event ends it cleanly (final snapshot, no replay).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from trading.adapters.clickhouse_signals import ClickHouseSignalReader
from trading.core.domain import SignalRow
from trading.core.ports import SignalCursor
from trading.core.signals import SignalCorrection, SignalDeadLetter

__all__ = ["CORRECTIONS_EVERY", "SignalItem", "SourceState", "TradingSignalSource"]

SignalItem = SignalRow | SignalDeadLetter | SignalCorrection
CORRECTIONS_EVERY = timedelta(seconds=5)
"""How often a streaming source looks for corrections (a bounded one: at every poll)."""


class SourceState(msgspec.Struct, frozen=True):
    """Recovery state: the cursor after the last row returned; corrections seen up to
    ``corrections_after`` (ingest time)."""

    cursor: SignalCursor | None
    corrections_after: datetime | None = None


class TradingSignalSource(FixedPartitionedSource[SignalItem, SourceState]):
    """Signal rows, dead letters and corrections, in cursor order (see the module docstring)."""

    def __init__(
        self,
        reader: Callable[[], ClickHouseSignalReader],
        *,
        initial_cursor: Callable[[], SignalCursor | None],
        poll_interval: timedelta,
        batch_size: int,
        bounded: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self._reader = reader
        self._initial = initial_cursor
        self._interval = poll_interval
        self._batch = batch_size
        self._bounded = bounded
        self._stop = stop

    def list_parts(self) -> list[str]:
        return ["signals"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: SourceState | None
    ) -> _SignalPartition:
        state = resume_state or SourceState(self._initial())
        return _SignalPartition(
            self._reader(), state, self._interval, self._batch, self._bounded, self._stop
        )


class _SignalPartition(StatefulSourcePartition[SignalItem, SourceState]):
    def __init__(
        self,
        reader: ClickHouseSignalReader,
        state: SourceState,
        interval: timedelta,
        batch: int,
        bounded: bool,
        stop: threading.Event | None,
    ) -> None:
        self._reader = reader
        self._cursor = state.cursor
        self._corrections_after = state.corrections_after
        self._interval = interval
        self._batch = batch
        self._bounded = bounded
        self._stop = stop
        self._awake: datetime | None = None
        self._corrections_due = datetime.now(UTC)
        self._done = False

    def next_batch(self) -> list[SignalItem]:
        if self._done or (self._stop is not None and self._stop.is_set()):
            raise StopIteration
        batch = self._reader.read_batch(self._cursor, self._batch, bounded=self._bounded)
        items: list[SignalItem] = [*batch.rows, *batch.dead_letters]
        if len(items) > 1 and batch.dead_letters:
            items.sort(key=_position)
        self._cursor = batch.cursor
        full = batch.size >= self._batch
        now = datetime.now(UTC)
        if self._bounded or now >= self._corrections_due:
            self._corrections_due = now + CORRECTIONS_EVERY
            found = self._reader.corrections(self._cursor, self._corrections_after)
            if found:
                self._corrections_after = found[-1].ingest_ts
                items.extend(found)
        if self._bounded and not full:
            self._done = True
        self._awake = None if full else now + self._interval
        return items

    def next_awake(self) -> datetime | None:
        return None if self._done else self._awake

    def snapshot(self) -> SourceState:
        return SourceState(self._cursor, self._corrections_after)


def _position(item: SignalItem) -> SignalCursor:
    if isinstance(item, SignalRow):
        return SignalCursor(item.window_size, item.event_ts, item.symbol, item.seq)
    return item.cursor
