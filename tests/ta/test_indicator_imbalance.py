"""Imbalance fields equal a polars as-of join: the latest quote at or before each bar end, no
older than ``quote_max_age_ms``, whatever order the quotes arrive in before the bar closes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from torghut.config import TaSettings
from torghut.events import Microbar, Quote
from torghut.ta.indicators import IndicatorEngine

START = datetime(2026, 3, 9, 15, 0, 0, tzinfo=UTC)
LATENESS_US = 2_000_000
FIELDS = ["spread", "bid_px", "ask_px", "bid_sz", "ask_sz"]


def micros(us: int) -> datetime:
    return START + timedelta(microseconds=us)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, int, list[tuple[int, Quote]], list[int]]:
    """A lane, a max age, quotes (some one-sided, some sharing a timestamp) and bar ends on
    the lane's grid; seeded numpy fills in the details so generation stays fast."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    window, grid = draw(st.sampled_from([("PT1S", 1_000_000), ("PT1M", 60_000_000)]))
    max_age_ms = draw(st.sampled_from([0, 1, 500, 1000, 5000]))
    horizon = grid * draw(st.integers(1, 40))
    density = draw(st.sampled_from([0.2, 2.0, 20.0]))  # quotes per bar interval
    count = int(rng.poisson(density * horizon / grid))
    stamps = rng.integers(0, horizon, count)
    if count and rng.random() < 0.5:  # quotes exactly on bar ends and max-age boundaries
        stamps[: count // 3] = (stamps[: count // 3] // grid) * grid - rng.choice(
            [0, max_age_ms * 1000, max_age_ms * 1000 + 1], count // 3
        )
    if count > 1 and rng.random() < 0.5:
        stamps[-1] = stamps[0]
    quotes = []
    for ts in stamps.tolist():
        bid = float(rng.choice([0.0, rng.uniform(10, 20)], p=[0.1, 0.9]))
        ask = float(rng.choice([0.0, rng.uniform(20, 30)], p=[0.1, 0.9]))
        quote = Quote("V", bid, float(rng.integers(1, 900)), "Q", ask, float(rng.integers(1, 900)))
        quotes.append((int(ts), quote))
    bar_ends = sorted(
        set((rng.integers(1, horizon // grid + 1, max(1, horizon // grid // 2)) * grid).tolist())
    )
    return window, max_age_ms, quotes, bar_ends


def arrivals(
    quotes: list[tuple[int, Quote]], bar_ends: list[int], seed: int
) -> list[tuple[int, int, int, int]]:
    """Arrival order as in the flow: a quote arrives within the allowed lateness of its event
    time, a bar when the watermark passes its end + lateness (so after every quote <= end).
    Each event is ``(arrival, kind, index, event time)``, kind 0 a quote and 1 a bar."""
    rng = np.random.default_rng(seed)
    events: list[tuple[int, int, int, int]] = []
    for n, (ts, _) in enumerate(quotes):
        events.append((ts + int(rng.integers(0, LATENESS_US)), 0, n, ts))
    for n, end in enumerate(bar_ends):
        events.append((end + LATENESS_US, 1, n, end))
    events.sort()
    return events


def feed(
    window: str, max_age_ms: int, quotes: list[tuple[int, Quote]], events: list[tuple[int, ...]]
) -> list[tuple[float | None, ...]]:
    engine = IndicatorEngine(window, TaSettings(quote_max_age_ms=max_age_ms))
    out: list[tuple[float | None, ...]] = []
    for _, kind, n, ts in events:
        if kind == 0:
            engine.on_quote(micros(ts), quotes[n][1])
        else:
            signal = engine.on_bar(micros(ts), Microbar(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1))
            assert signal is not None
            out.append(
                (
                    signal.imbalance_spread,
                    signal.imbalance_bid_px,
                    signal.imbalance_ask_px,
                    signal.imbalance_bid_sz,
                    signal.imbalance_ask_sz,
                )
            )
    return out


def oracle(
    quotes: list[tuple[int, Quote]],
    bar_ends: list[int],
    max_age_ms: int,
    events: list[tuple[int, ...]],
) -> list[tuple[float | None, ...]]:
    """As-of join in polars; of quotes sharing a timestamp the one received last wins."""
    received = {event[2]: rank for rank, event in enumerate(events) if event[1] == 0}
    bars = pl.DataFrame({"end": bar_ends}, schema={"end": pl.Int64})
    if not quotes:
        return [(None,) * 5 for _ in bar_ends]
    book = (
        pl.DataFrame(
            {
                "ts": [ts for ts, _ in quotes],
                "order": [received[n] for n in range(len(quotes))],
                "bid": [q.bid_price for _, q in quotes],
                "ask": [q.ask_price for _, q in quotes],
                "bsz": [q.bid_size for _, q in quotes],
                "asz": [q.ask_size for _, q in quotes],
            },
            schema_overrides={"ts": pl.Int64},
        )
        .sort("ts", "order")
        .unique("ts", keep="last", maintain_order=True)
    )
    joined = bars.sort("end").join_asof(book, left_on="end", right_on="ts", strategy="backward")
    fresh = pl.col("ts").is_not_null() & (pl.col("end") - pl.col("ts") <= max_age_ms * 1000)
    has_bid = fresh & (pl.col("bid") > 0)
    has_ask = fresh & (pl.col("ask") > 0)
    result = joined.select(
        spread=pl.when(has_bid & has_ask).then(pl.col("ask") - pl.col("bid")),
        bid_px=pl.when(has_bid).then(pl.col("bid")),
        ask_px=pl.when(has_ask).then(pl.col("ask")),
        bid_sz=pl.when(has_bid).then(pl.col("bsz").cast(pl.Int64)),
        ask_sz=pl.when(has_ask).then(pl.col("asz").cast(pl.Int64)),
    )
    return [tuple(row) for row in result.iter_rows()]


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_imbalance_equals_polars_asof_oracle(
    scenario: tuple[str, int, list[tuple[int, Quote]], list[int]], seed: int
) -> None:
    window, max_age_ms, quotes, bar_ends = scenario
    events = arrivals(quotes, bar_ends, seed)
    expected = oracle(quotes, bar_ends, max_age_ms, events)
    assert feed(window, max_age_ms, quotes, events) == expected


def test_quote_exactly_max_age_old_counts_and_one_microsecond_older_does_not() -> None:
    engine = IndicatorEngine("PT1S", TaSettings(quote_max_age_ms=5000))
    engine.on_quote(micros(0), Quote("V", 10.0, 3, "V", 10.5, 4))
    at_limit = engine.on_bar(micros(5_000_000), Microbar(1, 1, 1, 1, 1, 1, 1))
    assert at_limit is not None
    assert at_limit.imbalance_spread == 0.5
    assert (at_limit.imbalance_bid_sz, at_limit.imbalance_ask_sz) == (3, 4)
    engine = IndicatorEngine("PT1S", TaSettings(quote_max_age_ms=5000))
    engine.on_quote(micros(-1), Quote("V", 10.0, 3, "V", 10.5, 4))
    stale = engine.on_bar(micros(5_000_000), Microbar(1, 1, 1, 1, 1, 1, 1))
    assert stale is not None
    assert stale.imbalance_bid_px is None


def test_quote_after_the_bar_end_is_kept_for_the_next_bar() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    engine.on_quote(micros(1_000_001), Quote("V", 11.0, 1, "V", 11.2, 1))
    engine.on_quote(micros(999_999), Quote("V", 10.0, 1, "V", 10.1, 1))
    first = engine.on_bar(micros(1_000_000), Microbar(1, 1, 1, 1, 1, 1, 1))
    second = engine.on_bar(micros(2_000_000), Microbar(1, 1, 1, 1, 1, 1, 1))
    assert first is not None
    assert second is not None
    assert (first.imbalance_bid_px, second.imbalance_bid_px) == (10.0, 11.0)


def test_quotes_of_an_untraded_symbol_stay_bounded() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    for s in range(10_000):
        engine.on_quote(micros(s * 1_000_000 + 5), Quote("V", 10.0 + s, 1, "V", 20.0 + s, 1))
    assert len(engine.snapshot()) < 20_000
    signal = engine.on_bar(micros(10_000 * 1_000_000), Microbar(1, 1, 1, 1, 1, 1, 1))
    assert signal is not None
    assert signal.imbalance_bid_px == 10.0 + 9_999


def test_late_quote_updates_the_carried_quote_for_later_bars() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    engine.on_quote(micros(500_000), Quote("V", 10.0, 1, "V", 10.1, 1))
    assert engine.on_bar(micros(1_000_000), Microbar(1, 1, 1, 1, 1, 1, 1)) is not None
    engine.on_quote(micros(500_000), Quote("V", 12.0, 1, "V", 12.1, 1))  # same time, later
    engine.on_quote(micros(400_000), Quote("V", 13.0, 1, "V", 13.1, 1))  # older: superseded
    signal = engine.on_bar(micros(2_000_000), Microbar(1, 1, 1, 1, 1, 1, 1))
    assert signal is not None
    assert signal.imbalance_bid_px == 12.0
