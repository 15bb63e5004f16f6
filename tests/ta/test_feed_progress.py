"""Event-time progress of the microbar step under any arrival order and any pause pattern.

The real operator code runs here (:func:`operators.microbars._preaggregate` on JSON messages,
compiled path included, then one :class:`operators.microbars.MicrobarLogic` per key group) with
a fake wall clock: the test decides when the process stalls, when timers fire and when the
source reports being caught up (:meth:`operators.ta_status.TaProgress.mark_source_drained`), so
no test sleeps. The oracle is the polars group-by of ``test_microbars``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.indicators import IndicatorLogic
from operators.kafka_source import PartitionBatch
from operators.key_groups import KeyGroupProgress, key_group
from operators.microbars import BarRows, MicrobarLogic, _preaggregate
from operators.quotes import QuoteChunk
from operators.ta_status import TaProgress
from tests.ta.test_microbars import close, polars_bars, split, tick_key
from torghut.config import TaSettings
from torghut.events import Envelope, Microbar, Trade
from torghut.ta.microbars import US_PER_S, TradeTick

LATENESS = 2 * US_PER_S
IDLE = 3 * US_PER_S
HORIZON = 600 * US_PER_S
BASE = 1_780_000_000 * US_PER_S
"""Event times start here (an ordinary epoch second), wall times are on the same axis."""
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


@dataclass
class Emission:
    env: Envelope[Microbar]
    feed_us: int | None
    """The feed's time (largest event time delivered) when the row was emitted."""
    drained_us: int | None
    at_eof: bool


@dataclass
class Harness:
    """The microbar step of one process: 16 key groups, a fake wall clock, a progress object."""

    now: int = BASE
    progress: TaProgress = field(default_factory=TaProgress)
    groups: dict[str, MicrobarLogic] = field(default_factory=dict)
    feeds: dict[str, int] = field(default_factory=dict)
    """Each source partition's time (largest event time it delivered)."""
    part_of: dict[str, str] = field(default_factory=dict)
    """The partition each symbol is read from (``"feed"`` when not set)."""
    out: list[Emission] = field(default_factory=list)
    marks: dict[str, KeyGroupProgress] = field(default_factory=dict)

    def deliver(self, batch: list[TradeTick], part: str | None = None) -> None:
        """One poll: of the single feed, or (``part``) of one Kafka partition."""
        values = [_message(t) for t in batch]
        polled: list[Any] = values if part is None else [PartitionBatch(part, list(values))]
        for item in _preaggregate(polled, LATENESS, None, self.progress):
            assert isinstance(item, tuple), item  # nothing here is dead-lettered
            group, group_batch = item
            logic = self.groups.get(group)
            if logic is None:
                logic = self.groups[group] = MicrobarLogic(
                    LATENESS, HORIZON, IDLE, self.progress, None, clock=lambda: self.now
                )
            held = self.feeds.get(group_batch.part, 0)
            self.feeds[group_batch.part] = max(held, group_batch.feed_us)
            self._collect(logic.on_batch([group_batch])[0], at_eof=False)

    def timers(self) -> None:
        """Fire every timer due on the wall clock (what Bytewax does after a pause)."""
        for logic in self.groups.values():
            due = logic.notify_at()
            if due is not None and due <= _dt(self.now):
                self._collect(logic.on_notify()[0], at_eof=False)

    def eof(self) -> None:
        for logic in self.groups.values():
            self._collect(logic.on_eof()[0], at_eof=True)

    def _collect(self, items: list[BarRows], at_eof: bool) -> None:
        drained = self.progress.drained_through()
        for item in items:
            for env in item.rows:
                feed = self.feeds.get(self.part_of.get(env.symbol, "feed"))
                self.out.append(Emission(env, feed, drained, at_eof))
            if item.mark is not None:
                self.marks[item.mark.group] = item.mark

    def finals(self) -> dict[tuple[str, int], list[Emission]]:
        rows: dict[tuple[str, int], list[Emission]] = {}
        for e in self.out:
            if e.env.is_final:
                rows.setdefault((e.env.symbol, _us(e.env.event_ts)), []).append(e)
        return rows


