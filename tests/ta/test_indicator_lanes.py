"""The indicator step's lanes: quotes before a lane's first bar, snapshots, restores.

A lane keeps only a quote book until its first bar creates its engine, and re-pickles its
state for a snapshot only when it changed; neither may change a signal. The real
:class:`operators.indicators.IndicatorLogic` runs here, fed the items the pipeline feeds it.
"""

from __future__ import annotations

import pickle

from operators.indicators import IndicatorGroupState, IndicatorLogic
from operators.joints import GroupRows
from operators.key_groups import KeyGroupProgress, key_group
from operators.quotes import QuoteChunk
from operators.ta_status import TaProgress
from tests.ta.conftest import final_bar
from torghut.config import TaSettings
from torghut.events import Envelope, Quote, Signal
from torghut.ta.imbalance import QuoteBook
from torghut.ta.indicators import IndicatorEngine
from torghut.ta.instants import US_PER_S

BASE = 1_780_000_000 * US_PER_S
LATENESS = TaSettings().allowed_lateness_ms * 1000
GROUP = key_group("AAA")
QUOTE = Quote("V", 9.99, 300.0, "N", 10.02, 100.0)


def _quotes(ts_us: int, feed_us: int) -> QuoteChunk:
    bucket = -(-ts_us // US_PER_S)
    return QuoteChunk({bucket: {"AAA": (ts_us, QUOTE)}}, {"AAA": ts_us}, True, ts_us, feed_us)


def _feed_passes(feed_us: int) -> QuoteChunk:
    return QuoteChunk({}, {}, True, feed_us, feed_us, "feed", feed_us)


def _signals(restart: bool) -> tuple[list[Envelope[Signal]], IndicatorGroupState]:
    """Quotes, then (optionally a snapshot and a restart), then bars: the signals."""
    progress = TaProgress()
    lanes = ("PT1S", "PT1M")
    logic = IndicatorLogic(lanes, TaSettings(), progress, None)
    logic.on_batch([_quotes(BASE + US_PER_S // 2, BASE + US_PER_S // 2)])
    logic.on_batch([_feed_passes(BASE + US_PER_S + LATENESS)])  # the quotes reach the lanes
    snapshot = logic.snapshot()
    if restart:
        logic = IndicatorLogic(lanes, TaSettings(), progress, pickle.loads(pickle.dumps(snapshot)))
    out: list[Envelope[Signal]] = []
    for end_s, close in ((1, 10.0), (2, 10.5)):
        end = BASE + end_s * US_PER_S
        mark = KeyGroupProgress(GROUP, end, end)
        rows, _ = logic.on_batch([GroupRows([final_bar(end, close)], [], mark)])
        rows2, _ = logic.on_batch([_feed_passes(end + LATENESS)])
        out += [s for item in (*rows, *rows2) for s in item.rows]
    return out, snapshot


def test_quotes_before_the_first_bar_are_kept_in_a_book_and_survive_a_restart() -> None:
    straight, snapshot = _signals(restart=False)
    restarted, _ = _signals(restart=True)
    held = {(lane.symbol, lane.lane): pickle.loads(lane.engine) for lane in snapshot.lanes}
    assert {key: type(v) for key, v in held.items()} == {
        ("AAA", "PT1S"): QuoteBook,
        ("AAA", "PT1M"): QuoteBook,
    }, "no engine before a lane's first bar: only its quote book"
    assert [s.payload for s in restarted] == [s.payload for s in straight]
    first = straight[0].payload
    assert (first.imbalance_bid_px, first.imbalance_ask_px) == (9.99, 10.02)
    assert (first.imbalance_bid_sz, first.imbalance_ask_sz) == (300, 100)
    assert first.close == 10.0


def test_an_unchanged_lane_shares_its_snapshot_and_a_changed_one_is_taken_again() -> None:
    logic = IndicatorLogic(("PT1S",), TaSettings(), TaProgress(), None)
    logic.on_batch([_quotes(BASE + US_PER_S // 2, BASE + US_PER_S // 2)])
    logic.on_batch([_feed_passes(BASE + US_PER_S + LATENESS)])
    end = BASE + US_PER_S
    logic.on_batch([GroupRows([final_bar(end, 10.0)], [], KeyGroupProgress(GROUP, end, end))])
    (first,) = logic.snapshot().lanes
    (again,) = logic.snapshot().lanes
    assert again is first, "nothing changed: the same state, not pickled again"
    assert isinstance(pickle.loads(first.engine), IndicatorEngine)
    end2 = end + US_PER_S
    logic.on_batch([GroupRows([final_bar(end2, 11.0)], [], KeyGroupProgress(GROUP, end2, end2))])
    (pending,) = logic.snapshot().lanes
    assert pending is not first
    assert [env.payload.c for env in pending.pending] == [11.0]
