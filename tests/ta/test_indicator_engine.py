"""The engine's contract: corrections of the latest bar re-emit exactly what a replay would,
older corrections change nothing, snapshots resume bit-for-bit, bad bars change nothing."""

from __future__ import annotations

import copy
import math
import pickle
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torghut.config import TaSettings
from torghut.events import Microbar, Quote, Signal
from torghut.ta.indicators import IndicatorEngine, InvalidBar, window_micros

START = datetime(2026, 3, 9, 13, 25, 0, tzinfo=UTC)


def make_bar(close: float, volume: float = 100.0) -> Microbar:
    return Microbar(o=close, h=close, l=close, c=close, v=volume, vwap=close * 1.0001, count=3)


def assert_same_signal(got: Signal | None, want: Signal | None) -> None:
    assert got is not None
    assert want is not None
    for name, mine in msgspec.structs.asdict(got).items():
        expected = getattr(want, name)
        if expected is None or isinstance(expected, int):
            assert mine == expected, name
        else:
            assert mine is not None, name
            assert math.isclose(mine, expected, rel_tol=1e-9, abs_tol=1e-9), name


@st.composite
def bar_events(draw: st.DrawFn) -> list[tuple[str, float, float]]:
    """New bars, corrections of the latest bar and corrections of older bars, mixed."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = draw(
        st.lists(
            st.sampled_from(["new", "new", "new", "correct", "stale"]), min_size=1, max_size=160
        )
    )
    price = float(rng.uniform(5, 500))
    events = []
    for kind in kinds:
        price *= float(np.exp(rng.normal(0, 0.01)))
        events.append((kind, price, float(rng.integers(1, 1000))))
    return events


@settings(max_examples=100, deadline=None)
@given(bar_events())
def test_corrections_equal_a_replay_with_the_corrected_bar(
    events: list[tuple[str, float, float]],
) -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    replay = IndicatorEngine("PT1S", TaSettings())
    before_latest: bytes | None = None
    end: datetime | None = None
    stale = 0
    for kind, price, volume in events:
        bar = make_bar(price, volume)
        if kind == "new" or end is None:
            end = START + timedelta(seconds=engine.bars + 1)
            before_latest = replay.snapshot()
            assert_same_signal(engine.on_bar(end, bar), replay.on_bar(end, bar))
        elif kind == "correct":
            assert before_latest is not None
            replay = IndicatorEngine.restore(before_latest)
            assert_same_signal(engine.on_bar(end, bar), replay.on_bar(end, bar))
        else:
            assert engine.on_bar(end - timedelta(seconds=1), bar) is None
            stale += 1
    assert engine.stale_corrections == stale
    assert engine.bars == replay.bars


def feed(engine: IndicatorEngine, closes: list[float], first: int = 0) -> list[Signal]:
    out = []
    for i, close in enumerate(closes, start=first):
        ts = START + timedelta(seconds=i + 1)
        engine.on_quote(ts - timedelta(milliseconds=10), Quote("V", close - 0.01, 5, "V", close, 7))
        signal = engine.on_bar(ts, make_bar(close))
        assert signal is not None
        out.append(signal)
    return out


def test_snapshot_resumes_bit_for_bit() -> None:
    closes = (100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.003, 700)))).tolist()
    straight = feed(IndicatorEngine("PT1S", TaSettings()), closes)
    first = IndicatorEngine("PT1S", TaSettings())
    head = feed(first, closes[:350])
    resumed = IndicatorEngine.restore(first.snapshot())
    tail = feed(resumed, closes[350:], first=350)
    assert head + tail == straight
    duplicate = copy.deepcopy(resumed)
    assert feed(duplicate, [1.0], first=700) == feed(resumed, [1.0], first=700)


def test_restore_rejects_other_pickles() -> None:
    with pytest.raises(TypeError, match="IndicatorEngine"):
        IndicatorEngine.restore(pickle.dumps([1]))


@pytest.mark.parametrize(
    "bad",
    [
        make_bar(math.nan),
        make_bar(math.inf),
        make_bar(0.0),
        make_bar(-3.0),
        make_bar(10.0, -1.0),
        make_bar(10.0, math.nan),
        Microbar(o=10, h=10, l=10, c=10, v=1, vwap=math.nan, count=1),
    ],
)
def test_bad_bars_raise_and_change_nothing(bad: Microbar) -> None:
    clean = IndicatorEngine("PT1S", TaSettings())
    engine = IndicatorEngine("PT1S", TaSettings())
    closes = [10.0 + i * 0.1 for i in range(40)]
    feed(clean, closes)
    feed(engine, closes)
    with pytest.raises(InvalidBar):
        engine.on_bar(START + timedelta(seconds=41), bad)
    assert feed(engine, [12.0, 12.5], first=40) == feed(clean, [12.0, 12.5], first=40)


def test_naive_timestamps_are_rejected() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    with pytest.raises(InvalidBar, match="timezone-aware"):
        engine.on_bar(datetime(2026, 3, 9, 15, 0, 0), make_bar(10.0))
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.on_quote(datetime(2026, 3, 9, 15, 0, 0), Quote("V", 1, 1, "V", 2, 1))
    assert engine.bars == 0


def test_lanes_keep_separate_state() -> None:
    seconds = IndicatorEngine("PT1S", TaSettings())
    minutes = IndicatorEngine("PT1M", TaSettings())
    feed(seconds, [float(p) for p in range(1, 40)])
    first_minute = minutes.on_bar(START + timedelta(minutes=1), make_bar(50.0))
    assert first_minute is not None
    assert first_minute.ema12 is None
    assert first_minute.rsi14 is None
    assert first_minute.vwap_session == 50.0 * 1.0001


@pytest.mark.parametrize(
    ("size", "micros"),
    [("PT1S", 1_000_000), ("PT1M", 60_000_000), ("PT1H30M", 5_400_000_000), ("PT0.5S", 500_000)],
)
def test_window_sizes(size: str, micros: int) -> None:
    assert window_micros(size) == micros


@pytest.mark.parametrize("size", ["", "PT", "1S", "P1D", "PT0S", "PT-1S"])
def test_bad_window_sizes(size: str) -> None:
    with pytest.raises(ValueError, match="window size"):
        IndicatorEngine(size, TaSettings())


def test_correction_into_and_out_of_a_constant_window() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    feed(engine, [7.0] * 70)
    end = START + timedelta(seconds=71)
    moved = engine.on_bar(end, make_bar(7.5))
    assert moved is not None
    assert moved.vol_realized_w60s is not None
    assert moved.vol_realized_w60s > 0.0
    flat = engine.on_bar(end, make_bar(7.0))
    assert flat is not None
    assert (flat.vol_realized_w60s, flat.boll_upper, flat.boll_lower) == (0.0, 7.0, 7.0)
    moved_again = engine.on_bar(end, make_bar(6.5))
    assert moved_again is not None
    assert moved_again.boll_upper is not None
    assert moved_again.boll_upper > 7.0
    assert engine.corrections == 2