def _message(t: TradeTick) -> bytes:
    ts = _dt(t.ts_us)
    return msgspec.json.encode(
        Envelope(ts, ts, t.symbol, t.trade_id, Trade(t.trade_id, t.exchange, t.price, t.size))
    )


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us // US_PER_S, UTC).replace(microsecond=us % US_PER_S)


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * US_PER_S + ts.microsecond


def _check_latest_equals_batch_answer(h: Harness, trades: list[TradeTick]) -> None:
    expected = polars_bars([t._replace(ts_us=t.ts_us - BASE) for t in trades])
    latest: dict[tuple[str, int], Envelope[Microbar]] = {}
    for e in h.out:  # what ClickHouse FINAL keeps: the last row of each key
        latest[(e.env.symbol, _us(e.env.event_ts) - BASE)] = e.env
    assert set(latest) == set(expected)
    for key, (o, hi, lo, c, v, vwap, n) in expected.items():
        b = latest[key]
        p = b.payload
        assert b.is_final
        assert (p.o, p.h, p.l, p.c, p.count) == (o, hi, lo, c, n)
        assert close(p.v, v)
        assert close(p.vwap, vwap)


price = st.floats(1.0, 500.0, allow_nan=False).map(lambda p: round(p, 2))
trade = st.builds(
    TradeTick,
    symbol=st.sampled_from(SYMBOLS),
    ts_us=st.integers(BASE, BASE + 12 * US_PER_S),
    trade_id=st.integers(0, 80),
    exchange=st.just("V"),
    price=price,
    size=st.floats(1.0, 500.0, allow_nan=False).map(lambda s: round(s, 1)),
)
trades_st = st.lists(trade, min_size=1, max_size=40, unique_by=tick_key)


@settings(max_examples=60, deadline=None)
@given(
    trades=trades_st,
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 100), max_size=8),
    stalls=st.lists(st.integers(0, 30 * US_PER_S), min_size=9, max_size=9),
)
def test_any_arrival_order_and_any_stalls_never_close_a_bar_early(
    trades: list[TradeTick], order: Any, cuts: list[int], stalls: list[int]
) -> None:
    """The whole input is pending from the start (a backlog), so the source is never caught up
    before the end, whatever the process's stalls: bars close on the feed's time only, and the
    latest row of every bar is the batch answer (corrections carry late trades)."""
    arrival = list(trades)
    order.shuffle(arrival)
    h = Harness()
    h.progress.mark_source_drained("trades", BASE - 1)  # caught up once, before the backlog
    for batch, stall in zip(split(arrival, cuts), stalls, strict=False):
        h.now += stall  # the process pauses: GC, a slow sink, CPU contention ...
        h.timers()  # ... and its timers fire before the source is read again
        h.deliver(batch)
        h.timers()
    h.now += 60 * US_PER_S
    h.timers()
    h.eof()

    for e in h.out:
        end = _us(e.env.event_ts)
        if e.at_eof:
            continue
        assert e.feed_us is not None
        if e.env.is_final:
            assert e.feed_us - LATENESS >= end, "a bar closed before the feed's time passed it"
        else:
            assert e.feed_us >= end, "a provisional row before the feed's time passed the end"
    for rows in h.finals().values():
        assert [r.env.version for r in rows] == sorted({r.env.version for r in rows})
    _check_latest_equals_batch_answer(h, trades)
    assert len(h.marks) == 16


