"""The 1-second microbar operator: decode trade batches, pre-aggregate, merge on keyed state.

Shape (issue #4 "design for batches", ``shared/style.md`` on ``reduce_final``):

1. ``flat_map_batch`` decodes a whole input batch with msgspec (a struct naming only the
   fields a bar needs) and reduces it per (symbol, second) as
   :func:`~torghut.ta.microbars.preaggregate` does: compiled
   (:func:`operators.trade_wire.preaggregate_batch`) for a well-formed batch in any order, in
   Python (:func:`operators.trade_wire.decode_trades` + ``preaggregate``, which also
   dead-letters with a reason) otherwise. It emits, per key group
   (:mod:`operators.key_groups`), the :class:`~torghut.ta.microbars.SymbolBatch` es of the
   group's symbols, plus dead letters.
   It also broadcasts the feed's time to **every** key group: each group gets a
   :class:`GroupBatch` per input batch (empty for a group none of whose symbols traded), with
   the batch's source partition and its largest event time. 16 small items per batch, against
   one per (symbol, batch) if each symbol carried it.
2. ``stateful_batch`` keyed by key group merges those into one
   :class:`~torghut.ta.microbars.SymbolBars` per symbol, and closes bars on the **feed's**
   time: per source partition, the largest event time it delivered (one clock for every
   symbol, like Flink's per-partition watermark). A bar is published provisionally
   (``is_final=false``) as soon as the partition's time passes its end, and final
   (``is_final=true``) once it passes its end plus the allowed lateness — also for a symbol
   that went quiet, whose own trades no longer move anything. Provisional rows are published
   only while the feed is live: when the partition's time is more than the allowed lateness
   behind the wall clock (a backfill, a replay, a process catching up after a stall) the final
   row follows within the same catch-up, so the provisional one is skipped (a wall-clock
   decision about *when* to publish; the final rows do not depend on it). Open bars are
   indexed by end (a heap per partition), so the feed's time finds the bars it passes without
   a scan of every symbol. Each activation of a group emits one :data:`BarRows` item (its
   rows, dead letters and :class:`~operators.key_groups.KeyGroupProgress` mark together,
   :mod:`operators.joints`), not one item per bar: the sinks flush when every group has passed
   a second, and the indicator step takes the group's bars in one piece.

   The wall clock closes bars only when the feed is quiet **and** the process is caught up: a
   bar ending at ``E`` of a partition whose time last moved at wall time ``Q`` is due at
   ``max(E, Q) + idle_close_ms`` and is closed then only if every source has reported a poll
   that found nothing pending at or after that time
   (:meth:`operators.ta_status.TaProgress.mark_source_drained`). A lagging process (whose
   sources keep finding data) or a paused one (whose polls vouch for nothing from the pause,
   :mod:`operators.caught_up`) therefore never closes a bar early, and neither does a
   replay whose event times lie in the past (its feed keeps moving); after a restart every
   partition counts as having moved at the restart.

Why per partition and not the minimum over partitions as Flink does: a symbol's trades all
come from one partition (the key is the symbol), in order, so that partition's time is the one
that says "nothing earlier is coming" for it; a lagging partition does not hold back the others,
and the result depends only on each partition's order, not on how partitions interleave.

Not Bytewax's ``EventClock`` windows: they busy-spin and misjudge lateness in replays
(``shared/bytewax-notes.md`` §1.6).

Output identity (what makes replays idempotent in ClickHouse): key ``(symbol, event_ts, seq)``
with ``seq = end_ms * 10 + lane`` (:func:`lane_seq`), content a pure function of the input.
``ingest_ts`` is wall-clock time, strictly increasing per symbol (ms resolution), so a
correction always replaces the version it corrects under ``ReplacingMergeTree(ingest_ts)``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from operators.joints import GroupRows, group_rows, split_dead_letters
from operators.key_groups import ALL_GROUPS, KeyGroupProgress, key_group
from operators.partitions import TaInput, by_partition
from operators.ta_status import TaProgress
from operators.trade_wire import STAGE, decode_trades, preaggregate_batch
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter, dead_letter
from torghut.events import Envelope, Microbar, Window
from torghut.logs import get_logger
from torghut.ta.instants import US_PER_S, us_to_dt, wall_micros
from torghut.ta.microbars import (
    Applied,
    ClosedBar,
    DeadTrades,
    Rejected,
    SymbolBars,
    SymbolBarsState,
    SymbolBatch,
    preaggregate,
)

__all__ = [
    "IDLE_RETRY_US",
    "LANES",
    "SOURCE",
    "BarRows",
    "GroupBatch",
    "MicrobarGroupState",
    "MicrobarLogic",
    "MicrobarStreams",
    "lane_seq",
    "microbars",
]

SOURCE = "torghut-ta"
LANES = {"PT1S": 1, "PT1M": 2}
"""Window sizes of the TA lanes and their digit in ``seq``."""

_LOG_SAMPLE = 20

log = get_logger("operators.microbars")


def lane_seq(end_us: int, window: str) -> int:
    """``seq`` of a TA row: bar end in ms × 10 + lane digit.

    Unique per (symbol, event_ts) across lanes (a 1 s and a 1 min bar can end at the same
    instant and ``ta_signals``' key has no window column), identical for every version of a
    bar, and increasing with event time within a lane.
    """
    return (end_us // 1000) * 10 + LANES.get(window, 9)


# --- the operator ---------------------------------------------------------------------------

IDLE_RETRY_US = 100_000
"""How soon a keyed TA step looks again when bars are due on the wall clock but a source is
behind (the microbar and the indicator steps both wait on the same caught-up reports)."""


class GroupBatch(NamedTuple):
    """One input batch as one key group sees it: its symbols' partials and the feed's time.

    ``feed_us`` is the largest event time of the whole batch (every symbol), ``part`` the source
    partition it came from; ``batches`` is empty for a group none of whose symbols traded.
    """

    group: str
    part: str
    feed_us: int
    batches: list[SymbolBatch]


BarRows = GroupRows[Envelope[Microbar]]
"""What the microbar step emits per key group and activation (see :mod:`operators.joints`)."""


@dataclass(frozen=True)
class MicrobarStreams:
    """The microbar step's outputs.

    ``bars``: provisional and final 1 s bars (first versions and corrections). ``updates``:
    the same in order with each key group's progress marks (for sinks that flush on progress).
    ``keyed``: the step's own output, one :data:`BarRows` per key group and activation (for the
    indicator step). ``dead_letters``: everything dead-lettered.
    """

    bars: Stream[Envelope[Microbar]]
    updates: Stream[Envelope[Microbar] | KeyGroupProgress]
    keyed: Stream[tuple[str, BarRows]]
    dead_letters: Stream[DeadLetter]


@operator
def microbars(
    step_id: str,
    trades: Stream[TaInput],
    settings: TaSettings,
    progress: TaProgress,
) -> MicrobarStreams:
    """1 s microbars from a stream of trade messages (Kafka messages, bytes or envelopes).

    >>> # flow: bars = microbars("bars_1s", trades, settings.ta, TaProgress()).bars
    """
    lateness = settings.allowed_lateness_ms * 1000
    horizon = settings.correction_horizon_s * US_PER_S
    idle_us = settings.idle_close_ms * 1000
    allow = frozenset(settings.symbol_allowlist) or None
    pre = op.flat_map_batch(
        "preaggregate", trades, lambda batch: _preaggregate(batch, lateness, allow, progress)
    )
    split = split_dead_letters("split_rejects", pre)
    out = op.stateful_batch(
        "bars",
        split.items,
        lambda resume: MicrobarLogic(lateness, horizon, idle_us, progress, resume),
    )
    rows = group_rows("rows", out)
    dead = op.merge("dead_letters", split.dead_letters, rows.dead_letters)
    return MicrobarStreams(rows.rows, rows.updates, out, dead)


def _preaggregate(
    batch: list[TaInput], lateness: int, allow: frozenset[str] | None, progress: TaProgress
) -> list[tuple[str, GroupBatch] | DeadLetter]:
    """One batch of trade messages → to every key group, its symbols' partials + feed time."""
    out: list[tuple[str, GroupBatch] | DeadLetter] = []
    for part, values in by_partition(batch):
        out.extend(_preaggregate_part(part, values, lateness, allow, progress))
    return out


