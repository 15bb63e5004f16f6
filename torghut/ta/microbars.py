"""1-second microbars from trades: pure, mergeable, deterministic under any batching.

Why this shape (issue #4, ``shared/bytewax-notes.md`` §1.6, §7):

* Bytewax's ``EventClock`` windows spin the CPU and judge lateness by wall-clock in replays, so
  bars are built on plain keyed state. This module is that state, with no I/O: the operator in
  ``operators/microbars.py`` only feeds it batches and a wall-clock reading.
* Per-event Python is the cost to design away, so each input batch is first reduced per
  (symbol, second) into :class:`BarPartial` s by :func:`preaggregate`; the keyed step then merges
  one :class:`SymbolBatch` per symbol and batch (:meth:`SymbolBars.apply`).

Semantics (the reference is "one trade at a time, in arrival order, per symbol"):

* A bar covers ``[start, start + 1 s)``; ``event_ts`` = its end. open/close are the trades with
  the smallest/largest ``(ts, trade_id, exchange)`` (event time, not arrival); ``vwap`` =
  Σ price·size / Σ size. Empty seconds emit nothing.
* Watermark of a symbol = its largest event time seen − ``lateness_us``. A bar closes (is
  emitted, ``version`` 1) once the watermark reaches its end, or when the symbol is idle
  (:meth:`SymbolBars.close_idle`, driven by wall-clock in the operator).
* A trade for a closed bar whose end is within ``horizon_us`` of the watermark corrects it: the
  bar is re-emitted with the same key and ``version`` = 1 + number of late trades it holds, so
  the version does not depend on how trades were batched. Later than that: dead-lettered.
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
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter, le
from typing import NamedTuple

__all__ = [
    "US_PER_S",
    "Applied",
    "BarPartial",
    "ClosedBar",
    "DeadTrades",
    "LateTrade",
    "Rejected",
    "SymbolBars",
    "SymbolBarsState",
    "SymbolBatch",
    "TradeTick",
    "preaggregate",
    "preaggregate_ordered",
]

US_PER_S = 1_000_000
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


@dataclass(slots=True)
class BarPartial:
    """Mergeable aggregate of the trades of one (symbol, second) seen in one batch.

    ``ticks`` is the set of its trades: it de-duplicates, and volume and Σ price·size are
    summed from it with ``math.fsum`` when the bar is emitted. A correctly
    rounded sum does not depend on the order of its terms, so a replay that batches the same
    trades differently writes bit-identical bars (a running float sum would not).
    """

    sec: int
    o_key: Tick
    o: float
    h: float
    l: float  # noqa: E741 - the domain's name
    c_key: Tick
    c: float
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
    >>> p = b["A"].partials[0]; (p.sec, p.o, p.h, p.l, p.c, p.v, p.n, bad, dup)
    (1, 10.0, 12.0, 10.0, 12.0, 3.0, 2, [], 0)
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
            secs[sec] = BarPartial(sec, t, price, price, price, t, price, {t})
            continue
        pt = p.ticks
        if t in pt:
            duplicates += 1
            continue
        pt.add(t)
        if t < p.o_key:
            p.o_key, p.o = t, price
        elif t > p.c_key:
            p.c_key, p.c = t, price
        if price > p.h:
            p.h = price
        elif price < p.l:
            p.l = price
    out = {
        sym: SymbolBatch(sym, list(parts.get(sym, {}).values()), late.get(sym, []), mx)
        for sym, mx in maxes.items()
    }
    return out, rejected, duplicates


_SYMBOL = itemgetter(0)
_TS = itemgetter(1)
_PRICE = itemgetter(4)
_SIZE = itemgetter(5)


def preaggregate_ordered(
    ticks: list[Tick], lateness_us: int, allowlist: frozenset[str] | None = None
) -> tuple[dict[str, SymbolBatch], int] | None:
    """:func:`preaggregate` of a batch in event-time order: batches and duplicates, or None.

    Why: in the common batch (one feed, written in time order, nothing invalid) no trade can
    be late relative to the batch, and every (symbol, second) group is a run of one second
    sorted by tick order, so open and close are its first and last tick and the rest is done
    by C-level ``sorted``/``set``/``min``/``max`` instead of Python per trade. Returns None
    (the caller uses :func:`preaggregate`) when the batch is not in order, holds an invalid
    trade or a symbol outside the allowlist, or lateness is negative. The result is equal to
    :func:`preaggregate`'s, order of symbols and partials included.
    """
    if not ticks or lateness_us < 0:
        return None
    stamps = list(map(_TS, ticks))
    if not all(map(le, stamps, stamps[1:])):
        return None
    for values in (list(map(_PRICE, ticks)), list(map(_SIZE, ticks))):
        if not (math.isfinite(sum(values)) and min(values) > 0.0):  # a NaN or inf spoils the sum
            return None
    symbols = dict.fromkeys(map(_SYMBOL, ticks))
    if allowlist is not None and not allowlist.issuperset(symbols):
        return None
    parts: dict[str, list[BarPartial]] = {}
    duplicates = 0
    n, i = len(ticks), 0
    while i < n:
        sec = stamps[i] // US_PER_S
        j = bisect_left(stamps, (sec + 1) * US_PER_S, i)
        run = sorted(ticks[i:j])
        k, m = 0, j - i
        while k < m:
            sym = run[k][0]
            e = bisect_left(run, (sym + "\x00",), k)
            group = run[k:e]
            unique = set(group)
            duplicates += len(group) - len(unique)
            first, last = group[0], group[-1]
            prices = list(map(_PRICE, group))
            p = BarPartial(sec, first, first[4], max(prices), min(prices), last, last[4], unique)
            held = parts.get(sym)
            if held is None:
                parts[sym] = [p]
            else:
                held.append(p)
            k = e
        i = j
    out: dict[str, SymbolBatch] = {}
    for sym in symbols:
        ps = parts[sym]
        out[sym] = SymbolBatch(sym, ps, [], ps[-1].c_key[1])
    return out, duplicates


@dataclass(slots=True)
class _Bar:
    """Keyed-state bar: open/high/low/close, its trades (de-duplication, sums), late count."""

    o_key: Tick
    o: float
    h: float
    l: float  # noqa: E741 - the domain's name
    c_key: Tick
    c: float
    ticks: set[Tick]
    late: int = 0

    def copy(self) -> _Bar:
        return _Bar(
            self.o_key, self.o, self.h, self.l, self.c_key, self.c, set(self.ticks), self.late
        )


@dataclass(slots=True)
class Applied:
    """Outputs of one :meth:`SymbolBars.apply` / :meth:`SymbolBars.close_idle` call."""

    bars: list[ClosedBar] = field(default_factory=list)
    dead: list[DeadTrades] = field(default_factory=list)
    duplicates: int = 0
    corrections: int = 0


class SymbolBars:
    """Open and recently closed bars of one symbol (the keyed state of the microbar step).

    Closed bars are kept until the watermark is ``horizon_us`` past their end, so late trades
    can correct them; ``snapshot()`` copies only what can still change.
    """

    __slots__ = ("_closed", "_horizon", "_lateness", "_max_ts", "_open", "symbol")

    def __init__(self, symbol: str, lateness_us: int, horizon_us: int) -> None:
        self.symbol = symbol
        self._lateness = lateness_us
        self._horizon = horizon_us
        self._open: dict[int, _Bar] = {}
        self._closed: dict[int, _Bar] = {}
        self._max_ts: int | None = None

    @property
    def watermark_us(self) -> int | None:
        return None if self._max_ts is None else self._max_ts - self._lateness

    @property
    def has_open(self) -> bool:
        return bool(self._open)

    @property
    def oldest_open_end_us(self) -> int | None:
        return (min(self._open) + 1) * US_PER_S if self._open else None

    def is_empty(self) -> bool:
        """No open bar and no bar left to correct: the key's state can be discarded."""
        return not self._open and not self._closed

    def apply(self, batch: SymbolBatch, out: Applied) -> None:
        """Merge one batch's partials, close bars the watermark passed, then apply late trades."""
        state_max = self._max_ts
        closed_before = -_INF if state_max is None else state_max - self._lateness
        for p in batch.partials:
            end = (p.sec + 1) * US_PER_S
            if end <= closed_before or p.sec in self._closed:
                self._correct_partial(p, end, closed_before, out)
            else:
                self._merge_open(p, out)
        if state_max is None or batch.max_ts_us > state_max:
            self._max_ts = batch.max_ts_us
        self._close_until(self._max_ts - self._lateness, out)  # type: ignore[operator]
        for t in batch.late:
            prefix = t.prefix_max_us if state_max is None else max(state_max, t.prefix_max_us)
            self._correct_one(t, prefix - self._lateness, out)
        self._prune()

    def close_idle(self, out: Applied) -> None:
        """Close every open bar now (the symbol went quiet on wall-clock time)."""
        self._close_until(_INF, out)

    # --- internals -------------------------------------------------------------------------

    def _merge_open(self, p: BarPartial, out: Applied) -> None:
        bar = self._open.get(p.sec)
        if bar is None:
            self._open[p.sec] = _Bar(p.o_key, p.o, p.h, p.l, p.c_key, p.c, p.ticks)
            return
        self._merge(bar, p, out)

    def _merge(self, bar: _Bar, p: BarPartial, out: Applied) -> int:
        """Fold ``p`` into ``bar``; returns how many of its trades were new (not duplicates)."""
        ticks = bar.ticks
        if ticks.isdisjoint(p.ticks):
            ticks.update(p.ticks)
            added = len(p.ticks)
        else:
            new = p.ticks - ticks
            out.duplicates += len(p.ticks) - len(new)
            added = len(new)
            if added == 0:
                return 0
            ticks.update(new)
        if p.o_key < bar.o_key:
            bar.o_key, bar.o = p.o_key, p.o
        if p.c_key > bar.c_key:
            bar.c_key, bar.c = p.c_key, p.c
        bar.h = max(bar.h, p.h)
        bar.l = min(bar.l, p.l)
        return added

    def _correct_partial(self, p: BarPartial, end: int, wm: float, out: Applied) -> None:
        if end <= wm - self._horizon:
            keys = sorted(p.ticks)
            volume = math.fsum([t[5] for t in keys])
            out.dead.append(
                DeadTrades(self.symbol, end, len(keys), volume, keys[0], keys[-1], _BEYOND)
            )
            return
        bar = self._closed.get(p.sec)
        if bar is None:
            n = len(p.ticks)
            bar = self._closed[p.sec] = _Bar(p.o_key, p.o, p.h, p.l, p.c_key, p.c, p.ticks, n)
            added = n
        else:
            bar = self._closed[p.sec] = bar.copy()
            added = self._merge(bar, p, out)
            bar.late += added
        if added:
            out.corrections += 1
            out.bars.append(self._emit(p.sec, bar))

    def _correct_one(self, t: LateTrade, wm: float, out: Applied) -> None:
        k = t.tick
        price = k[4]
        sec = k[1] // US_PER_S
        p = BarPartial(sec, k, price, price, price, k, price, {k})
        self._correct_partial(p, (sec + 1) * US_PER_S, wm, out)

    def _close_until(self, wm: float, out: Applied) -> None:
        if not self._open:
            return
        due = sorted(s for s in self._open if (s + 1) * US_PER_S <= wm)
        for sec in due:
            bar = self._open.pop(sec)
            self._closed[sec] = bar
            out.bars.append(self._emit(sec, bar))

    def _prune(self) -> None:
        if self._max_ts is None or not self._closed:
            return
        limit = self._max_ts - self._lateness - self._horizon
        stale = [s for s in self._closed if (s + 1) * US_PER_S <= limit]
        for sec in stale:
            del self._closed[sec]

    def _emit(self, sec: int, bar: _Bar) -> ClosedBar:
        ticks = bar.ticks
        v = math.fsum([t[5] for t in ticks])
        pv = math.fsum([t[4] * t[5] for t in ticks])
        return ClosedBar(
            self.symbol,
            (sec + 1) * US_PER_S,
            bar.o,
            bar.h,
            bar.l,
            bar.c,
            v,
            pv / v,
            len(ticks),
            1 + bar.late,
        )

    # --- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> SymbolBarsState:
        """An independent copy for Bytewax: open bars are copied, closed ones are immutable.

        Closed bars are never mutated in place (a correction replaces the entry with a
        modified copy), so sharing them with the snapshot is safe and keeps it cheap.
        """
        return SymbolBarsState(
            self.symbol,
            self._max_ts,
            {s: b.copy() for s, b in self._open.items()},
            dict(self._closed),
        )

    @classmethod
    def restore(cls, state: SymbolBarsState, lateness_us: int, horizon_us: int) -> SymbolBars:
        bars = cls(state.symbol, lateness_us, horizon_us)
        bars._max_ts = state.max_ts_us
        bars._open = {s: b.copy() for s, b in state.open.items()}
        bars._closed = dict(state.closed)
        return bars


class SymbolBarsState(NamedTuple):
    """Picklable snapshot of :class:`SymbolBars`."""

    symbol: str
    max_ts_us: int | None
    open: dict[int, _Bar]
    closed: dict[int, _Bar]
