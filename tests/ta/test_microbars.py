"""Microbar aggregation: equal to a polars group-by, independent of batching, nothing lost."""

from __future__ import annotations

import math
import pickle
import pickletools
from typing import Any

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from torghut.ta.microbars import (
    US_PER_S,
    Applied,
    ClosedBar,
    ClosedBars,
    SymbolBars,
    SymbolBarsState,
    TradeTick,
    _Bar,
    _PackedBar,
    preaggregate,
)

LATENESS = 2 * US_PER_S
HORIZON = 5 * US_PER_S
SYMBOLS = ("AAA", "BBB", "CCC")


def run_batches(
    batches: list[list[TradeTick]],
    allow: frozenset[str] | None = None,
    restart_at: int | None = None,
) -> tuple[Applied, int, list[str]]:
    """Feed batches through preaggregate + SymbolBars like the operator does, then idle-close;
    before batch ``restart_at`` every symbol restarts from its snapshot, pickled as Bytewax
    stores it."""
    states: dict[str, SymbolBars] = {}
    out = Applied()
    dups = 0
    rejected: list[str] = []
    for i, batch in enumerate(batches):
        if i == restart_at:
            states = {
                sym: SymbolBars.restore(pickle.loads(pickle.dumps(b.snapshot())), LATENESS, HORIZON)
                for sym, b in states.items()
            }
        per_symbol, bad, d = preaggregate(batch, LATENESS, allow)
        dups += d
        rejected += [r.reason for r in bad]
        for sym, sb in per_symbol.items():
            if sym not in states:
                states[sym] = SymbolBars(sym, LATENESS, HORIZON)
            states[sym].apply(sb, out)
    for s in states.values():
        s.close_idle(out)
    return out, dups + out.duplicates, rejected


def final_rows(bars: list[ClosedBar]) -> dict[tuple[str, int], ClosedBar]:
    """What ClickHouse FINAL keeps: the last emission per (symbol, end)."""
    rows: dict[tuple[str, int], ClosedBar] = {}
    for b in bars:
        prev = rows.get((b.symbol, b.end_us))
        assert prev is None or b.version > prev.version
        rows[(b.symbol, b.end_us)] = b
    return rows


def split(items: list[TradeTick], cuts: list[int]) -> list[list[TradeTick]]:
    points = sorted({c % (len(items) + 1) for c in cuts})
    out, start = [], 0
    for p in [*points, len(items)]:
        out.append(items[start:p])
        start = p
    return [b for b in out if b]


trade = st.builds(
    TradeTick,
    symbol=st.sampled_from(SYMBOLS),
    ts_us=st.integers(0, 8 * US_PER_S),
    trade_id=st.integers(0, 50),
    exchange=st.sampled_from(("V", "Q")),
    price=st.floats(1.0, 500.0, allow_nan=False),
    size=st.floats(0.5, 1000.0, allow_nan=False),
)


def tick_key(x: TradeTick) -> tuple[str, int, int, str]:
    return (x.symbol, x.ts_us, x.trade_id, x.exchange)


unique_trades = st.lists(trade, min_size=1, max_size=40, unique_by=tick_key)


