"""Indicator operators: bars and quotes of each (symbol, window size) into ``Envelope[Signal]``.

The maths is :class:`torghut.ta.indicators.IndicatorEngine` (pure, O(1) per bar); this module
only routes and wraps it:

* state is keyed by key group (:mod:`operators.key_groups`); inside a group each (symbol,
  window size) has its own :class:`SignalLane` and engine, so the 1 s microbar lane and the
  1 min Alpaca-bar lane never share indicator state;
* quotes arrive already reduced to the latest quote per (symbol, second bucket) of each input
  batch (:mod:`operators.quotes`) and feed every lane of their symbol;
* only final bars make signals (``is_final``; provisional microbars are for dashboards), so
  every signal row is final and the trading loop acts on rows that do not change except by a
  versioned correction;
* a bar that repeats the latest bar's end (a corrected microbar, an Alpaca ``updated_bar``)
  re-emits that bar's signal with a higher ``version``; identical repeats are dropped as
  duplicates; a correction of an older bar cannot be replayed by the engine and is counted
  (``stale_correction``), its microbar correction still reaches ``ta_microbars``.

Snapshots hold each engine as pickled bytes (cheap for Bytewax to deep-copy every epoch),
pickled again only for lanes that changed since the previous snapshot.

Joints: the step takes :data:`IndicatorInput` items (a key group's quote chunk of a batch, or
the microbar step's :data:`~operators.microbars.BarRows` of a group) and emits one
:data:`SignalRows` per group and activation (:mod:`operators.joints`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from operators.joints import GroupRows, group_rows, split_dead_letters
from operators.key_groups import KeyGroupProgress, key_group
from operators.microbars import IDLE_RETRY_US, SOURCE, BarRows, lane_seq
from operators.partitions import TaInput, raw_values
from operators.quotes import STAGE, QuoteChunk, quote_of
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter, dead_letter
from torghut.events import Bar, Envelope, Microbar, Quote, Signal, Window
from torghut.ta.imbalance import QuoteBook
from torghut.ta.indicators import IndicatorEngine, InvalidBar
from torghut.ta.instants import epoch_micros, us_to_dt, wall_micros

__all__ = [
    "IndicatorGroupState",
    "IndicatorInput",
    "IndicatorLogic",
    "LaneState",
    "SignalLane",
    "SignalRows",
    "alpaca_minute_bars",
    "indicators",
    "minute_bar_rows",
]

_US = 1_000_000
_BAR = msgspec.json.Decoder(Envelope[Bar])


@dataclass(frozen=True)
class MinuteBarStreams:
    bars: Stream[Envelope[Microbar]]
    dead_letters: Stream[DeadLetter]


@operator
def alpaca_minute_bars(
    step_id: str, alpaca_bars: Stream[TaInput], progress: TaProgress
) -> MinuteBarStreams:
    """Alpaca ``bar`` / ``updated_bar`` messages as PT1M ``Envelope[Microbar]`` s.

    Daily bars are not a lane and are skipped.
    """

    def convert(batch: list[TaInput]) -> list[Envelope[Microbar] | DeadLetter]:
        out: list[Envelope[Microbar] | DeadLetter] = []
        for v in raw_values(batch):
            try:
                env = v if isinstance(v, Envelope) else _BAR.decode(v)
            except (msgspec.DecodeError, TypeError) as exc:
                progress.add_dead_letters("invalid_message")
                raw = v if isinstance(v, bytes) else b""
                out.append(dead_letter(STAGE, "invalid_message", raw, str(exc)))
                continue
            b = env.payload
            if b.kind == "daily_bar":
                continue
            end = env.event_ts
            out.append(
                Envelope(
                    event_ts=end,
                    ingest_ts=env.ingest_ts,
                    symbol=env.symbol,
                    seq=env.seq,
                    payload=Microbar(
                        b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count
                    ),
                    source=env.source,
                    window=Window("PT1M", start=env.window.start if env.window else None, end=end),
                    version=env.version,
                )
            )
        return out

    converted = op.flat_map_batch("convert", alpaca_bars, convert)
    split = split_dead_letters("split_dead", converted)
    return MinuteBarStreams(split.items, split.dead_letters)


def minute_bar_rows(env: Envelope[Microbar]) -> tuple[str, BarRows]:
    """An Alpaca minute bar as the indicator step's input: keyed by its group, one row."""
    return key_group(env.symbol), GroupRows([env], [], None)


