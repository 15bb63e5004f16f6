"""Session and 5-minute VWAP equal independent polars oracles, across New York session starts
and DST changes; explicit boundary cases pin the session rule down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from torghut.config import TaSettings
from torghut.events import Microbar, Signal
from torghut.ta.indicators import IndicatorEngine

REL = 1e-9
NEW_YORK = "America/New_York"

# 09:29:50 New York time on days around both 2026 DST changes (Mar 8, Nov 1), in UTC.
ANCHORS = [
    datetime(2026, 3, 6, 14, 29, 50, tzinfo=UTC),  # Friday, EST
    datetime(2026, 3, 7, 14, 29, 50, tzinfo=UTC),  # Saturday, EST; the next session is EDT
    datetime(2026, 3, 8, 13, 29, 50, tzinfo=UTC),  # DST-start Sunday, EDT
    datetime(2026, 10, 31, 13, 29, 50, tzinfo=UTC),  # Saturday, EDT; the next is EST
    datetime(2026, 11, 1, 14, 29, 50, tzinfo=UTC),  # DST-end Sunday, EST
]


def bar(price: float, volume: float, vwap: float | None = None) -> Microbar:
    return Microbar(o=price, h=price, l=price, c=price, v=volume, vwap=vwap, count=1)


GAPS_S = [1.0, 1.0, 1.0, 60.0, 299.0, 300.0, 301.0, 0.25, 0.000001]


@st.composite
def bar_streams(draw: st.DrawFn) -> list[tuple[datetime, float, float, float | None]]:
    """Increasing bar ends from an anchor just before a session start, gaps from 1 µs to 30 h,
    prices with jumps, volumes including 0 (a bar without volume has no VWAP).

    Hypothesis picks the anchor, the length and the mix; a seeded generator the details,
    which keeps generation fast.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    end = draw(st.sampled_from(ANCHORS))
    long_gaps = draw(st.floats(0.0, 0.3))
    empty = draw(st.floats(0.0, 0.5))
    bars = []
    for _ in range(draw(st.integers(1, 150))):
        roll = rng.random()
        if roll < long_gaps / 3:
            gap = float(rng.integers(3600, 30 * 3600))
        elif roll < long_gaps:
            gap = float(rng.integers(1, 900))
        else:
            gap = float(rng.choice(GAPS_S))
        end += timedelta(seconds=gap)
        price = float(rng.uniform(0.5, 10_000.0))
        volume = 0.0 if rng.random() < empty else float(rng.choice([rng.uniform(1e-3, 1e6), 1e7]))
        vwap = None if volume == 0 or rng.random() < 0.2 else float(price * rng.uniform(0.9, 1.1))
        bars.append((end, price, volume, vwap))
    return bars


def oracle(
    bars: list[tuple[datetime, float, float, float | None]], session_start: str, tz: str
) -> pl.DataFrame:
    """Session and 5-minute VWAP in polars: a wall-clock session key and an inequality join."""
    hours, minutes = (int(part) for part in session_start.split(":"))
    frame = pl.DataFrame(
        {
            "end": [b[0] for b in bars],
            "price": [b[3] if b[3] is not None else b[1] for b in bars],
            "volume": [b[2] for b in bars],
        },
        schema={"end": pl.Datetime("us", "UTC"), "price": pl.Float64, "volume": pl.Float64},
    ).with_row_index("i")
    frame = frame.with_columns(
        pv=pl.col("price") * pl.col("volume"), since=pl.col("end") - pl.duration(minutes=5)
    )
    local = pl.col("end").dt.convert_time_zone(tz).dt.replace_time_zone(None)
    # A bar belongs to the session with the latest start strictly before its end.
    session = (local - pl.duration(hours=hours, minutes=minutes, microseconds=1)).dt.date()
    frame = frame.with_columns(session=session).with_columns(
        cum_pv=pl.col("pv").cum_sum().over("session"),
        cum_v=pl.col("volume").cum_sum().over("session"),
    )
    window = (
        frame.join_where(
            frame.select(end_b="end", pv_b="pv", v_b="volume"),
            pl.col("end_b") > pl.col("since"),
            pl.col("end_b") <= pl.col("end"),
        )
        .group_by("i")
        .agg(w_pv=pl.col("pv_b").sum(), w_v=pl.col("v_b").sum())
    )
    return (
        frame.join(window, on="i")
        .sort("i")
        .select(
            vwap_session=pl.when(pl.col("cum_v") > 0).then(pl.col("cum_pv") / pl.col("cum_v")),
            vwap_w5m=pl.when(pl.col("w_v") > 0).then(pl.col("w_pv") / pl.col("w_v")),
        )
    )


def run(
    bars: list[tuple[datetime, float, float, float | None]], settings_: TaSettings
) -> list[Signal]:
    engine = IndicatorEngine("PT1S", settings_)
    out = []
    for end, price, volume, vwap in bars:
        signal = engine.on_bar(end, bar(price, volume, vwap))
        assert signal is not None
        out.append(signal)
    return out


def assert_close(name: str, mine: list[float | None], expected: list[float | None]) -> None:
    for i, (got, want) in enumerate(zip(mine, expected, strict=True)):
        if want is None:
            assert got is None, f"{name}[{i}] = {got}, oracle has no volume"
        else:
            assert got is not None, f"{name}[{i}] is None, oracle gives {want}"
            assert abs(got - want) <= REL * abs(want), f"{name}[{i}]: {got} != {want}"