def polars_bars(trades: list[TradeTick]) -> dict[tuple[str, int], tuple[Any, ...]]:
    df = pl.DataFrame(
        [t._asdict() for t in trades],
        schema={
            "symbol": pl.String,
            "ts_us": pl.Int64,
            "trade_id": pl.Int64,
            "exchange": pl.String,
            "price": pl.Float64,
            "size": pl.Float64,
        },
    ).unique(subset=["symbol", "ts_us", "trade_id", "exchange"], keep="first", maintain_order=True)
    g = (
        df.sort(["symbol", "ts_us", "trade_id", "exchange"])
        .with_columns(end_us=(pl.col("ts_us") // US_PER_S + 1) * US_PER_S)
        .group_by(["symbol", "end_us"], maintain_order=True)
        .agg(
            o=pl.col("price").first(),
            h=pl.col("price").max(),
            l=pl.col("price").min(),
            c=pl.col("price").last(),
            v=pl.col("size").sum(),
            pv=(pl.col("price") * pl.col("size")).sum(),
            n=pl.len(),
        )
    )
    return {
        (r["symbol"], r["end_us"]): (
            r["o"],
            r["h"],
            r["l"],
            r["c"],
            r["v"],
            r["pv"] / r["v"],
            r["n"],
        )
        for r in g.iter_rows(named=True)
    }


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    trades=unique_trades,
    jitter=st.lists(st.integers(0, LATENESS - 1), min_size=40, max_size=40),
    dup_idx=st.lists(st.integers(0, 39), max_size=5),
    cuts=st.lists(st.integers(0, 100), max_size=6),
)
def test_equal_to_polars_group_by_for_any_arrival_order_within_lateness(
    trades: list[TradeTick], jitter: list[int], dup_idx: list[int], cuts: list[int]
) -> None:
    # Arrival order = event time + a delay below the lateness: never late, any interleaving.
    order = sorted(range(len(trades)), key=lambda i: (trades[i].ts_us + jitter[i], i))
    arrival = [trades[i] for i in order]
    for i in dup_idx:  # re-deliver some trades later (within lateness: same tick again)
        if i < len(arrival):
            arrival.insert(min(len(arrival), i + 1), arrival[i])
    out, dups, rejected = run_batches(split(arrival, cuts))
    expected = polars_bars(trades)
    got = final_rows(out.bars)
    assert not out.dead
    assert not rejected
    assert out.corrections == 0
    assert set(got) == set(expected)
    for key, (o, hi, lo, c, v, vwap, n) in expected.items():
        b = got[key]
        assert (b.o, b.h, b.l, b.c, b.n, b.version) == (o, hi, lo, c, n, 1)
        assert close(b.v, v)
        assert close(b.vwap, vwap)
    assert sum(b.n for b in got.values()) == len(trades)
    assert dups == len(arrival) - len(trades)


def one_at_a_time(arrival: list[TradeTick]) -> tuple[Applied, int, list[str]]:
    return run_batches([[t] for t in arrival])


@settings(max_examples=60, deadline=None)
@given(
    trades=unique_trades,
    redeliver=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 80)), max_size=6),
    cuts=st.lists(st.integers(0, 100), max_size=8),
)
def test_any_batching_gives_the_one_at_a_time_result_including_late_trades(
    trades: list[TradeTick], redeliver: list[tuple[int, int]], cuts: list[int]
) -> None:
    arrival = list(trades)  # any order: late and beyond-horizon trades included
    for src, dst in redeliver:
        if src < len(trades):
            arrival.insert(dst % (len(arrival) + 1), trades[src])
    ref, ref_dups, _ = one_at_a_time(arrival)
    got, dups, _ = run_batches(split(arrival, cuts))
    assert final_rows(got.bars) == final_rows(ref.bars)

    def dead(a: Applied) -> dict[tuple[str, int], tuple[int, float]]:
        d: dict[tuple[str, int], tuple[int, float]] = {}
        for x in a.dead:
            n, v = d.get((x.symbol, x.end_us), (0, 0.0))
            d[(x.symbol, x.end_us)] = (n + x.trades, v + x.volume)
        return d

    dg, dr = dead(got), dead(ref)
    assert dg.keys() == dr.keys()
    # A trade delivered twice in one batch is one duplicate before its bar is looked at; one at
    # a time, a copy that is beyond the horizon is dead-lettered again. Both account for it.
    assert dups + sum(n for n, _ in dg.values()) == ref_dups + sum(n for n, _ in dr.values())
    if dups == ref_dups:
        for k in dr:
            assert dg[k][0] == dr[k][0]
            assert close(dg[k][1], dr[k][1])
    # Conservation: every trade is in a final bar, a duplicate, or a dead letter.
    unique = len(trades)
    in_bars = sum(b.n for b in final_rows(got.bars).values())
    in_dead = sum(n for n, _ in dg.values())
    assert in_bars <= unique <= in_bars + in_dead  # a re-delivered dead trade is dead twice
    assert in_bars + in_dead + dups == len(arrival)


def t(sym: str, sec: float, tid: int, price: float = 10.0, size: float = 1.0) -> TradeTick:
    return TradeTick(sym, int(sec * US_PER_S), tid, "V", price, size)


def test_late_trade_corrects_the_closed_bar_with_a_higher_version() -> None:
    batches = [[t("A", 0.5, 1, 10.0)], [t("A", 3.2, 2, 11.0)], [t("A", 0.9, 3, 12.0, 3.0)]]
    out, _, _ = run_batches(batches)
    first, correction = (b for b in out.bars if b.end_us == US_PER_S)
    assert (first.version, first.c, first.n) == (1, 10.0, 1)
    assert (correction.version, correction.c, correction.h, correction.n) == (2, 12.0, 12.0, 2)
    assert correction.vwap == (10.0 + 36.0) / 4.0
    assert out.corrections == 1


