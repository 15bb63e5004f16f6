"""The compiled batch reductions give exactly the Python reference's results, or step aside.

``operators/_reduce.pyx`` reduces well-formed batches (fixed-width UTC timestamps, valid values,
allowed symbols) in any order; anything else returns ``None`` and the caller takes the Python
path, which also dead-letters. These properties check both halves on arbitrary batches: when a
fast path answers, its answer equals the reference; on well-formed input it does answer.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.key_groups import key_group
from operators.quotes import (
    QUOTE_WIRE,
    QuoteChunk,
    _chunks_in_order,
    _latest_each,
    chunks_of,
    quote_of,
)
from operators.trade_wire import decode_trades, preaggregate_batch
from torghut.dead_letters import DeadLetter
from torghut.events import Envelope, Quote, Trade
from torghut.ta.microbars import preaggregate

T0 = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)  # an ordinary UTC second boundary
T0_US = int(T0.timestamp()) * 1_000_000
SYMBOLS = ("AAPL", "MSFT", "NVDA")

valid_prices = st.floats(min_value=0.01, max_value=1e4, allow_nan=False)
prices = st.one_of(valid_prices, st.sampled_from([0.0, -1.0, math.nan, math.inf]))
offsets = st.one_of(
    st.integers(min_value=0, max_value=5_000_000),  # within 5 s
    st.sampled_from([0, 1_000_000, 2_000_000]),  # whole seconds (the 20-character form)
)


def _trade(sym: str, off: int, tid: int, ex: str, px: float, sz: float) -> bytes:
    at = T0 + timedelta(microseconds=off)
    return msgspec.json.encode(Envelope(at, at, sym, tid, Trade(tid, ex, px, sz)))


trade_rows = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        offsets,
        st.integers(min_value=1, max_value=50),
        st.sampled_from(("V", "Q")),
        prices,
        st.sampled_from([1.0, 100.0, 0.0, 37.5]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    rows=trade_rows,
    repeats=st.lists(st.integers(min_value=0, max_value=59), max_size=5),
    lateness=st.sampled_from([0, 500_000, 2_000_000]),
    allow=st.sampled_from([None, frozenset(SYMBOLS), frozenset(SYMBOLS[:2])]),
)
def test_compiled_trade_reduction_equals_preaggregate(
    rows: list[tuple[str, int, int, str, float, float]],
    repeats: list[int],
    lateness: int,
    allow: frozenset[str] | None,
) -> None:
    values = [_trade(*r) for r in rows]
    values += [values[i] for i in repeats if i < len(values)]  # re-deliveries, any order
    fast = preaggregate_batch(values, lateness, allow)
    ticks, dead = decode_trades(values)
    batches, rejected, duplicates = preaggregate(ticks, lateness, allow)
    assert dead == []
    well_formed = not rejected
    assert (fast is not None) == well_formed
    if fast is not None:
        assert fast == (batches, duplicates)
        assert list(fast[0]) == list(batches)  # symbol order too


def test_compiled_trade_reduction_steps_aside_for_other_timestamp_forms() -> None:
    good = _trade("AAPL", 250_000, 1, "V", 10.0, 1.0)
    east = T0.astimezone(timezone(timedelta(hours=-5)))
    offset = msgspec.json.encode(Envelope(east, east, "AAPL", 2, Trade(2, "V", 10.0, 1.0)))
    assert preaggregate_batch([good], 0, None) is not None
    assert preaggregate_batch([good, offset], 0, None) is None
    bad_date = good.replace(b"2025-11-24T16", b"2025-02-30T16")
    assert preaggregate_batch([bad_date], 0, None) is None
    ticks, dead = decode_trades([bad_date])
    assert (ticks, [d.reason for d in dead]) == ([], ["invalid_message"])


def _quote(sym: str, off: int, n: int) -> bytes:
    at = T0 + timedelta(microseconds=off)
    return msgspec.json.encode(Envelope(at, at, sym, n, Quote("V", n, 1.0, "Q", n + 1, 1.0)))


def _content(chunks: dict[str, QuoteChunk]) -> dict[str, tuple[Any, Any]]:
    return {g: (c.buckets, c.newest) for g, c in chunks.items()}


@settings(max_examples=300, deadline=None)
@given(
    quotes=st.lists(st.tuples(st.sampled_from(SYMBOLS), offsets), min_size=1, max_size=60),
    allow=st.sampled_from([None, frozenset(SYMBOLS), frozenset(SYMBOLS[:2])]),
)
def test_compiled_quote_reduction_equals_the_general_path(
    quotes: list[tuple[str, int]], allow: frozenset[str] | None
) -> None:
    values = [_quote(sym, off, n) for n, (sym, off) in enumerate(quotes)]
    wires = [QUOTE_WIRE.decode(v) for v in values]
    fast = _chunks_in_order(wires, values, allow)
    dead: list[DeadLetter] = []
    triples = [(w.symbol, w.event_ts, v) for w, v in zip(wires, values, strict=True)]
    general = chunks_of(_latest_each(triples, allow, dead))
    assert (fast is None) == bool(dead)  # only an unknown symbol makes it step aside here
    if fast is None:
        return
    assert _content(fast) == _content(general)
    stamps = [T0_US + off for _, off in quotes]
    for chunk in fast.values():
        assert chunk.ordered == (stamps == sorted(stamps))
        assert (chunk.first_us, chunk.high_us) == (min(stamps), max(stamps))


def test_the_latest_quote_of_each_second_bucket_is_kept() -> None:
    offs = [1, 250_000, 1_000_000, 999_999, 1_000_001, 2_000_123]  # 1 000 000 is in (0, 1]
    values = [_quote("AAPL", off, n) for n, off in enumerate(offs)]
    fast = _chunks_in_order([QUOTE_WIRE.decode(v) for v in values], values, None)
    assert fast is not None
    chunk = fast[key_group("AAPL")]
    first_second = T0_US // 1_000_000 + 1
    assert chunk.buckets[first_second]["AAPL"] == (T0_US + 1_000_000, values[2])
    assert quote_of(values[2]).bid_price == 2
    assert chunk.buckets[first_second + 1]["AAPL"][0] == T0_US + 1_000_001
    assert chunk.newest["AAPL"] == T0_US + 2_000_123
    assert not chunk.ordered


@pytest.mark.parametrize("text", ["2025-11-24T16:00:00.5Z", "2025-11-24T17:00:00+01:00"])
def test_compiled_quote_reduction_steps_aside_for_other_timestamp_forms(text: str) -> None:
    value = _quote("AAPL", 0, 1)
    wire = QUOTE_WIRE.decode(value)
    other = msgspec.structs.replace(wire, event_ts=text)
    assert _chunks_in_order([wire], [value], None) is not None
    assert _chunks_in_order([wire, other], [value, value], None) is None