SignalRows = GroupRows[Envelope[Signal]]
"""What the indicator step emits per key group and activation (see :mod:`operators.joints`)."""

IndicatorInput = QuoteChunk | BarRows
"""The indicator step's input items: a key group's quotes of a batch, or its bars."""


@dataclass(frozen=True)
class IndicatorStreams:
    signals: Stream[Envelope[Signal]]
    updates: Stream[Envelope[Signal] | KeyGroupProgress]
    """``signals`` in order with each key group's progress marks."""
    dead_letters: Stream[DeadLetter]


@operator
def indicators(
    step_id: str,
    keyed: Stream[tuple[str, IndicatorInput]],
    lanes: tuple[str, ...],
    settings: TaSettings,
    progress: TaProgress,
) -> IndicatorStreams:
    """Signals from final bars (``Envelope[Microbar]``) and quote chunks.

    Items are keyed by the key group of their symbol (:func:`operators.key_groups.key_group`);
    a bar goes to the lane of its window size, a symbol's quotes to every lane in ``lanes``;
    the microbar step's :class:`~operators.key_groups.KeyGroupProgress` marks say how far its
    final bars are complete.
    """
    out = op.stateful_batch(
        "engine", keyed, lambda resume: IndicatorLogic(lanes, settings, progress, resume)
    )
    rows = group_rows("rows", out)
    return IndicatorStreams(rows.rows, rows.updates, rows.dead_letters)


@dataclass(slots=True)
class _Emitted:
    """What one callback of the indicator step produced, before it becomes a :data:`SignalRows`."""

    signals: list[Envelope[Signal]]
    dead: list[DeadLetter]
    counts: dict[str, int]
    """Signals per lane (window size), counted once per callback: a labelled metric per lane
    released cost as much as the lane's signal."""

    def count(self, lane: str, signals: int) -> None:
        if signals:
            self.counts[lane] = self.counts.get(lane, 0) + signals


class LaneState(NamedTuple):
    """Picklable snapshot of one :class:`SignalLane`."""

    symbol: str
    lane: str
    engine: bytes
    """The pickled :class:`IndicatorEngine`; before the lane's first bar, its pickled
    :class:`~torghut.ta.imbalance.QuoteBook` (or nothing: ``b""``)."""
    last_end_us: int | None
    last_version: int
    last_bar: Microbar | None
    pending: tuple[Envelope[Microbar], ...]


class IndicatorGroupState(NamedTuple):
    """Picklable snapshot of :class:`IndicatorLogic`: lanes, staged quotes, the feed's times."""

    lanes: tuple[LaneState, ...]
    staged: dict[int, dict[str, tuple[int, Any]]]
    quote_feed: dict[str, int]
    quote_high_us: int | None
    bars_final_us: int | None
    idle_through_us: int


