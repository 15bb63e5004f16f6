"""1-second microbars from trades: pure, mergeable, deterministic under any batching.

Why this shape (issue #4, ``shared/bytewax-notes.md`` §1.6, §7):

* Bytewax's ``EventClock`` windows spin the CPU and judge lateness by wall-clock in replays, so
  bars are built on plain keyed state. This module is that state, with no I/O: the operator in
  ``operators/microbars.py`` only feeds it batches and a wall-clock reading.
* Per-event Python is the cost to design away, so each input batch is first reduced per
  (symbol, second) into :class:`BarPartial` s by :func:`preaggregate`; the keyed step then merges
  one :class:`SymbolBatch` per symbol and batch (:meth:`SymbolBars.apply`). A partial and a bar
  are the *set* of their trades: merging is a set union (which also drops duplicates), and
  open/high/low/close, volume and VWAP are computed once, when the bar is emitted.

Semantics (the reference is "one trade at a time, in arrival order, per symbol"):

* A bar covers ``[start, start + 1 s)``; ``event_ts`` = its end. open/close are the trades with
  the smallest/largest ``(ts, trade_id, exchange)`` (event time, not arrival); ``vwap`` =
  Σ price·size / Σ size. Empty seconds emit nothing.
* Watermark of a symbol = its largest event time seen − ``lateness_us``. A bar closes (is
  emitted final, ``version`` 1) once that watermark reaches its end, or once the *feed's* time
  does (:meth:`SymbolBars.close_until`, driven by the operator with the event time of the whole
  source partition, see ``operators/microbars.py``), or at the end of input
  (:meth:`SymbolBars.close_idle`).
* Before that, :meth:`SymbolBars.show_until` publishes a bar once, *provisionally*
  (``final=False``), as soon as the feed's time has passed its end: the fast row a dashboard
  shows. Trades that still arrive within the allowed lateness are merged and appear in the final
  row; a provisional row is never re-emitted.
* A trade for a closed bar whose end is within ``horizon_us`` of the watermark corrects it: the
  bar is re-emitted with the same key and ``version`` = 1 + number of late trades it holds.
  Judged against the symbol's own watermark the version does not depend on how trades were
  batched; a bar the feed's time closed counts the trades that came after that, which depends
  on which batch carried the feed's time past it (the contents of the latest version do not).
  Later than the horizon: dead-lettered.
* Duplicates (same ``(ts, trade_id, exchange)`` in one bar) are dropped and counted; invalid
  trades (non-finite or non-positive price or size, symbol outside an allowlist) are rejected
  by :func:`preaggregate` and returned for dead-lettering.

Batch independence: :func:`preaggregate` splits off trades that are already late relative to
the running maximum *earlier in the same batch* and carries that prefix maximum with them;
:meth:`SymbolBars.apply` judges each item against ``max(state maximum, prefix maximum)``. Every
trade of one partial is then on the same side of every decision, so the outputs equal the
one-at-a-time reference for any split of the input into batches (tested with hypothesis).

Times are integer microseconds since the Unix epoch (``ts_us``) on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple

from torghut.ta._bar_stats import bar_stats, closing_stats, pack_ticks, unpack_ticks
from torghut.ta.instants import US_PER_S

__all__ = [
    "US_PER_S",
    "Applied",
    "BarPartial",
    "ClosedBar",
    "ClosedBars",
    "DeadTrades",
    "LateTrade",
    "Rejected",
    "SymbolBars",
    "SymbolBarsState",
    "SymbolBatch",
    "TradeTick",
    "preaggregate",
]

_INF = math.inf
_BEYOND = "beyond_correction_horizon"


Tick = tuple[str, int, int, str, float, float]
"""``(symbol, ts_us, trade_id, exchange, price, size)``, the shape of :class:`TradeTick`."""


class TradeTick(NamedTuple):
    """One trade reduced to what a bar needs; the tuple is also its identity and its order.

    Two ticks are duplicates when every field is equal (a re-delivered message). Within one
    symbol, tuple order is event time, then trade id, exchange, price and size: a total,
    deterministic order for open and close. The hot path builds plain tuples of this shape.
    """

    symbol: str
    ts_us: int
    trade_id: int
    exchange: str
    price: float
    size: float


class Rejected(NamedTuple):
    """A trade refused before aggregation; ``reason`` is a bounded metric label."""

    reason: str
    tick: TradeTick


class BarPartial(NamedTuple):
    """The trades of one (symbol, second) seen in one batch, as a set.

    A set de-duplicates, and volume and Σ price·size are summed from it with ``math.fsum``
    when the bar is emitted. A correctly rounded sum does not depend on the order of its
    terms, so a replay that batches the same trades differently writes bit-identical bars (a
    running float sum would not).
    """

    sec: int
    ticks: set[Tick]


class LateTrade(NamedTuple):
    """A trade whose bar was already closed by an earlier trade of the same batch.

    ``prefix_max_us`` is the symbol's largest event time in the batch before this trade.
    """

    tick: Tick
    prefix_max_us: int


class SymbolBatch(NamedTuple):
    """Everything one input batch holds for one symbol, in the order it must be applied."""

    symbol: str
    partials: list[BarPartial]
    late: list[LateTrade]
    max_ts_us: int


class ClosedBar(NamedTuple):
    """A bar to publish. ``version`` > 1 marks a correction of an earlier emission."""

    symbol: str
    end_us: int
    o: float
    h: float
    l: float  # noqa: E741 - the domain's name
    c: float
    v: float
    vwap: float
    n: int
    version: int
    final: bool = True
    """False: a provisional row (the feed's time passed the bar end, not yet its lateness)."""


class DeadTrades(NamedTuple):
    """Trades of one (symbol, second) that arrived beyond the correction horizon.

    Trades pre-aggregated in one batch are dead-lettered as their aggregate (count, volume,
    first and last trade key); the raw messages remain in the input topic.
    """

    symbol: str
    end_us: int
    trades: int
    volume: float
    first: Tick
    last: Tick
    reason: str


def preaggregate(
    ticks: Iterable[Tick],
    lateness_us: int,
    allowlist: frozenset[str] | None = None,
) -> tuple[dict[str, SymbolBatch], list[Rejected], int]:
    """Reduce one batch of trades per (symbol, second); returns batches, rejects, duplicates.

    >>> b, bad, dup = preaggregate([TradeTick("A", 1_500_000, 1, "V", 10.0, 2.0),
    ...                             TradeTick("A", 1_700_000, 2, "V", 12.0, 1.0)], 2_000_000)
    >>> p = b["A"].partials[0]; (p.sec, len(p.ticks), bad, dup)
    (1, 2, [], 0)
    """
    parts: dict[str, dict[int, BarPartial]] = {}
    late: dict[str, list[LateTrade]] = {}
    maxes: dict[str, int] = {}
    rejected: list[Rejected] = []
    duplicates = 0
    for t in ticks:
        sym, ts, _tid, _ex, price, size = t
        if not (0.0 < price < _INF and 0.0 < size < _INF):
            reason = "invalid_size" if 0.0 < price < _INF else "invalid_price"
            rejected.append(Rejected(reason, TradeTick(*t)))
            continue
        if allowlist is not None and sym not in allowlist:
            rejected.append(Rejected("unknown_symbol", TradeTick(*t)))
            continue
        sec = ts // US_PER_S
        mx = maxes.get(sym)
        if mx is None:
            maxes[sym] = ts
        elif (sec + 1) * US_PER_S <= mx - lateness_us:
            late.setdefault(sym, []).append(LateTrade(t, mx))
            continue
        elif ts > mx:
            maxes[sym] = ts
        secs = parts.get(sym)
        if secs is None:
            secs = parts[sym] = {}
        p = secs.get(sec)
        if p is None:
            secs[sec] = BarPartial(sec, {t})
        elif t in p.ticks:
            duplicates += 1
        else:
            p.ticks.add(t)
    out = {
        sym: SymbolBatch(sym, list(parts.get(sym, {}).values()), late.get(sym, []), mx)
        for sym, mx in maxes.items()
    }
    return out, rejected, duplicates


_Stats = tuple[float, float, float, float, float, float, int]
"""``(open, high, low, close, volume, price × volume, trades)`` of a bar (``bar_stats``)."""


@dataclass(slots=True)
class _Bar:
    """Keyed-state bar: its trades (de-duplication, every aggregate), how many came late, and
    whether it was published provisionally."""

    ticks: set[Tick]
    late: int = 0
    shown: bool = False
    stats: _Stats | None = None
    """``bar_stats`` of ``ticks`` as published provisionally; None once a trade was added."""

    def copy(self) -> _Bar:
        return _Bar(set(self.ticks), self.late, self.shown, self.stats)

    def state(self) -> _OpenState:
        """An independent copy as a plain tuple, for snapshots: a ``slots`` dataclass pickles
        through Python-level calls, a tuple of built-ins does not."""
        return (set(self.ticks), self.late, self.shown, self.stats)


_OpenState = tuple[set[Tick], int, bool, _Stats | None]
"""An open bar in a snapshot: :class:`_Bar`'s fields (:meth:`_Bar.state`)."""


_Packed = tuple[bytes, str | tuple[str, ...], int]
"""A closed bar as kept for corrections: ``(records, exchanges, late)``, its trades packed
(:func:`pack_ticks`) and how many of them came late. A correction unpacks it into a
:class:`_Bar` again.

A plain tuple, which :meth:`ClosedBars.of` flattens with the others at C speed at every
snapshot."""


class _PackedBar(NamedTuple):
    """How a closed bar was kept before it was a plain :data:`_Packed`: recovery snapshots
    taken then hold it under this name, and :meth:`SymbolBars.restore` converts it."""

    records: bytes
    exchanges: tuple[str, ...]
    late: int


def _packed(bar: _Bar) -> _Bar | _Packed:
    """``bar`` as a closed bar is kept: packed, or as it is if a value exceeds 64 bits."""
    try:
        records, exchanges = pack_ticks(bar.ticks)
    except OverflowError:
        return bar
    return (records, exchanges, bar.late)


@dataclass(slots=True)
class Applied:
    """Outputs of :meth:`SymbolBars.apply` and the closing calls.

    ``opened`` lists ``(bar end, symbol)`` of every bar a call opened: the operator indexes
    them by end, so the feed's time finds the bars it passes without scanning every symbol.
    """

    bars: list[ClosedBar] = field(default_factory=list)
    dead: list[DeadTrades] = field(default_factory=list)
    duplicates: int = 0
    corrections: int = 0
    opened: list[tuple[int, str]] = field(default_factory=list)


class SymbolBars:
    """Open and recently closed bars of one symbol (the keyed state of the microbar step).

    Closed bars are kept until the watermark is ``horizon_us`` past their end, so late trades
    can correct them — packed, 40 bytes a trade instead of a set of tuples, since all but a
    few are never looked at again (every trade of the horizon is held, so this is most of the
    flow's memory); ``snapshot()`` copies only what can still change.
    """

    __slots__ = ("_closed", "_horizon", "_lateness", "_max_ts", "_open", "symbol")

    def __init__(self, symbol: str, lateness_us: int, horizon_us: int) -> None:
        self.symbol = symbol
        self._lateness = lateness_us
        self._horizon = horizon_us
        self._open: dict[int, _Bar] = {}
        self._closed: dict[int, _Bar | _Packed] = {}
        """Closed bars still correctable, packed; never mutated in place (a correction replaces
        the entry)."""
        self._max_ts: int | None = None

    @property
    def open_ends_us(self) -> list[int]:
        """Ends of the bars still open (not final), e.g. to index them again after a restore."""
        return [(sec + 1) * US_PER_S for sec in self._open]

    def apply(self, batch: SymbolBatch, out: Applied) -> int:
        """Merge one batch's partials, close bars the watermark passed, then apply late trades.

        Returns the watermark. This runs once per symbol and input batch, so the common case
        (partials of open seconds, nothing late, nothing to prune) is kept to a few lookups.
        """
        state_max = self._max_ts
        lateness = self._lateness
        closed_before = -_INF if state_max is None else state_max - lateness
        open_bars, closed = self._open, self._closed
        for p in batch.partials:
            sec = p.sec
            end = (sec + 1) * US_PER_S
            if end <= closed_before or sec in closed:
                self._correct_partial(p, end, closed_before, out)
                continue
            bar = open_bars.get(sec)
            if bar is None:
                open_bars[sec] = _Bar(p.ticks)
                out.opened.append((end, self.symbol))
            else:
                self._merge(bar, p, out)
        top = batch.max_ts_us
        if state_max is not None and state_max > top:
            top = state_max
        self._max_ts = top
        watermark = top - lateness
        if open_bars and (min(open_bars) + 1) * US_PER_S <= watermark:
            self._close_until(watermark, out)
        for t in batch.late:
            prefix = t.prefix_max_us if state_max is None else max(state_max, t.prefix_max_us)
            self._correct_one(t, prefix - lateness, out)
        if closed and (next(iter(closed)) + 1) * US_PER_S <= watermark - self._horizon:
            self._prune()
        return watermark

    def close_idle(self, out: Applied) -> None:
        """Close every open bar now (end of input)."""
        self._close_until(_INF, out)

    def close_until(self, watermark_us: float, out: Applied) -> None:
        """Close (emit final) every open bar ending at or before ``watermark_us``."""
        self._close_until(watermark_us, out)

    def show_until(self, feed_us: int, out: Applied) -> None:
        """Publish provisionally, once, every open bar ending at or before ``feed_us``."""
        for sec, bar in self._open.items():
            if not bar.shown and (sec + 1) * US_PER_S <= feed_us:
                bar.shown = True
                out.bars.append(self._emit(sec, bar, final=False))

    # --- internals -------------------------------------------------------------------------

    @staticmethod
    def _merge(bar: _Bar, p: BarPartial, out: Applied) -> int:
        """Fold ``p`` into ``bar``; returns how many of its trades were new (not duplicates)."""
        bar.stats = None
        ticks = bar.ticks
        if ticks.isdisjoint(p.ticks):
            ticks.update(p.ticks)
            return len(p.ticks)
        new = p.ticks - ticks
        out.duplicates += len(p.ticks) - len(new)
        ticks.update(new)
        return len(new)

    def _correct_partial(self, p: BarPartial, end: int, wm: float, out: Applied) -> None:
        if end <= wm - self._horizon:
            keys = sorted(p.ticks)
            volume = math.fsum([t[5] for t in keys])
            out.dead.append(
                DeadTrades(self.symbol, end, len(keys), volume, keys[0], keys[-1], _BEYOND)
            )
            return
        held = self._closed.get(p.sec)
        if held is None:
            added = len(p.ticks)
            bar = _Bar(p.ticks, added)
        else:
            bar = self._reopen(held)
            added = self._merge(bar, p, out)
            bar.late += added
        if added:
            out.corrections += 1
            out.bars.append(self._emit(p.sec, bar))
        self._closed[p.sec] = _packed(bar)

    def _correct_one(self, t: LateTrade, wm: float, out: Applied) -> None:
        k = t.tick
        sec = k[1] // US_PER_S
        self._correct_partial(BarPartial(sec, {k}), (sec + 1) * US_PER_S, wm, out)

    def _close_until(self, wm: float, out: Applied) -> None:
        if not self._open:
            return
        due = sorted(s for s in self._open if (s + 1) * US_PER_S <= wm)
        for sec in due:
            out.bars.append(self._close(sec, self._open.pop(sec)))

    def _reopen(self, held: _Bar | _Packed) -> _Bar:
        """A modifiable copy of a closed bar."""
        if isinstance(held, _Bar):
            return held.copy()
        records, exchanges, late = held
        return _Bar(unpack_ticks(self.symbol, records, exchanges), late)

    def _prune(self) -> None:
        """Forget closed bars the watermark is a horizon past.

        Closed bars are mostly inserted in time order, so the scan stops at the first one that
        is still correctable; one inserted out of order (a late trade for a second that had no
        bar) is forgotten once the bars before it are. Keeping a bar longer changes nothing: a
        trade beyond the horizon is dead-lettered before the closed bars are looked at.
        """
        closed = self._closed
        if self._max_ts is None or not closed:
            return
        limit = self._max_ts - self._lateness - self._horizon
        stale = []
        for sec in closed:
            if (sec + 1) * US_PER_S > limit:
                break
            stale.append(sec)
        for sec in stale:
            del closed[sec]

    def _close(self, sec: int, bar: _Bar) -> ClosedBar:
        """The final row of an open bar; the bar is kept packed among the closed ones."""
        if bar.stats is not None:  # published provisionally, unchanged since: no pass needed
            self._closed[sec] = _packed(bar)
            return self._emit(sec, bar)
        try:
            stats, records, exchanges = closing_stats(bar.ticks)
        except OverflowError:
            self._closed[sec] = bar
            return self._emit(sec, bar)
        self._closed[sec] = (records, exchanges, bar.late)
        return self._row(sec, stats, bar.late, True)

    def _emit(self, sec: int, bar: _Bar, final: bool = True) -> ClosedBar:
        """The bar as a row; the final row of a bar unchanged since its provisional one reuses
        that one's aggregates (a second pass over the trades costs as much as the first)."""
        stats = bar.stats
        if stats is None:
            stats = bar_stats(bar.ticks)
            if not final:
                bar.stats = stats
        return self._row(sec, stats, bar.late, final)

    def _row(
        self,
        sec: int,
        stats: _Stats,
        late: int,
        final: bool,
    ) -> ClosedBar:
        o, h, lo, c, v, pv, n = stats
        end = (sec + 1) * US_PER_S
        return ClosedBar(self.symbol, end, o, h, lo, c, v, pv / v, n, 1 + late, final)

    # --- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> SymbolBarsState:
        """An independent copy for Bytewax, made of built-in values only: Bytewax pickles it
        at every epoch end while the worker stops (open bars as tuples, the closed ones
        flattened: :class:`ClosedBars`)."""
        return SymbolBarsState(
            self.symbol,
            self._max_ts,
            {s: b.state() for s, b in self._open.items()},
            ClosedBars.of(self._closed),
        )

    @classmethod
    def restore(cls, state: SymbolBarsState, lateness_us: int, horizon_us: int) -> SymbolBars:
        bars = cls(state.symbol, lateness_us, horizon_us)
        bars._max_ts = state.max_ts_us
        bars._open = {
            s: b.copy() if isinstance(b, _Bar) else _Bar(*b) for s, b in state.open.items()
        }
        closed = state.closed
        if isinstance(closed, ClosedBars):
            bars._closed = closed.bars()
        else:
            bars._closed = {s: _plain(b) for s, b in closed.items()}
        return bars


class ClosedBars(NamedTuple):
    """A symbol's closed bars in a snapshot: a few flat values instead of a tuple per bar.

    Why: Bytewax pickles every changed key group's snapshot at every epoch end while the worker
    stops, and the closed bars are most of it (the correction horizon, 60 s of bars, every
    trade packed): 30 k bars with 500 symbols, ~45 ms to pickle as a tuple per bar on the
    shared 2-vCPU machine, 15 flattened (``bench/snapshots.py``).
    """

    secs: tuple[int, ...]
    """The packed bars' seconds, in the order they are held."""
    lates: tuple[int, ...]
    counts: tuple[int, ...]
    """Trades per packed bar: its records are the next ``count`` of :attr:`records`."""
    records: bytes
    """Every packed bar's records (:func:`pack_ticks`), bar after bar."""
    exchanges: str | tuple[str, ...]
    """Every trade's exchange, bar after bar: one ``str`` of a character per trade when every
    bar's codes are one character each (Alpaca's are: :func:`pack_ticks`), else a tuple."""
    loose: dict[int, _Bar]
    """Bars that could not be packed (a value beyond 64 bits)."""

    @classmethod
    def of(cls, closed: dict[int, _Bar | _Packed]) -> ClosedBars:
        """The flat form of ``closed`` (C-level passes over the bars, no Python loop)."""
        if not closed:
            return cls((), (), (), b"", "", {})
        loose: dict[int, _Bar] = {}
        try:
            records, exchanges, lates = zip(*closed.values(), strict=True)
            secs = tuple(closed)
        except TypeError:  # a _Bar is not iterable: a bar too big to pack (rare), set aside
            loose = {s: b.copy() for s, b in closed.items() if isinstance(b, _Bar)}
            packed = {s: b for s, b in closed.items() if not isinstance(b, _Bar)}
            if not packed:
                return cls((), (), (), b"", "", loose)
            records, exchanges, lates = zip(*packed.values(), strict=True)
            secs = tuple(packed)
        codes: str | tuple[str, ...]
        try:  # every bar's codes a str of a character each (pack_ticks): the common case
            codes = "".join(exchanges)
        except TypeError:  # a bar with a longer code holds a tuple
            codes = tuple(chain.from_iterable(exchanges))
        return cls(secs, lates, tuple(map(len, exchanges)), b"".join(records), codes, loose)

    def bars(self) -> dict[int, _Bar | _Packed]:
        """The closed bars as :class:`SymbolBars` holds them, by second."""
        out: dict[int, _Bar | _Packed] = {s: b.copy() for s, b in self.loose.items()}
        records, exchanges = self.records, self.exchanges
        width = len(records) // len(exchanges) if exchanges else 0  # bytes per trade
        at = 0
        for sec, late, n in zip(self.secs, self.lates, self.counts, strict=True):
            out[sec] = (records[at * width : (at + n) * width], exchanges[at : at + n], late)
            at += n
        if at != len(exchanges) or at * width != len(records):
            raise ValueError("a snapshot's closed bars disagree with their trades")
        return dict(sorted(out.items()))


def _plain(held: _Bar | _Packed) -> _Bar | _Packed:
    """A closed bar of a snapshot taken before :class:`ClosedBars` as it is kept: a
    :class:`_PackedBar` as the plain tuple it unpacks to."""
    if isinstance(held, _Bar):
        return held.copy()
    records, exchanges, late = held
    return (records, exchanges, late)


class SymbolBarsState(NamedTuple):
    """Picklable snapshot of :class:`SymbolBars`."""

    symbol: str
    max_ts_us: int | None
    open: dict[int, _OpenState | _Bar]
    """Open bars by second (:class:`_Bar` itself in snapshots taken before the tuples)."""
    closed: ClosedBars | dict[int, _Bar | _Packed]
    """Closed bars (by second in snapshots taken before :class:`ClosedBars`)."""
