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
poll again (:class:`PollSchedule`): at least every ``TRADING_POLL_INTERVAL_S``, and every
``TRADING_POLL_PROBE_S`` around the time the next signal window's final rows are expected —
the TA sink inserts each window's final rows together, once per window, so they come one
window after the last ones, give or take the TA flow's jitter. Polling only every interval,
a row waited for the next poll up to a whole interval after it was queryable, and since the
rows come at a steady pace, a poll that once fell just before them kept doing so, second
after second (measured: bench/README.md, bench/latency.py "Session 15"). A full batch polls
again at once. Wall-clock time only decides when to read, never what is read. Corrections (an
audit record, never traded) are looked for every :data:`CORRECTIONS_EVERY` rather than at
every poll: their query costs as much as the read itself, and it delayed every batch of rows.
A bounded source (``TRADING_EXIT_AT_END``) reads every row to the current end, ignoring the
settle horizon, and then ends. A set ``stop`` event ends it cleanly (final snapshot, no replay).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from trading.adapters.clickhouse_signals import ClickHouseSignalReader
from trading.core.domain import SignalRow
from trading.core.ports import SignalCursor
from trading.core.signals import SignalCorrection, SignalDeadLetter

__all__ = [
    "CORRECTIONS_EVERY",
    "PROBE_LEAD",
    "PollSchedule",
    "SignalItem",
    "SourceState",
    "TradingSignalSource",
]

SignalItem = SignalRow | SignalDeadLetter | SignalCorrection
CORRECTIONS_EVERY = timedelta(seconds=5)
"""How often a streaming source looks for corrections (a bounded one: at every poll)."""
PROBE_LEAD = timedelta(seconds=0.15)
"""How long before the next window's rows are expected the probing polls begin: one window
after the last ones came, they come earlier by as much as the TA flow's latency varies (its
p1–p99 spread is ~150 ms at 500 symbols, bench/README.md)."""


@dataclass
class PollSchedule:
    """When the signal source polls next: every ``interval`` at the latest, and every
    ``probe`` around one ``cadence`` (the signal window) after the last rows came, until the
    next ones come.

    When the last rows came is known to within two polls: after the last poll that found
    nothing and at or before the first that found them. The earlier bound is kept, so the
    probes begin :data:`PROBE_LEAD` before one window after it — at worst a few probes early,
    never late for rows that come on time — and once the rows were found by a probe the bound
    is within one probe of their arrival. Probing ends an ``interval`` and a lead past the
    expected time (the rows are not coming at the window's pace: a quiet market, a stalled
    TA flow); polling then falls back to the interval until rows come again. ``probe`` zero:
    every ``interval`` only.

    >>> t = datetime(2026, 1, 2, 15, 0, tzinfo=UTC)
    >>> s = PollSchedule(timedelta(seconds=0.5), timedelta(seconds=1), timedelta(seconds=0.05))
    >>> s.next_poll(t, found=False) - t, s.next_poll(t + timedelta(seconds=0.5), found=True) - t
    (datetime.timedelta(microseconds=500000), datetime.timedelta(microseconds=850000))
    >>> s.next_poll(t + timedelta(seconds=0.85), found=False) - t  # probing: rows due at t + 1 s
    datetime.timedelta(microseconds=900000)
    """

    interval: timedelta
    cadence: timedelta
    probe: timedelta
    arrived_after: datetime | None = None
    """The last rows came after this (the last poll before them that found nothing)."""
    _polled_at: datetime | None = field(default=None, init=False)
    _found: bool = field(default=False, init=False)

    def next_poll(self, now: datetime, *, found: bool) -> datetime:
        """The time of the next poll after one at ``now`` that ``found`` rows or not (called
        for every poll, also those followed at once by another: a full batch)."""
        if found and not self._found:
            self.arrived_after = self._polled_at or now
        self._polled_at, self._found = now, found
        regular = now + self.interval
        if not self.probe or self.arrived_after is None:
            return regular
        due = self.arrived_after + self.cadence
        if now < due - PROBE_LEAD:
            return min(regular, due - PROBE_LEAD)
        if now < due + self.interval + PROBE_LEAD:
            return min(regular, now + self.probe)
        return regular


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
        cadence: timedelta,
        probe: timedelta,
        batch_size: int,
        bounded: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """``cadence``: the signal window (final rows come once per window); ``probe``: the
        step of the polls around their expected arrival (:class:`PollSchedule`; zero: off)."""
        self._reader = reader
        self._initial = initial_cursor
        self._interval = poll_interval
        self._cadence = cadence
        self._probe = probe
        self._batch = batch_size
        self._bounded = bounded
        self._stop = stop

    def list_parts(self) -> list[str]:
        return ["signals"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: SourceState | None
    ) -> _SignalPartition:
        state = resume_state or SourceState(self._initial())
        schedule = PollSchedule(self._interval, self._cadence, self._probe)
        return _SignalPartition(
            self._reader(), state, schedule, self._batch, self._bounded, self._stop
        )


class _SignalPartition(StatefulSourcePartition[SignalItem, SourceState]):
    def __init__(
        self,
        reader: ClickHouseSignalReader,
        state: SourceState,
        schedule: PollSchedule,
        batch: int,
        bounded: bool,
        stop: threading.Event | None,
    ) -> None:
        self._reader = reader
        self._cursor = state.cursor
        self._corrections_after = state.corrections_after
        self._schedule = schedule
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
        later = self._schedule.next_poll(now, found=bool(batch.rows))
        self._awake = None if full else later
        return items

    def next_awake(self) -> datetime | None:
        return None if self._done else self._awake

    def snapshot(self) -> SourceState:
        return SourceState(self._cursor, self._corrections_after)


def _position(item: SignalItem) -> SignalCursor:
    if isinstance(item, SignalRow):
        return SignalCursor(item.window_size, item.event_ts, item.symbol, item.seq)
    return item.cursor
