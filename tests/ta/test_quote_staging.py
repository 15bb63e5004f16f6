"""The indicator step's quote staging: any interleaving of quote partitions, the same signals.

Live, the TA flow reads several quote partitions in turn, so most quote chunks reach a key
group out of time order with what it has staged; the step merges them symbol by symbol instead
of handing each one to the engines whole. Whatever the interleaving and the batch cuts, each
signal's top-of-book fields must be those of the definition in :mod:`torghut.ta.imbalance`:
the quote with the greatest event time at or before the bar end (on equal times the one read
last), if it is at most ``quote_max_age_ms`` old — computed here directly from the quotes in
the order they were read, not by the step's own code.

The quotes go through the real reduction (:func:`operators.quotes.reduce_quotes`, the compiled
path for these well-formed envelopes) and the real :class:`operators.indicators.IndicatorLogic`.
Each partition's quotes are read in the order they were produced: at their event time plus a
delay under the allowed lateness, as the feed-level watermark assumes.
"""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.indicators import IndicatorLogic
from operators.joints import GroupRows
from operators.kafka_io import encode_envelope
from operators.key_groups import KeyGroupProgress, key_group
from operators.quotes import QuoteChunk, reduce_quotes
from operators.ta_status import TaProgress
from tests.ta.conftest import final_bar
from torghut.config import TaSettings
from torghut.events import Envelope, Quote, Signal
from torghut.ta.instants import US_PER_S, us_to_dt

BASE = 1_780_000_000 * US_PER_S
SETTINGS = TaSettings()
LATENESS = SETTINGS.allowed_lateness_ms * 1000
MAX_AGE = SETTINGS.quote_max_age_ms * 1000
SECONDS = 3
PARTS = ("quotes/0", "quotes/1")


def _same_group_symbols(n: int) -> tuple[str, ...]:
    """``n`` symbols of one key group (the step's state is per group)."""
    by_group: dict[str, list[str]] = {}
    for i in range(1000):
        sym = f"Q{i:03d}"
        found = by_group.setdefault(key_group(sym), [])
        found.append(sym)
        if len(found) == n:
            return tuple(found)
    raise AssertionError("no group with enough symbols")


SYMBOLS = _same_group_symbols(3)
GROUP = key_group(SYMBOLS[0])

quote_st = st.tuples(
    st.sampled_from(SYMBOLS),
    st.integers(0, SECONDS * 10).map(lambda tenth: tenth * 100_000),  # equal times happen
    st.integers(0, LATENESS - 1),  # produced this long after its event time
    st.integers(1, 9),  # its price, to tell quotes apart
    st.integers(0, 1),  # its partition
)


def _quote(price: int) -> Quote:
    return Quote("V", float(price), 100.0 * price, "N", price + 0.5, 10.0 * price)


def _envelope(sym: str, ts_us: int, price: int) -> bytes:
    ts = us_to_dt(ts_us)
    return encode_envelope(Envelope(ts, ts, sym, 0, _quote(price)))


def _expected(read: list[tuple[str, int, int]], sym: str, end_us: int) -> tuple[object, ...]:
    """The definition: the latest quote at or before the end, the last read on equal times."""
    best: tuple[int, int] | None = None
    for s, ts, price in read:
        if s == sym and ts <= end_us and (best is None or ts >= best[0]):
            best = (ts, price)
    if best is None or end_us - best[0] > MAX_AGE:
        return (None, None, None, None, None)
    q = _quote(best[1])
    return (q.ask_price - q.bid_price, q.bid_price, q.ask_price, int(q.bid_size), int(q.ask_size))


@settings(max_examples=150, deadline=None)
@given(
    quotes=st.lists(quote_st, min_size=10, max_size=60),
    turns=st.lists(st.integers(0, 1), min_size=40, max_size=40),
    cuts=st.lists(st.integers(1, 6), min_size=40, max_size=40),
    restart_at=st.integers(0, 40),
)
def test_any_interleaving_of_quote_partitions_gives_each_signal_the_latest_quote(
    quotes: list[tuple[str, int, int, int, int]],
    turns: list[int],
    cuts: list[int],
    restart_at: int,
) -> None:
    """The partitions' batches are read in any interleaving and cut anywhere. A symbol's quotes
    are on one partition when the ingest keys them by symbol, but not across a change of the
    partition count: here each quote is on either. Once, between two batches, the step is
    restarted from its snapshot (what it has staged is recovery state)."""
    progress = TaProgress()
    for part in PARTS:
        progress.mark_source_drained(part, 0)
    logic = IndicatorLogic(("PT1S",), SETTINGS, progress, None)
    ends = [BASE + s * US_PER_S for s in range(1, SECONDS + 1)]
    bars = [final_bar(end, 10.0, sym) for end in ends for sym in SYMBOLS]
    mark = KeyGroupProgress(GROUP, ends[-1], ends[-1])
    out = logic.on_batch([GroupRows(bars, [], mark)])[0]

    queues: list[list[tuple[str, int, int]]] = [[], []]
    for sym, at_us, _delay, price, part in sorted(quotes, key=lambda q: q[1] + q[2]):
        queues[part].append((sym, BASE + at_us, price))
    read: list[tuple[str, int, int]] = []
    i = 0
    while any(queues):
        p = turns[i % len(turns)] if all(queues) else (0 if queues[0] else 1)
        batch, queues[p] = queues[p][: cuts[i % len(cuts)]], queues[p][cuts[i % len(cuts)] :]
        if i == restart_at:
            state = pickle.loads(pickle.dumps(logic.snapshot()))
            logic = IndicatorLogic(("PT1S",), SETTINGS, progress, state)
        i += 1
        read.extend(batch)
        values = [_envelope(sym, ts, price) for sym, ts, price in batch]
        chunks = [c for c in reduce_quotes(values, None, progress, PARTS[p]) if c[0] == GROUP]
        for _group, chunk in chunks:
            assert isinstance(chunk, QuoteChunk)
            out += logic.on_batch([chunk])[0]
    for part in PARTS:  # both partitions' time passes the last bar end + lateness
        done = ends[-1] + LATENESS
        out += logic.on_batch([QuoteChunk({}, {}, True, done, done, part, done)])[0]

    signals: dict[tuple[str, int], Envelope[Signal]] = {}
    for rows in out:
        for env in rows.rows:
            key = (env.symbol, int(env.event_ts.timestamp() * US_PER_S))
            assert key not in signals, "one signal per bar"
            signals[key] = env
    assert len(signals) == len(bars)
    for (sym, end), env in signals.items():
        p = env.payload
        got = (
            p.imbalance_spread,
            p.imbalance_bid_px,
            p.imbalance_ask_px,
            p.imbalance_bid_sz,
            p.imbalance_ask_sz,
        )
        assert got == _expected(read, sym, end), (sym, end - BASE)