@settings(max_examples=150, deadline=None)
@given(bar_streams(), st.sampled_from([("09:30", NEW_YORK), ("04:00", "Europe/London")]))
def test_session_and_window_vwap_equal_polars_oracle(
    bars: list[tuple[datetime, float, float, float | None]], session: tuple[str, str]
) -> None:
    start, tz = session
    signals = run(bars, TaSettings(session_start=start, session_timezone=tz))
    expected = oracle(bars, start, tz)
    assert_close("vwap_session", [s.vwap_session for s in signals], expected["vwap_session"])
    assert_close("vwap_w5m", [s.vwap_w5m for s in signals], expected["vwap_w5m"])


def session_vwaps(ends: list[datetime], window_size: str = "PT1S") -> list[float | None]:
    """Bars priced 1, 2, 3, ... with volume 1: the session VWAP shows where resets happen."""
    engine = IndicatorEngine(window_size, TaSettings())
    out = []
    for n, end in enumerate(ends, start=1):
        signal = engine.on_bar(end, bar(float(n), 1.0, float(n)))
        assert signal is not None
        out.append(signal.vwap_session)
    return out


def test_bar_ending_at_session_start_closes_the_old_session_est() -> None:
    # Friday 2026-03-06 is EST: 09:30 New York is 14:30 UTC.
    ends = [datetime(2026, 3, 6, 14, 29, 59, tzinfo=UTC) + timedelta(seconds=s) for s in (0, 1, 2)]
    assert session_vwaps(ends) == [1.0, 1.5, 3.0]


def test_session_start_moves_to_1330_utc_after_dst_starts() -> None:
    # Monday 2026-03-09 is EDT: 09:30 New York is 13:30 UTC; 14:30 UTC is mid-session.
    ends = [
        datetime(2026, 3, 9, 13, 30, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 13, 30, 1, tzinfo=UTC),
        datetime(2026, 3, 9, 14, 30, 1, tzinfo=UTC),
    ]
    assert session_vwaps(ends) == [1.0, 2.0, 2.5]


def test_dst_start_sunday_session_is_23_hours_long() -> None:
    # Session of Sat 2026-03-07 09:30 EST (14:30 UTC) runs to Sun 09:30 EDT (13:30 UTC).
    ends = [
        datetime(2026, 3, 7, 14, 30, 1, tzinfo=UTC),
        datetime(2026, 3, 8, 13, 30, 0, tzinfo=UTC),
        datetime(2026, 3, 8, 13, 30, 1, tzinfo=UTC),
        datetime(2026, 3, 8, 14, 30, 1, tzinfo=UTC),
    ]
    assert session_vwaps(ends) == [1.0, 1.5, 3.0, 3.5]


def test_dst_end_moves_session_start_back_to_1430_utc() -> None:
    # Sunday 2026-11-01 is EST after 02:00: 13:30:01 UTC is 08:30:01, still the old session.
    ends = [
        datetime(2026, 10, 31, 13, 30, 1, tzinfo=UTC),
        datetime(2026, 11, 1, 13, 30, 1, tzinfo=UTC),
        datetime(2026, 11, 1, 14, 30, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 14, 30, 1, tzinfo=UTC),
    ]
    assert session_vwaps(ends) == [1.0, 1.5, 2.0, 4.0]


def test_minute_lane_bar_ending_0931_opens_the_session() -> None:
    ends = [datetime(2026, 3, 9, 13, 30, tzinfo=UTC), datetime(2026, 3, 9, 13, 31, tzinfo=UTC)]
    assert session_vwaps(ends, "PT1M") == [1.0, 2.0]


def test_zero_volume_gives_none_until_volume_arrives() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    first = datetime(2026, 3, 9, 15, 0, 1, tzinfo=UTC)
    empty = engine.on_bar(first, bar(10.0, 0.0))
    assert empty is not None
    assert (empty.vwap_session, empty.vwap_w5m) == (None, None)
    traded = engine.on_bar(first + timedelta(seconds=1), bar(11.0, 2.0, 10.5))
    assert traded is not None
    assert (traded.vwap_session, traded.vwap_w5m) == (10.5, 10.5)


def test_window_vwap_forgets_a_huge_bar_exactly() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    start = datetime(2026, 3, 9, 15, 0, 0, tzinfo=UTC)
    engine.on_bar(start, bar(9_999.0, 1e12, 9_999.0))
    last = None
    for s in range(1, 400):
        last = engine.on_bar(start + timedelta(seconds=s), bar(1.1, 3.0, 1.1))
    assert last is not None
    assert last.vwap_w5m == 1.1


def test_window_vwap_pickles_packed_and_restores_snapshots_of_the_old_form() -> None:
    import pickle
    from collections import deque

    from torghut.ta.vwap import WindowVwap

    w = WindowVwap(300_000_000)
    for i in range(1, 400):
        w.update(i * 1_000_000, 10.0 + i / 100, float(i % 7))
    packed = pickle.loads(pickle.dumps(w, protocol=pickle.HIGHEST_PROTOCOL))
    _, ends, pvs, vols, pv, v, err_pv, err_v = w.__getstate__()
    window = deque(
        zip(
            memoryview(ends).cast("q").tolist(),
            memoryview(pvs).cast("d").tolist(),
            memoryview(vols).cast("d").tolist(),
            strict=True,
        )
    )
    assert len(window) == 300, "the window's bars, the older ones dropped"
    slots = {"span_us": 300_000_000, "_bars": window, "_pv": pv, "_v": v}
    old = WindowVwap.__new__(WindowVwap)
    old.__setstate__((None, {**slots, "_err_pv": err_pv, "_err_v": err_v}))  # the deque form
    assert packed.__getstate__() == w.__getstate__()
    assert old.__getstate__() == w.__getstate__()
    expected = w.update(400_000_000, 12.5, 3.0)
    assert packed.update(400_000_000, 12.5, 3.0) == expected
    assert old.update(400_000_000, 12.5, 3.0) == expected
    assert packed.__getstate__() == old.__getstate__() == w.__getstate__()