class SignalLane:
    """One (symbol, window size): its :class:`IndicatorEngine` plus what versioning needs.

    The engine is created by the lane's first bar; until then the lane keeps only the quote
    book the engine will start with (quotes are the only input before a bar). Why: every
    symbol's quotes feed every lane, and a symbol may have no bars in a lane for a long time
    (the 1 min lane without Alpaca bars, or in its first minute); a quote book is a few
    entries and pickles in a few µs, an engine is a few kB and 10–20 µs each snapshot
    (``bench/snapshots.py``).
    """

    __slots__ = (
        "book",
        "engine",
        "ingest_ms",
        "lane",
        "last_bar",
        "last_end_us",
        "last_version",
        "pending",
        "saved",
        "settings",
        "symbol",
    )

    def __init__(self, symbol: str, lane: str, settings: TaSettings) -> None:
        self.symbol = symbol
        self.lane = lane
        self.settings = settings
        self.engine: IndicatorEngine | None = None
        self.book: QuoteBook | None = None
        """The quotes before the first bar (None once the engine holds them)."""
        self.last_end_us: int | None = None
        self.last_version = 0
        self.last_bar: Microbar | None = None
        self.ingest_ms = 0
        self.pending: list[tuple[int, Envelope[Microbar]]] = []
        """Bars waiting for quotes: (bar end in µs, bar), in arrival order."""
        self.saved: LaneState | None = None
        """The last :meth:`snapshot`, while nothing changed since (None once anything did)."""

    @classmethod
    def restore(cls, state: LaneState, settings: TaSettings) -> SignalLane:
        lane = cls(state.symbol, state.lane, settings)
        if state.engine:
            held = pickle.loads(state.engine)
            if isinstance(held, QuoteBook):
                lane.book = held
            elif isinstance(held, IndicatorEngine):
                lane.engine = held
            else:
                raise TypeError(f"not a lane's engine or quote book: {type(held).__name__}")
        lane.last_end_us, lane.last_version = state.last_end_us, state.last_version
        lane.last_bar = state.last_bar
        lane.pending = [(_end_us(env), env) for env in state.pending]
        lane.saved = state
        return lane

    def snapshot(self) -> LaneState:
        """The lane's state; pickled again only if the lane changed since the last snapshot.

        Why: pickling an engine costs 10–20 µs on this machine, Bytewax asks every epoch for
        every key group, and with thousands of symbols most lanes of a quiet market did not
        change.
        A :class:`LaneState` is immutable, so successive snapshots may share it.
        """
        saved = self.saved
        if saved is None:
            engine, book = self.engine, self.book
            if engine is not None:
                held = engine.snapshot()
            else:
                held = b"" if book is None else pickle.dumps(book, pickle.HIGHEST_PROTOCOL)
            saved = self.saved = LaneState(
                self.symbol,
                self.lane,
                held,
                self.last_end_us,
                self.last_version,
                self.last_bar,
                tuple(env for _, env in self.pending),
            )
        return saved

    def add_bar(self, env: Envelope[Microbar]) -> None:
        self.saved = None
        self.pending.append((_end_us(env), env))

    def on_quote_us(self, ts_us: int, quote: Quote) -> None:
        """Hand the engine a quote of this symbol (event time in µs)."""
        self.saved = None
        engine = self.engine
        if engine is not None:
            engine.on_quote_us(ts_us, quote)
            return
        book = self.book
        if book is None:
            book = self.book = IndicatorEngine.quote_book(self.lane, self.settings)
        book.add(ts_us, quote)

    def release(
        self, until_us: int | None, now_us: int, progress: TaProgress, out: _Emitted
    ) -> int:
        """Signals of pending bars ending at or before ``until_us`` (None: all); how many."""
        pending = self.pending
        n = 0
        for end_us, _ in pending:
            if until_us is not None and end_us > until_us:
                break
            n += 1
        if n == 0:
            return 0
        self.saved = None
        before = len(out.signals)
        for end_us, env in pending[:n]:
            self._on_bar(end_us, env, now_us, progress, out)
        del pending[:n]
        return len(out.signals) - before

    def _on_bar(
        self,
        end_us: int,
        env: Envelope[Microbar],
        now_us: int,
        progress: TaProgress,
        out: _Emitted,
    ) -> None:
        lane = self.lane
        last = self.last_end_us
        version = env.version
        if last is not None and end_us <= last:
            if end_us < last:
                progress.add_skipped_bar("stale_correction")
                return
            if env.payload == self.last_bar:
                progress.add_skipped_bar("duplicate_bar")
                return
            version = max(version, self.last_version + 1)
        end = env.event_ts
        engine = self.engine
        if engine is None:
            engine = self.engine = IndicatorEngine(self.lane, self.settings, self.book)
            self.book = None
        try:
            signal = engine.on_bar(end, env.payload)
        except InvalidBar as exc:
            progress.add_dead_letters("invalid_bar")
            out.dead.append(
                dead_letter(
                    STAGE, "invalid_bar", msgspec.json.encode(env), str(exc), symbol=env.symbol
                )
            )
            return
        if signal is None:
            return
        self.last_end_us, self.last_version, self.last_bar = end_us, version, env.payload
        # strictly increasing per lane: a re-emitted signal always outranks the one it replaces
        ingest_ms = self.ingest_ms = max(now_us // 1000, self.ingest_ms + 1)
        start = us_to_dt(end_us - (60 if lane == "PT1M" else 1) * _US)
        out.signals.append(
            Envelope(
                event_ts=end,
                ingest_ts=us_to_dt(ingest_ms * 1000),
                symbol=env.symbol,
                seq=lane_seq(end_us, lane),
                payload=signal,
                source=SOURCE,
                window=Window(size=lane, start=start, end=end),
                version=version,
            )
        )


class IndicatorLogic(StatefulBatchLogic[IndicatorInput, SignalRows, IndicatorGroupState]):
    """Keyed state of one key group: a :class:`SignalLane` per (symbol, window size).

    Final bars wait until the quotes are complete up to the bar end: the quote feed's time
    (per quote partition, its newest quote; the slowest partition counts) minus the allowed
    lateness must reach it. Bars and quotes come from different topics, read at different
    paces; without the wait, the imbalance fields of a signal would depend on which topic
    happened to be read further, and a replay would not rewrite the same rows. When the quote
    feed is quiet (no quote partition's time moved for ``idle_close_ms`` on the wall clock), a
    bar ending at ``E`` is released at ``E + idle_close_ms``, but only if every source is
    caught up then (as for microbars, see :mod:`operators.microbars`); end of input releases
    everything. After its signals the group
    emits a :class:`~operators.key_groups.KeyGroupProgress` mark: every signal ending at or
    before it is out (final bars are complete there by the microbar step's marks and released
    by the quotes' time).

    Quotes are staged per second bucket and handed to the engines only once the quote feed has
    passed the bucket (its time − lateness): with 16 quote batches an event-second, a symbol's
    bucket is reduced again by every batch, and staging keeps only the last of them, merged by
    C-level ``dict.update`` — an ordered chunk later than everything staged simply overwrites.
    Any other chunk is merged symbol by symbol, keeping the later quote (on equal times the one
    that arrived last, as the engines' quote books do): with several quote partitions read in
    turn, a partition's batch is seldom later than the others' newest quote, and feeding such
    chunks to the engines whole (every quote parsed and booked) would be most of its CPU live.
    Quotes of a bucket already handed over go on at once (the quote books keep the latest per
    interval in any order). The payload is parsed at hand-over; one that does not parse is
    dead-lettered. A symbol's quotes feed each lane in ``lanes``; lanes are created by a
    symbol's first bar or quotes.
    """

    def __init__(
        self,
        lanes: tuple[str, ...],
        settings: TaSettings,
        progress: TaProgress,
        resume: IndicatorGroupState | None,
        clock: Callable[[], int] = wall_micros,
    ) -> None:
        self._quote_lanes = lanes
        self._settings = settings
        self._progress = progress
        self._clock = clock
        self._lateness_us = settings.allowed_lateness_ms * 1000
        self._idle_us = settings.idle_close_ms * 1000
        self._lanes: dict[str, dict[str, SignalLane]] = {}
        self._waiting: dict[SignalLane, None] = {}
        """Lanes with pending bars (an insertion-ordered set)."""
        self._gate_us: int | None = None
        """No waiting lane can release before the quote feed's watermark reaches this."""
        self._staged: dict[int, dict[str, tuple[int, Any]]] = {}
        self._quote_feed: dict[str, int] = {}
        self._all_quote_parts_seen = False
        self._moved_at: dict[str, int] = {}
        """Wall time (µs) at which each quote partition's time last advanced."""
        self._high_us: int | None = None
        self._bars_final: int | None = None
        self._idle_through = -(1 << 62)
        self._retry_at = 0
        self._group = ""
        self._marked: int | None = None
        if resume is not None:
            for state in resume.lanes:
                lane = SignalLane.restore(state, settings)
                self._lanes.setdefault(state.symbol, {})[state.lane] = lane
                if lane.pending:
                    self._waiting[lane] = None
            self._staged = {b: dict(e) for b, e in resume.staged.items()}
            self._quote_feed = dict(resume.quote_feed)
            now = clock()
            self._moved_at = {part: now for part in self._quote_feed}
            self._high_us = resume.quote_high_us
            self._bars_final = resume.bars_final_us
            self._idle_through = resume.idle_through_us
            self._gate_us = self._gate()

    def on_batch(self, values: list[IndicatorInput]) -> tuple[list[SignalRows], bool]:
        now = self._clock()
        out = _Emitted([], [], {})
        bars = False
        for v in values:
            if type(v) is QuoteChunk:
                self._add_quotes(v, out)
                continue
            assert type(v) is GroupRows
            for env in v.rows:
                if env.is_final:
                    size = env.window.size if env.window is not None else "PT1S"
                    lane = self._lane(env.symbol, size)
                    lane.add_bar(env)
                    self._waiting[lane] = None
                    bars = True
            mark = v.mark
            if mark is not None:
                self._group = mark.group
                if self._bars_final is None or mark.final_us > self._bars_final:
                    self._bars_final = mark.final_us
        if bars:
            self._gate_us = self._gate()
        self._release_ready(now, out)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[SignalRows], bool]:
        """Release, on the wall clock, the bars due while every source is caught up."""
        now = self._clock()
        out = _Emitted([], [], {})
        drained = self._progress.drained_through()
        limit = -(1 << 62) if drained is None else drained - self._idle_us
        quiet = all(moved <= limit for moved in self._moved_at.values())
        emitted: list[SignalRows] = []
        if quiet and limit > self._idle_through:
            self._idle_through = limit
            if self._gate_us is not None and self._gate_us <= limit:
                self._hand_over(None, out)
                for lane in self._waiting:
                    out.count(lane.lane, lane.release(limit, now, self._progress, out))
                self._forget_released()
            emitted = self._emit(out)
        self._retry_at = now + IDLE_RETRY_US
        return emitted, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[SignalRows], bool]:
        """End of input: release every waiting bar — not after a requested stop, whose EOF
        snapshot keeps them (and the staged quotes) for the restart."""
        if self._progress.stop_requested.is_set():
            return [], StatefulBatchLogic.RETAIN
        now = self._clock()
        out = _Emitted([], [], {})
        self._hand_over(None, out)
        for lane in self._waiting:
            out.count(lane.lane, lane.release(None, now, self._progress, out))
        self._forget_released()
        return self._emit(out, mark=False), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        gate = self._gate_us
        if gate is None:
            return None
        return us_to_dt(max(gate + self._idle_us, self._retry_at))

    def snapshot(self) -> IndicatorGroupState:
        lanes = tuple(lane.snapshot() for per in self._lanes.values() for lane in per.values())
        staged = {b: dict(e) for b, e in self._staged.items()}
        return IndicatorGroupState(
            lanes,
            staged,
            dict(self._quote_feed),
            self._high_us,
            self._bars_final,
            self._idle_through,
        )

    # --- quotes -----------------------------------------------------------------------------

    def _quote_watermark(self) -> int | None:
        """The slowest quote partition's time − lateness; None until every quote partition
        this process reads has been heard from (with several workers, one partition's chunks
        can reach a group before another's: its quotes are not complete anywhere yet)."""
        feed = self._quote_feed
        if not feed:
            return None
        if not self._all_quote_parts_seen:
            topics = {part.rpartition("/")[0] for part in feed}
            expected = set().union(*(self._progress.sources_of(t) for t in topics))
            if not expected.issubset(feed):
                return None
            self._all_quote_parts_seen = True
        return min(feed.values()) - self._lateness_us

    def _add_quotes(self, chunk: QuoteChunk, out: _Emitted) -> None:
        if chunk.newest:
            high = self._high_us
            later = chunk.ordered and (high is None or chunk.first_us >= high)
            staged = self._staged
            for bucket, entries in chunk.buckets.items():
                held = staged.get(bucket)
                if held is None:
                    staged[bucket] = entries
                elif later:
                    held.update(entries)
                else:
                    _keep_latest(held, entries)
            if high is None or chunk.high_us > high:
                self._high_us = chunk.high_us
        held_feed = self._quote_feed.get(chunk.part)
        if held_feed is None or chunk.feed_us > held_feed:
            self._quote_feed[chunk.part] = chunk.feed_us
            self._moved_at[chunk.part] = self._clock()
        wm = self._quote_watermark()
        if wm is not None:
            self._hand_over(wm, out)

    def _hand_over(self, until_us: int | None, out: _Emitted) -> None:
        """Feed the engines the staged buckets ending at or before ``until_us`` (None: all)."""
        staged = self._staged
        if not staged:
            return
        for bucket in sorted(staged):
            if until_us is not None and bucket * _US > until_us:
                break
            for sym, (ts_us, payload) in staged.pop(bucket).items():
                self._feed(sym, ts_us, payload, out)

    def _feed(self, sym: str, ts_us: int, entry: Quote | bytes, out: _Emitted) -> None:
        try:
            quote = quote_of(entry)
        except msgspec.DecodeError as exc:
            self._progress.add_dead_letters("invalid_quote")
            raw = entry if isinstance(entry, bytes) else b""
            out.dead.append(dead_letter(STAGE, "invalid_message", raw, str(exc), symbol=sym))
            return
        for lane in self._quote_lanes_of(sym):
            lane.on_quote_us(ts_us, quote)

    # --- releasing bars ---------------------------------------------------------------------

    def _gate(self) -> int | None:
        ends = [lane.pending[0][0] for lane in self._waiting if lane.pending]
        return min(ends) if ends else None

    def _release_ready(self, now: int, out: _Emitted) -> None:
        """Release the bars the quote feed's watermark has passed."""
        gate, wm = self._gate_us, self._quote_watermark()
        if gate is None or wm is None or wm < gate:
            return
        for lane in self._waiting:
            out.count(lane.lane, lane.release(wm, now, self._progress, out))
        self._forget_released()

    def _forget_released(self) -> None:
        waiting = self._waiting
        done = [lane for lane in waiting if not lane.pending]
        for lane in done:
            del waiting[lane]
        self._gate_us = self._gate()

    def _progress_mark(self) -> KeyGroupProgress | None:
        """This group's mark if it moved: signals through it are out."""
        final, wm = self._bars_final, self._quote_watermark()
        if final is None or not self._group:
            return None
        through = max(final if wm is None else min(final, wm), self._idle_through)
        gate = self._gate_us
        if gate is not None and gate <= through:
            through = gate - 1  # a bar still waits (its lane released up to an older quote)
        if self._marked is not None and through <= self._marked:
            return None
        self._marked = through
        return KeyGroupProgress(self._group, through, through)

    def _emit(self, out: _Emitted, mark: bool = True) -> list[SignalRows]:
        """This callback's signals, dead letters and progress mark as one item (or none)."""
        for lane, n in out.counts.items():
            self._progress.add_signals(lane, n)
        progress = self._progress_mark() if mark else None
        if not out.signals and not out.dead and progress is None:
            return []
        return [GroupRows(out.signals, out.dead, progress)]

    # --- lanes --------------------------------------------------------------------------------

    def _lane(self, symbol: str, size: str) -> SignalLane:
        per = self._lanes.get(symbol)
        if per is None:
            per = self._lanes[symbol] = {}
        lane = per.get(size)
        if lane is None:
            lane = per[size] = SignalLane(symbol, size, self._settings)
        return lane

    def _quote_lanes_of(self, symbol: str) -> list[SignalLane]:
        per = self._lanes.get(symbol)
        if per is not None and len(per) == len(self._quote_lanes):
            return list(per.values())
        return [self._lane(symbol, size) for size in self._quote_lanes]


def _keep_latest(held: dict[str, tuple[int, Any]], entries: dict[str, tuple[int, Any]]) -> None:
    """Merge a chunk's quotes of one bucket into the staged ones: per symbol the later quote,
    on equal times the one that arrived last (the quote book's rule, so staging changes
    nothing an engine would answer)."""
    for sym, entry in entries.items():
        kept = held.get(sym)
        if kept is None or entry[0] >= kept[0]:
            held[sym] = entry


def _end_us(env: Envelope[Any]) -> int:
    return epoch_micros(env.event_ts)