def _preaggregate_part(
    part: str,
    values: list[Any],
    lateness: int,
    allow: frozenset[str] | None,
    progress: TaProgress,
) -> list[tuple[str, GroupBatch] | DeadLetter]:
    fast = preaggregate_batch(values, lateness, allow)
    dead: list[DeadLetter] = []
    rejected: list[Rejected] = []
    if fast is None:
        progress.add_batch("python")
        ticks, dead = decode_trades(values)
        per_symbol, rejected, duplicates = preaggregate(ticks, lateness, allow)
    else:
        progress.add_batch("compiled")
        per_symbol, duplicates = fast
    if duplicates:
        progress.add_duplicates(duplicates)
    groups: dict[str, list[SymbolBatch]] = {}
    feed_us = -1
    for sym, symbol_batch in per_symbol.items():
        if symbol_batch.max_ts_us > feed_us:
            feed_us = symbol_batch.max_ts_us
        group = key_group(sym)
        held = groups.get(group)
        if held is None:
            groups[group] = [symbol_batch]
        else:
            held.append(symbol_batch)
    out: list[tuple[str, GroupBatch] | DeadLetter] = []
    if per_symbol:
        out.extend((g, GroupBatch(g, part, feed_us, groups.get(g, []))) for g in ALL_GROUPS)
    if dead:
        _count_dead(progress, "invalid_message", len(dead))
        out.extend(dead)
    if rejected:
        now = datetime.now(UTC)
        for r in rejected:
            _count_dead(progress, r.reason, 1)
            t = r.tick
            out.append(
                dead_letter(
                    STAGE,
                    r.reason,
                    msgspec.json.encode(t._asdict()),
                    f"price={t.price!r} size={t.size!r}",
                    symbol=t.symbol,
                    received_at=now,
                )
            )
    return out