def test_trade_beyond_the_horizon_is_dead_lettered_and_duplicates_counted() -> None:
    batches = [
        [t("A", 0.5, 1), t("A", 0.5, 1)],  # duplicate in one batch
        [t("A", 9.0, 2)],  # watermark 7 s: bar [0, 1) is 6 s past, beyond the 5 s horizon
        [t("A", 0.7, 3), t("A", 9.0, 2)],  # dead letter; duplicate of a trade in an open bar
    ]
    out, dups, _ = run_batches(batches)
    assert dups == 2
    assert [(d.end_us, d.trades, d.reason) for d in out.dead] == [
        (US_PER_S, 1, "beyond_correction_horizon")
    ]
    assert sorted((b.end_us, b.n) for b in out.bars) == [
        (US_PER_S, 1),
        (10 * US_PER_S, 1),
    ]


def test_invalid_and_unknown_symbol_trades_are_rejected_with_a_reason() -> None:
    bad = [
        t("A", 0.1, 1, math.nan),
        t("A", 0.2, 2, math.inf),
        t("A", 0.3, 3, -1.0),
        t("A", 0.4, 4, 0.0),
        t("A", 0.5, 5, 10.0, 0.0),
        t("A", 0.6, 6, 10.0, -5.0),
        t("A", 0.6, 7, 10.0, math.nan),
        t("ZZZ", 0.7, 8),
    ]
    out, _, rejected = run_batches([[*bad, t("A", 0.8, 9)]], allow=frozenset({"A"}))
    assert rejected == ["invalid_price"] * 4 + ["invalid_size"] * 3 + ["unknown_symbol"]
    assert [(b.n, b.o) for b in out.bars] == [(1, 10.0)]


def test_snapshot_is_independent_of_later_updates() -> None:
    s = SymbolBars("A", LATENESS, HORIZON)
    out = Applied()
    batches, _, _ = preaggregate([t("A", 0.5, 1)], LATENESS)
    s.apply(batches["A"], out)
    snap = s.snapshot()
    more, _, _ = preaggregate([t("A", 0.6, 2, 20.0)], LATENESS)
    s.apply(more["A"], out)
    restored = SymbolBars.restore(snap, LATENESS, HORIZON)
    r_out = Applied()
    restored.close_idle(r_out)
    assert [(b.n, b.h) for b in r_out.bars] == [(1, 10.0)]


def _apply(s: SymbolBars, ticks: list[TradeTick], out: Applied) -> None:
    batches, _, _ = preaggregate(ticks, LATENESS)
    s.apply(batches[s.symbol], out)


def test_a_closed_bar_is_kept_packed_and_still_corrects_and_deduplicates_after_a_restore() -> None:
    """Closed bars are held packed (40 bytes a trade): a late trade still corrects the bar
    exactly, a re-delivered trade of it is still a duplicate, after a snapshot and restore too;
    a trade id beyond 64 bits keeps its bar unpacked, with the same results; so does an
    exchange code longer than a character."""
    for big, exchange in ((False, "Q"), (True, "Q"), (False, "XNAS")):
        s = _closed_first_bar((1 << 70) if big else 7, exchange)
        restored = SymbolBars.restore(s.snapshot(), LATENESS, HORIZON)
        for bars in (s, restored):
            _assert_corrects_and_deduplicates(bars, exchange)


def _closed_first_bar(tid: int = 7, exchange: str = "Q") -> SymbolBars:
    """Symbol ``A`` whose bar [0, 1) (trade ``tid`` on V, 8 on ``exchange``) has closed;
    trade 9 is open."""
    s = SymbolBars("A", LATENESS, HORIZON)
    out = Applied()
    second = t("A", 0.7, 8, 11.0, 1.0)._replace(exchange=exchange)
    _apply(s, [t("A", 0.2, tid, 10.0, 2.0), second], out)
    _apply(s, [t("A", 3.5, 9, 12.0)], out)  # watermark 1.5 s: the bar [0, 1) closes
    assert [(b.end_us, b.version) for b in out.bars] == [(US_PER_S, 1)]
    return s


def _assert_corrects_and_deduplicates(bars: SymbolBars, exchange: str = "Q") -> None:
    """The closed bar of :func:`_closed_first_bar`: a re-delivered trade of it is a duplicate,
    a late one corrects it exactly."""
    again = Applied()
    duplicate = t("A", 0.7, 8, 11.0, 1.0)._replace(exchange=exchange)
    _apply(bars, [duplicate], again)  # a duplicate of a closed trade
    assert (again.bars, again.duplicates) == ([], 1)
    _apply(bars, [t("A", 0.9, 10, 13.0, 1.0)], again)  # a late trade: a correction
    (fixed,) = again.bars
    assert (fixed.version, fixed.o, fixed.h, fixed.c, fixed.n) == (2, 10.0, 13.0, 13.0, 3)
    assert fixed.v == 4.0
    assert fixed.vwap == (20.0 + 11.0 + 13.0) / 4.0


