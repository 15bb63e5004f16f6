"""The TA hot path's fast variants give exactly the general path's results, or step aside.

The throughput work added batch-level shortcuts for the common case (one feed, written in
event-time order, uniform UTC timestamps). Each returns ``None`` when its preconditions fail
and the caller falls back to the general code; these properties check both halves: whenever a
shortcut answers, its answer equals the general one, and on ordered valid input it does answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.key_groups import key_group
from operators.microbars import rfc3339_micros, uniform_utc_micros
from operators.quotes import QuoteChunk, _chunks_in_order, _latest_each, _QuoteWire, chunks_of
from torghut.dead_letters import DeadLetter
from torghut.ta.microbars import SymbolBatch, Tick, preaggregate, preaggregate_ordered

T0_US = 1_764_000_000 * 1_000_000  # 2025-11-24, an ordinary UTC second boundary
SYMBOLS = ("AAPL", "MSFT", "NVDA")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

prices = st.one_of(
    st.floats(min_value=0.01, max_value=1e4, allow_nan=False),
    st.sampled_from([0.0, -1.0, float("nan"), float("inf")]),
)
ticks = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.integers(min_value=0, max_value=5_000_000),  # offsets within 5 s
        st.integers(min_value=1, max_value=50),
        st.sampled_from(("V", "Q")),
        prices,
        st.sampled_from([1.0, 100.0, 0.0, 37.5]),
    ),
    max_size=60,
)


def _tick(sym: str, off: int, tid: int, ex: str, px: float, sz: float) -> Tick:
    return (sym, T0_US + off, tid, ex, px, sz)


def _ordered(
    batch: list[Tick], lateness: int, allow: frozenset[str] | None
) -> tuple[dict[str, SymbolBatch], int] | None:
    """``preaggregate_ordered`` over the columns of ``batch``."""
    symbols, stamps, ids, exchanges, prices, sizes = (list(c) for c in zip(*batch, strict=True))
    return preaggregate_ordered(symbols, stamps, ids, exchanges, prices, sizes, lateness, allow)


@settings(max_examples=300, deadline=None)
@given(
    raw=ticks,
    ordered=st.booleans(),
    lateness=st.sampled_from([0, 500_000, 2_000_000]),
    allow=st.sampled_from([None, frozenset(SYMBOLS), frozenset(SYMBOLS[:2])]),
)
def test_preaggregate_ordered_equals_preaggregate(
    raw: list[tuple[str, int, int, str, float, float]],
    ordered: bool,
    lateness: int,
    allow: frozenset[str] | None,
) -> None:
    batch = [_tick(*r) for r in raw]
    if ordered:
        batch.sort(key=lambda t: t[1])
    fast = _ordered(batch, lateness, allow) if batch else None
    batches, rejected, duplicates = preaggregate(batch, lateness, allow)
    if fast is None:
        return
    assert rejected == []
    assert fast == (batches, duplicates)
    assert list(fast[0]) == list(batches)  # symbol order too


@settings(max_examples=200, deadline=None)
@given(raw=ticks.filter(bool))
def test_preaggregate_ordered_answers_on_ordered_valid_batches(
    raw: list[tuple[str, int, int, str, float, float]],
) -> None:
    batch = sorted((_tick(s, o, i, e, 10.0, 5.0) for s, o, i, e, _, _ in raw), key=lambda t: t[1])
    fast = _ordered(batch, 2_000_000, None)
    assert fast is not None
    batches, rejected, duplicates = preaggregate(batch, 2_000_000, None)
    assert rejected == []
    assert fast == (batches, duplicates)


def _stamp(off_us: int) -> str:
    """msgspec's form of a UTC time, as the producers write it (fraction omitted when zero)."""
    at = EPOCH + timedelta(microseconds=T0_US + off_us)
    return msgspec.json.encode(at).decode().strip('"')


@settings(max_examples=300, deadline=None)
@given(
    quotes=st.lists(
        st.tuples(st.sampled_from(SYMBOLS), st.integers(min_value=0, max_value=4_000_000)),
        min_size=1,
        max_size=60,
    ),
    ordered=st.booleans(),
    allow=st.sampled_from([None, frozenset(SYMBOLS), frozenset(SYMBOLS[:2])]),
)
def test_latest_quotes_fast_path_equals_general_path(
    quotes: list[tuple[str, int]], ordered: bool, allow: frozenset[str] | None
) -> None:
    if ordered:
        quotes = sorted(quotes, key=lambda q: q[1])
    wires = [
        _QuoteWire(_stamp(off), sym, msgspec.Raw(b'{"n":%d}' % n))
        for n, (sym, off) in enumerate(quotes)
    ]
    fast = _chunks_in_order(wires, allow)
    dead: list[DeadLetter] = []
    triples = [(w.symbol, w.event_ts, w.payload) for w in wires]
    general = chunks_of(_latest_each(triples, allow, dead))
    if fast is None:
        return
    assert dead == []
    assert _content(fast) == _content(general)
    offs = sorted(off for _, off in quotes)
    assert all(c.ordered and c.first_us == T0_US + offs[0] for c in fast.values())
    assert max(c.high_us for c in fast.values()) == T0_US + offs[-1]


def _content(chunks: dict[str, QuoteChunk]) -> dict[str, tuple[Any, Any]]:
    return {g: (c.buckets, c.newest) for g, c in chunks.items()}


def test_latest_quotes_fast_path_answers_on_uniform_ordered_batches() -> None:
    offs = [1, 250_000, 999_999, 1_000_001, 1_500_000, 2_000_123]
    wires = [_QuoteWire(_stamp(off), sym, msgspec.Raw(b"{}")) for off in offs for sym in SYMBOLS]
    assert uniform_utc_micros([w.event_ts for w in wires])
    fast = _chunks_in_order(wires, None)
    assert fast is not None
    general = chunks_of(_latest_each([(w.symbol, w.event_ts, w.payload) for w in wires], None, []))
    assert _content(fast) == _content(general)
    # the last quote of each (symbol, second) is the one kept
    aapl = fast[key_group("AAPL")]
    assert aapl.buckets[T0_US // 1_000_000 + 1]["AAPL"][0] == T0_US + 999_999
    assert aapl.newest["AAPL"] == T0_US + 2_000_123


def test_uniform_timestamps_refuse_other_forms() -> None:
    assert not uniform_utc_micros(["2025-11-24T16:00:00Z"])
    assert not uniform_utc_micros(["2025-11-24T16:00:00.000000Z"])
    assert uniform_utc_micros(["2025-11-24T16:00:00.000000Z"], whole_seconds=True)
    assert not uniform_utc_micros(["2025-11-24T16:00:00.123+00:00"])
    assert rfc3339_micros("2025-11-24T16:00:00.123456Z") % 1_000_000 == 123_456
