"""Engine snapshots: a restore continues exactly as the engine that never stopped, the state is
flat (no indicator classes in the pickle), and snapshots of the previous object-graph format
(a running deployment's recovery state) still restore."""

from __future__ import annotations

import pickletools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from torghut.config import TaSettings
from torghut.events import Microbar, Quote, Signal
from torghut.ta.indicators import IndicatorEngine

START = datetime(2026, 3, 9, 13, 25, 0, tzinfo=UTC)  # 09:25 New York: sessions start inside
GRAPH_FORM = Path(__file__).parent / "data" / "engine_snapshot_graph_form.pickle"
"""An engine pickled by the code before the flat state (commit 19ebd42) after
:func:`scripted` events 0..399: ``PYTHONPATH=<that tree> python -c 'from
tests.ta.test_engine_snapshots import write_graph_form; write_graph_form()'``."""

Event = tuple[str, int, float, float]
"""``(kind, seconds since START, price, volume)``; kind ``bar``, ``fix`` (a correction of
the latest bar), ``stale`` (a correction of an older one) or ``quote``."""


def apply(engine: IndicatorEngine, event: Event) -> Signal | None:
    kind, second, price, volume = event
    ts = START + timedelta(seconds=second)
    if kind == "quote":
        engine.on_quote(ts, Quote("V", price - 0.01, volume, "N", price + 0.01, volume + 1))
        return None
    bar = Microbar(o=price, h=price, l=price, c=price, v=volume, vwap=price * 1.0002, count=2)
    return engine.on_bar(ts - timedelta(seconds=1) if kind == "stale" else ts, bar)


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    """Bars with gaps (a 5-minute window that fills and empties, sessions that start),
    corrections of the latest and of older bars, quotes before, at and after bar ends."""
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["bar", "bar", "bar", "fix", "stale", "quote", "quote"]),
                st.sampled_from([1, 1, 1, 2, 7, 61, 299, 301, 3600]),
                st.floats(0.5, 2.0),
                st.integers(0, 500),
            ),
            min_size=1,
            max_size=200,
        )
    )
    price, second, out = 100.0, 0, []
    for kind, gap, move, volume in steps:
        price *= move**0.05
        if kind == "bar" or second == 0:
            second += gap
            out.append(("bar", second, price, float(volume)))
        elif kind == "quote":
            out.append(("quote", second + gap % 3 - 1, price, float(volume)))
        else:
            out.append((kind, second, price, float(volume)))
    return out


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.sets(st.integers(0, 199), max_size=6))
def test_snapshot_restore_continue_equals_the_uninterrupted_engine(
    events: list[Event], cuts: set[int]
) -> None:
    straight = IndicatorEngine("PT1S", TaSettings())
    resumed = IndicatorEngine("PT1S", TaSettings())
    for i, event in enumerate(events):
        if i in cuts:
            resumed = IndicatorEngine.restore(resumed.snapshot())
        assert apply(resumed, event) == apply(straight, event), f"event {i}: {event}"
    assert resumed.__getstate__() == straight.__getstate__()
    assert (resumed.bars, resumed.corrections, resumed.stale_corrections) == (
        straight.bars,
        straight.corrections,
        straight.stale_corrections,
    )


def test_the_snapshot_pickles_no_indicator_class() -> None:
    engine = IndicatorEngine("PT1S", TaSettings())
    for event in scripted(0, 400):
        apply(engine, event)
    globals_ = {
        arg
        for op, arg, _ in pickletools.genops(engine.snapshot())
        if op.name in {"GLOBAL", "SHORT_BINUNICODE"} and isinstance(arg, str)
    }
    assert "torghut.ta.indicators" in globals_, "the engine itself"
    for part in ("torghut.ta.ema", "torghut.ta.rolling", "torghut.ta.vwap", "Ema", "WindowVwap"):
        assert part not in globals_, part


def scripted(first: int, last: int) -> list[Event]:
    """Deterministic events ``first..last-1``: bars with a quote each, some corrections."""
    out: list[Event] = []
    for i in range(first, last):
        price = 50.0 + (i * 37 % 101) / 10.0
        out.append(("quote", i + 1, price, float(i % 9)))
        out.append(("bar", i + 1, price, float(i % 13)))
        if i % 17 == 0:
            out.append(("fix", i + 1, price * 1.001, 3.0))
    return out


def write_graph_form() -> None:
    """Writes :data:`GRAPH_FORM` (run with the old code first on the path, see there)."""
    engine = IndicatorEngine("PT1S", TaSettings())
    for event in scripted(0, 400):
        apply(engine, event)
    GRAPH_FORM.write_bytes(engine.snapshot())


def test_a_snapshot_of_the_graph_form_restores_and_continues_exactly() -> None:
    old = GRAPH_FORM.read_bytes()
    assert b"torghut.ta.ema" in old, "the fixture is the object-graph form"
    restored = IndicatorEngine.restore(old)
    straight = IndicatorEngine("PT1S", TaSettings())
    for event in scripted(0, 400):
        apply(straight, event)
    assert restored.__getstate__() == straight.__getstate__()
    again = IndicatorEngine.restore(restored.snapshot())
    for event in scripted(400, 800):
        want = apply(straight, event)
        assert apply(restored, event) == want, event
        assert apply(again, event) == want, event