def test_a_snapshot_pickles_no_class_per_bar_and_its_closed_bars_flat() -> None:
    """Bytewax pickles every symbol's snapshot (60 s of closed bars) at each epoch end while
    the worker stops: a class per bar costs a Python-level call each, a value per bar more
    than a few flat ones."""
    bars = SymbolBars("A", LATENESS, HORIZON)
    out = Applied()
    for second in range(8):
        _apply(bars, [t("A", second + 0.1 * k, 10 * second + k) for k in range(3)], out)
    snap = bars.snapshot()
    assert isinstance(snap.closed, ClosedBars)
    assert (len(snap.closed.secs), len(snap.closed.exchanges)) == (5, 15)
    assert snap.closed.exchanges == "V" * 15
    names = {a for _op, a, _ in pickletools.genops(pickle.dumps(snap)) if isinstance(a, str)}
    assert not names & {"_Bar", "_PackedBar"}
    assert {"SymbolBarsState", "ClosedBars"} <= names, "the check sees class names"


def test_a_snapshot_holding_bar_objects_restores_and_corrects() -> None:
    """Recovery snapshots taken before the flat form hold :class:`_PackedBar` s and
    :class:`_Bar` s by second."""
    snap = _closed_first_bar().snapshot()
    assert isinstance(snap.closed, ClosedBars)
    closed = snap.closed.bars()
    old = SymbolBarsState(
        snap.symbol,
        snap.max_ts_us,
        {sec: _Bar(*held) for sec, held in snap.open.items()},
        {sec: _PackedBar(r, tuple(codes), late) for sec, (r, codes, late) in closed.items()},
    )
    again = SymbolBars.restore(pickle.loads(pickle.dumps(old)), LATENESS, HORIZON).snapshot()
    assert isinstance(again.closed, ClosedBars)
    assert (again.open, again.closed.secs, again.closed.records) == (
        snap.open,
        snap.closed.secs,
        snap.closed.records,
    )
    _assert_corrects_and_deduplicates(SymbolBars.restore(again, LATENESS, HORIZON))


def test_a_snapshot_whose_closed_bars_disagree_with_their_trades_is_refused() -> None:
    """A corrupt recovery snapshot stops the restore with an error, not with bars that hold
    other trades than they did."""
    snap = _closed_first_bar().snapshot()
    assert isinstance(snap.closed, ClosedBars)
    one_more = snap._replace(closed=snap.closed._replace(counts=(3,)))
    with pytest.raises(ValueError, match="disagree with their trades"):
        SymbolBars.restore(one_more, LATENESS, HORIZON)


restart_trade = st.builds(
    TradeTick,
    symbol=st.sampled_from(SYMBOLS[:2]),
    ts_us=st.integers(0, 6 * US_PER_S),
    trade_id=st.one_of(st.integers(0, 50), st.integers(1 << 64, (1 << 64) + 3)),  # not packed
    exchange=st.sampled_from(("V", "Q", "XNAS")),  # a longer code: exchanges as a tuple
    price=st.floats(1.0, 500.0, allow_nan=False),
    size=st.floats(0.5, 1000.0, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(
    trades=st.lists(restart_trade, min_size=1, max_size=50, unique_by=tick_key),
    again=st.lists(st.integers(0, 49), max_size=12),
    cuts=st.lists(st.integers(1, 61), min_size=1, max_size=6),
    at=st.integers(0, 5),
)
def test_a_restart_from_a_pickled_snapshot_between_any_two_batches_changes_no_output(
    trades: list[TradeTick], again: list[int], cuts: list[int], at: int
) -> None:
    """Every bar, correction and duplicate count is the same as the uninterrupted run's; the
    trades re-delivered at the end find the bars they belong to closed (and restored)."""
    batches = split(trades + [trades[i % len(trades)] for i in again], cuts)
    assume(len(batches) >= 2)
    at = 1 + at % (len(batches) - 1)  # after the first batch, before the last
    straight, _, _ = run_batches(batches)
    out, _, _ = run_batches(batches, restart_at=at)
    assert out.bars == straight.bars
    assert (out.duplicates, out.corrections) == (straight.duplicates, straight.corrections)