@settings(max_examples=60, deadline=None)
@given(
    trades=trades_st,
    order=st.randoms(use_true_random=False),
    picks=st.lists(st.booleans(), min_size=20, max_size=20),
    cuts=st.lists(st.integers(0, 100), max_size=8),
    stalls=st.lists(st.integers(0, 30 * US_PER_S), min_size=20, max_size=20),
)
def test_two_partitions_in_any_interleaving_close_each_bar_on_its_partitions_time(
    trades: list[TradeTick], order: Any, picks: list[bool], cuts: list[int], stalls: list[int]
) -> None:
    """As the Kafka source delivers: AAA and BBB are read from partition ``t/0``, CCC and DDD
    from ``t/1`` (the key decides), each partition in any order, the partitions' polls
    interleaved in any way and the process stalling between them with its timers firing. A
    final row never comes before *its* partition's time passed its end plus the lateness, and
    the latest row of every bar is the batch answer."""
    arrival = list(trades)
    order.shuffle(arrival)
    h = Harness()
    h.part_of = {sym: "t/0" if sym in ("AAA", "BBB") else "t/1" for sym in SYMBOLS}
    for part in ("t/0", "t/1"):
        h.progress.mark_source_drained(part, BASE - 1)  # caught up once, before the backlog
    polls = {
        part: split([t for t in arrival if h.part_of[t.symbol] == part], cuts)
        for part in ("t/0", "t/1")
    }
    for pick, stall in zip(picks, stalls, strict=True):
        part = "t/0" if pick else "t/1"
        if not polls[part]:
            part = "t/1" if pick else "t/0"
        if not polls[part]:
            break
        h.now += stall
        h.timers()
        h.deliver(polls[part].pop(0), part)
        h.timers()
    for part in ("t/0", "t/1"):  # what is left, one partition after the other
        for batch in polls[part]:
            h.deliver(batch, part)
    h.now += 60 * US_PER_S
    h.timers()
    h.eof()

    for e in h.out:
        if e.at_eof or not e.env.is_final:
            continue
        assert e.feed_us is not None
        end = _us(e.env.event_ts)
        assert e.feed_us - LATENESS >= end, "a bar closed before its partition's time passed it"
    _check_latest_equals_batch_answer(h, trades)


@settings(max_examples=60, deadline=None)
@given(
    trades=trades_st,
    delays=st.lists(st.integers(0, LATENESS - 1), min_size=40, max_size=40),
    cuts=st.lists(st.integers(0, 100), max_size=8),
    stalls=st.lists(st.integers(0, 10 * US_PER_S), min_size=9, max_size=9),
    naps=st.lists(st.integers(0, 5 * US_PER_S), min_size=9, max_size=9),
)
def test_a_live_feed_with_stalls_closes_every_bar_once_with_its_batch_answer(
    trades: list[TradeTick],
    delays: list[int],
    cuts: list[int],
    stalls: list[int],
    naps: list[int],
) -> None:
    """A live feed: each trade is produced at its event time plus a delay under the lateness
    and read in production order. The process stalls at random, reads everything produced by
    then, reports caught-up only when nothing more was produced, and naps with its timers
    firing. No bar may close before all its trades are read: no correction, every final row is
    the batch answer, and a bar closed on the wall clock was due while the source was caught up.
    """
    produced = sorted(
        ((t.ts_us + delays[i], i) for i, t in enumerate(trades)), key=lambda p: (p[0], p[1])
    )
    queue = [(at, trades[i]) for at, i in produced]
    h = Harness(now=BASE)
    h.progress.mark_source_drained("trades", 0)  # registered, not caught up yet
    for stall, nap in zip(stalls, naps, strict=True):
        if not queue:
            break
        h.now = max(h.now + stall, queue[0][0])
        polled = h.now
        ready = [t for at, t in queue if at <= polled]
        queue = [(at, t) for at, t in queue if at > polled]
        for batch in split(ready, cuts) if ready else []:
            h.deliver(batch)
        h.progress.mark_source_drained("trades", polled)  # everything produced by then is read
        h.timers()
        h.now += nap
        if not queue or queue[0][0] > h.now:
            h.progress.mark_source_drained("trades", h.now)  # nothing more came while napping
        h.timers()
    for _at, t in queue:  # the rest, after the last stall
        h.deliver([t])
    h.eof()

    assert h.progress.late_corrections == 0
    finals = h.finals()
    for (_sym, end), rows in finals.items():
        assert len(rows) == 1, "a bar was closed twice"
        e = rows[0]
        assert e.env.version == 1
        if not e.at_eof:
            by_feed = e.feed_us is not None and e.feed_us - LATENESS >= end
            by_idle = e.drained_us is not None and e.drained_us >= end + IDLE
            assert by_feed or by_idle
    _check_latest_equals_batch_answer(h, trades)