def _count_dead(progress: TaProgress, reason: str, n: int) -> None:
    progress.add_dead_letters(reason, n)
    if progress.dead_letters <= _LOG_SAMPLE:
        log.warning("ta_dead_letter", reason=reason, count=n)


def _dead_letter_of(d: DeadTrades) -> DeadLetter:
    return dead_letter(
        STAGE,
        d.reason,
        msgspec.json.encode(d._asdict()),
        f"{d.trades} trade(s) of the bar ending {us_to_dt(d.end_us).isoformat()} arrived "
        "after the correction horizon",
        symbol=d.symbol,
    )


class MicrobarGroupState(NamedTuple):
    """Picklable snapshot of :class:`MicrobarLogic`.

    The bars of each symbol, the feed's time per source partition, the partition each symbol
    last came from, and per partition how far the wall clock has closed bars.
    """

    symbols: dict[str, SymbolBarsState]
    feed: dict[str, int]
    parts: dict[str, str]
    idle_through: dict[str, int]


_Heap = list[tuple[int, str]]
"""``(bar end in µs, symbol)`` of open bars, smallest end first."""


class MicrobarLogic(StatefulBatchLogic[GroupBatch, BarRows, MicrobarGroupState]):
    """Keyed state of one key group: a :class:`SymbolBars` per symbol, the feed's time.

    Per source partition two heaps index the open bars by end: ``to show`` (not yet published)
    and ``to close`` (published provisionally, not final). When a partition's time advances,
    the heap tops it passed are popped and only those symbols are touched. Heap entries of bars
    that closed otherwise (the symbol's own watermark) are dropped when they surface.

    ``clock`` is the wall clock (µs); tests replace it. See the module docstring for when the
    wall clock may close a bar.
    """

    def __init__(
        self,
        lateness_us: int,
        horizon_us: int,
        idle_us: int,
        progress: TaProgress,
        resume: MicrobarGroupState | None,
        clock: Callable[[], int] = wall_micros,
    ) -> None:
        self._lateness = lateness_us
        self._horizon = horizon_us
        self._idle = idle_us
        self._progress = progress
        self._clock = clock
        self._group = ""
        self._symbols: dict[str, SymbolBars] = {}
        self._feed: dict[str, int] = {}
        self._part_of: dict[str, str] = {}
        self._to_show: dict[str, _Heap] = {}
        self._to_close: dict[str, _Heap] = {}
        self._moved_at: dict[str, int] = {}
        """Wall time (µs) at which each partition's time last advanced."""
        self._idle_through: dict[str, int] = {}
        self._retry_at = 0
        self._marked: tuple[int, int] | None = None
        self._ingest_ms: dict[str, int] = {}
        if resume is not None:
            self._feed = dict(resume.feed)
            self._part_of = dict(resume.parts)
            self._idle_through = dict(resume.idle_through)
            now = clock()
            self._moved_at = {part: now for part in self._feed}
            for sym, state in resume.symbols.items():
                bars = self._symbols[sym] = SymbolBars.restore(state, lateness_us, horizon_us)
                heap = self._to_show.setdefault(self._part_of.get(sym, "feed"), [])
                heap.extend((end, sym) for end in bars.open_ends_us)
            for heap in self._to_show.values():
                heapq.heapify(heap)

    def on_batch(self, values: list[GroupBatch]) -> tuple[list[BarRows], bool]:
        symbols, part_of, feed = self._symbols, self._part_of, self._feed
        out = Applied()
        moved: set[str] = set()
        for gb in values:
            part = gb.part
            for symbol_batch in gb.batches:
                sym = symbol_batch.symbol
                bars = symbols.get(sym)
                if bars is None:
                    bars = symbols[sym] = SymbolBars(sym, self._lateness, self._horizon)
                bars.apply(symbol_batch, out)
                if part_of.get(sym) != part:
                    part_of[sym] = part
            if out.opened:
                heap = self._to_show.get(part)
                if heap is None:
                    heap = self._to_show[part] = []
                for entry in out.opened:
                    heapq.heappush(heap, entry)
                out.opened.clear()
            held = feed.get(part)
            if held is None or gb.feed_us > held:
                feed[part] = gb.feed_us
                moved.add(part)
            self._group = gb.group
        if moved:
            now = self._clock()
            for part in moved:
                self._moved_at[part] = now
                self._advance(part, out)
            self._progress.observe_watermark(max(feed.values()) - self._lateness)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[BarRows], bool]:
        """Close, on the wall clock, the bars due while every source is caught up."""
        out = Applied()
        now = self._clock()
        drained = self._progress.drained_through()
        if drained is not None:
            limit = drained - self._idle
            for part, moved_at in self._moved_at.items():
                if moved_at > limit or limit <= self._idle_through.get(part, limit - 1):
                    continue  # the partition moved within idle_close_ms, or nothing new
                self._idle_through[part] = limit
                for heaps in (self._to_show, self._to_close):
                    heap = heaps.get(part)
                    while heap and heap[0][0] <= limit:
                        _end, sym = heapq.heappop(heap)
                        self._symbols[sym].close_until(limit, out)
        self._retry_at = now + IDLE_RETRY_US
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[BarRows], bool]:
        """End of input (a backfill, tests, benchmarks): publish what is still open — but not
        after a requested stop, whose EOF snapshot keeps the open bars for the restart."""
        if self._progress.stop_requested.is_set():
            return [], StatefulBatchLogic.RETAIN
        out = Applied()
        for bars in self._symbols.values():
            bars.close_idle(out)
        for heaps in (self._to_show, self._to_close):
            heaps.clear()
        return self._emit(out), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        ends = [h[0][0] for hs in (self._to_show, self._to_close) for h in hs.values() if h]
        if not ends:
            return None
        due = min(ends) + self._idle
        return us_to_dt(max(due, self._retry_at))

    def snapshot(self) -> MicrobarGroupState:
        return MicrobarGroupState(
            {sym: bars.snapshot() for sym, bars in self._symbols.items()},
            dict(self._feed),
            dict(self._part_of),
            dict(self._idle_through),
        )

    def _advance(self, part: str, out: Applied) -> None:
        """Publish what the partition's time passed: provisional rows, then final ones."""
        clock = self._feed[part]
        final_wm = clock - self._lateness
        live = self._clock() - clock < self._lateness
        symbols = self._symbols
        show = self._to_show.get(part)
        close = self._to_close.get(part)
        if close is None:
            close = self._to_close[part] = []
        while show and show[0][0] <= clock:
            end, sym = heapq.heappop(show)
            bars = symbols[sym]
            if end <= final_wm:
                bars.close_until(final_wm, out)
            else:
                if live:
                    bars.show_until(clock, out)
                heapq.heappush(close, (end, sym))
        while close and close[0][0] <= final_wm:
            _end, sym = heapq.heappop(close)
            symbols[sym].close_until(final_wm, out)

    def _progress_mark(self) -> KeyGroupProgress | None:
        """This group's mark if it moved: rows up to the slowest partition's time are out."""
        if not self._feed or not self._group:
            return None
        idle, lateness = self._idle_through, self._lateness
        shown = min(max(t, idle.get(p, t)) for p, t in self._feed.items())
        final = min(max(t - lateness, idle.get(p, t - lateness)) for p, t in self._feed.items())
        if self._marked == (shown, final):
            return None
        self._marked = (shown, final)
        return KeyGroupProgress(self._group, shown, final)

    def _emit(self, out: Applied) -> list[BarRows]:
        """This activation's rows, dead letters and progress mark as one item (or none)."""
        if out.duplicates:
            self._progress.add_duplicates(out.duplicates)
        rows: list[Envelope[Microbar]] = []
        if out.bars:
            now_ms = time.time_ns() // 1_000_000
            last = self._ingest_ms
            provisional = 0
            append = rows.append
            for b in out.bars:
                # strictly increasing per symbol: a later row always outranks an earlier one
                ingest_ms = last[b.symbol] = max(now_ms, last.get(b.symbol, 0) + 1)
                append(_envelope(b, us_to_dt(ingest_ms * 1000)))
                if not b.final:
                    provisional += 1
            corrected = out.corrections
            self._progress.add_bars("PT1S", len(out.bars) - provisional - corrected, corrected)
            if provisional:
                self._progress.add_provisional(provisional)
        dead: list[DeadLetter] = []
        for d in out.dead:
            _count_dead(self._progress, d.reason, d.trades)
            dead.append(_dead_letter_of(d))
        mark = self._progress_mark()
        if not rows and not dead and mark is None:
            return []
        return [GroupRows(rows, dead, mark)]


def _envelope(b: ClosedBar, ingest: datetime) -> Envelope[Microbar]:
    end = us_to_dt(b.end_us)
    return Envelope(
        event_ts=end,
        ingest_ts=ingest,
        symbol=b.symbol,
        seq=lane_seq(b.end_us, "PT1S"),
        payload=Microbar(o=b.o, h=b.h, l=b.l, c=b.c, v=b.v, vwap=b.vwap, count=b.n),
        is_final=b.final,
        source=SOURCE,
        window=Window(size="PT1S", start=end - timedelta(seconds=1), end=end),
        version=b.version,
    )