def test_a_quiet_feed_closes_its_last_bar_on_the_wall_clock_only_when_caught_up() -> None:
    h = Harness(now=BASE + US_PER_S // 2)
    h.progress.mark_source_drained("trades", 0)
    h.deliver([TradeTick("AAA", BASE + US_PER_S // 2, 1, "V", 10.0, 1.0)])
    h.now = BASE + 10 * US_PER_S  # the feed went quiet; the bar ending at 1 s is long due ...
    h.timers()
    assert [e.env.is_final for e in h.out] == []  # ... but the source has not caught up since
    h.progress.mark_source_drained("trades", BASE + 2 * US_PER_S)  # caught up, too early
    h.now += US_PER_S
    h.timers()
    assert [e.env.is_final for e in h.out] == []
    h.progress.mark_source_drained("trades", BASE + 4 * US_PER_S)  # ≥ end + idle: may close
    h.now += US_PER_S
    h.timers()
    assert [(e.env.symbol, e.env.is_final, e.env.version) for e in h.out] == [("AAA", True, 1)]
    # its group's rows are complete up to drained − idle: sinks may flush them
    assert h.marks[key_group("AAA")].final_us == BASE + US_PER_S


def test_a_requested_stop_keeps_open_bars_for_the_restart() -> None:
    """SIGINT/SIGTERM end the inputs through EOF: the open bars are not published as they stand
    (they are not final yet) but stay in the snapshot, and the restarted step closes them on the
    feed's time with the trades that arrive after the restart — one final row, no correction."""
    h = Harness(now=BASE + US_PER_S // 2)
    h.progress.mark_source_drained("trades", 0)
    h.deliver([TradeTick("AAA", BASE + US_PER_S // 2, 1, "V", 10.0, 1.0)])
    h.progress.stop_requested.set()
    h.eof()
    assert h.out == []
    snapshots = {group: logic.snapshot() for group, logic in h.groups.items()}
    assert snapshots[key_group("AAA")].symbols, "the open bar is in the snapshot"

    restarted = Harness(now=h.now, progress=TaProgress())
    for group, snapshot in snapshots.items():
        restarted.groups[group] = MicrobarLogic(
            LATENESS, HORIZON, IDLE, restarted.progress, snapshot, clock=lambda: restarted.now
        )
    restarted.deliver([TradeTick("AAA", BASE + US_PER_S * 3 // 4, 2, "V", 11.0, 2.0)])
    restarted.deliver([TradeTick("AAA", BASE + 4 * US_PER_S, 3, "V", 12.0, 1.0)])  # feed passes
    finals = restarted.finals()
    (rows,) = finals.values()
    assert [(e.env.payload.count, e.env.payload.c, e.env.version) for e in rows] == [(2, 11.0, 1)]


def test_the_end_of_the_input_publishes_open_bars() -> None:
    h = Harness(now=BASE + US_PER_S // 2)
    h.deliver([TradeTick("AAA", BASE + US_PER_S // 2, 1, "V", 10.0, 1.0)])
    h.eof()
    assert [(e.env.symbol, e.env.is_final) for e in h.out] == [("AAA", True)]


def test_quotes_are_complete_only_once_every_quote_partition_was_heard_from() -> None:
    """With several workers, one quote partition's chunks can reach a key group before the
    other's: until every partition the process reads has reported, no quote time is known to be
    complete, so no bar is released with quotes missing (the 2-worker run once signalled with
    empty imbalance fields because of this)."""
    progress = TaProgress()
    for part in ("q/0", "q/1"):
        progress.mark_source_drained(part, 0)
    logic = IndicatorLogic(("PT1S",), TaSettings(), progress, None)
    lateness = TaSettings().allowed_lateness_ms * 1000
    t = BASE + 10 * US_PER_S
    logic.on_batch([QuoteChunk({}, {}, True, t, t, "q/0", t)])
    assert logic._quote_watermark() is None, "q/1 has not been heard from"
    logic.on_batch([QuoteChunk({}, {}, True, t - US_PER_S, t - US_PER_S, "q/1", t - US_PER_S)])
    assert logic._quote_watermark() == t - US_PER_S - lateness, "the slowest partition counts"
