"""The TA operators in-process (no Kafka): wiring, lanes, quotes, timers, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.ta_pipeline import ta_pipeline
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.events import Bar, Envelope, Quote, Trade, Window

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def trade(sym: str, sec: float, tid: int, price: float, size: float = 10.0) -> bytes:
    ts = T0 + timedelta(seconds=sec)
    return msgspec.json.encode(Envelope(ts, ts, sym, tid, Trade(tid, "V", price, size)))


def quote(sym: str, sec: float, bid: float, ask: float) -> bytes:
    ts = T0 + timedelta(seconds=sec)
    return msgspec.json.encode(Envelope(ts, ts, sym, 0, Quote("V", bid, 300.0, "Q", ask, 400.0)))


def minute_bar(kind: str, minute: int, close: float) -> bytes:
    end = T0 + timedelta(minutes=minute)
    w = Window("PT1M", start=end - timedelta(minutes=1), end=end)
    b = Bar(kind, close, close, close, close, 100.0, 3, close)  # type: ignore[arg-type]
    return msgspec.json.encode(Envelope(end, end, "AAA", minute, b, window=w))


def run(
    trades: list[Any],
    quotes: list[Any],
    bars: list[Any] | None,
    settings: TaSettings,
    batch: int = 50,
) -> tuple[list[Any], list[Any], list[Any], TaProgress]:
    flow = Dataflow("ta_test")
    progress = TaProgress()
    out = ta_pipeline(
        "ta",
        op.input("trades", flow, TestingSource(trades, batch)),
        op.input("quotes", flow, TestingSource(quotes, batch)),
        None if bars is None else op.input("bars", flow, TestingSource(bars, batch)),
        settings,
        progress,
    )
    mb: list[Any] = []
    sg: list[Any] = []
    dl: list[Any] = []
    op.output("mb", out.microbars, TestingSink(mb))
    op.output("sg", out.signals, TestingSink(sg))
    op.output("dl", out.dead_letters, TestingSink(dl))
    run_main(flow)  # type: ignore[no-untyped-call]
    return mb, sg, dl, progress


def test_bars_signals_quotes_and_lanes_end_to_end() -> None:
    trades = [
        trade("AAA", 0.2, 1, 10.0, 1.0),
        trade("AAA", 0.9, 2, 12.0, 3.0),
        trade("AAA", 0.5, 3, 11.0, 1.0),  # out of order, same second
        trade("AAA", 1.5, 4, 13.0),
        b"not json",
        trade("AAA", 3.2, 5, 14.0),  # watermark 1.2 s: closes [0, 1)
    ]
    quotes = [quote("AAA", 0.4, 9.9, 10.1), quote("AAA", 0.95, 10.9, 11.1), quote("AAA", 5.0, 1, 2)]
    bars = [
        minute_bar("bar", 1, 50.0),
        minute_bar("updated_bar", 1, 51.0),
        minute_bar("daily_bar", 1, 52.0),
        minute_bar("bar", 2, -1.0),  # decodes, but the indicators refuse it
    ]
    mb, sg, dl, progress = run(trades, quotes, bars, TaSettings())

    first = mb[0]
    assert (first.event_ts, first.window.size, first.version) == (
        T0 + timedelta(seconds=1),
        "PT1S",
        1,
    )
    p = first.payload
    assert (p.o, p.h, p.l, p.c, p.v, p.count) == (10.0, 12.0, 10.0, 12.0, 5.0, 3)
    assert p.vwap == (10.0 + 36.0 + 11.0) / 5.0
    final = [b for b in mb if b.is_final]
    assert [b.event_ts for b in final] == [T0 + timedelta(seconds=s) for s in (1, 2, 4)]
    assert final == mb  # a replay of the past: the feed is not live, no provisional rows

    one_s = [s for s in sg if s.window.size == "PT1S"]
    assert [s.event_ts for s in one_s] == [b.event_ts for b in final]
    assert all(s.is_final for s in sg)
    # the latest quote at or before the bar end (0.95 s), not the later one at 5 s
    assert (one_s[0].payload.imbalance_bid_px, one_s[0].payload.imbalance_ask_px) == (10.9, 11.1)
    assert one_s[0].seq % 10 == 1
    assert {s.symbol for s in sg} == {"AAA"}

    one_m = [s for s in sg if s.window.size == "PT1M"]
    assert [(s.event_ts, s.version, s.payload.close) for s in one_m] == [
        (T0 + timedelta(minutes=1), 1, 50.0),
        (T0 + timedelta(minutes=1), 2, 51.0),  # updated bar: same key, higher version
    ]
    assert one_m[0].seq == one_m[1].seq != one_s[0].seq

    assert sorted(d.reason for d in dl) == ["invalid_bar", "invalid_message"]
    assert progress.dead_letters == 2
    assert progress.bars == 3


def test_a_live_feed_publishes_a_provisional_row_before_the_final_one() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(seconds=2)  # the feed's time stays within the lateness of the clock

    def at(sec: float, tid: int, price: float) -> bytes:
        ts = base + timedelta(seconds=sec)
        return msgspec.json.encode(Envelope(ts, ts, "AAA", tid, Trade(tid, "V", price, 1.0)))

    trades = [at(0.5, 1, 10.0), at(1.2, 2, 11.0), at(0.9, 3, 12.0)]  # the last within lateness
    mb, _sg, _dl, progress = run(trades, [], None, TaSettings(allowed_lateness_ms=30_000), 1)
    assert [(b.event_ts - base, b.is_final, b.payload.c, b.payload.count) for b in mb] == [
        (timedelta(seconds=1), False, 10.0, 1),  # the feed (1.2 s) passed the end
        (timedelta(seconds=1), True, 12.0, 2),  # end of input: final, with the later trade
        (timedelta(seconds=2), True, 11.0, 1),
    ]
    assert (progress.provisional, progress.bars, progress.late_corrections) == (1, 2, 0)


def test_a_quiet_symbol_closes_its_bar_on_the_feeds_time() -> None:
    """AAA trades once; BBB's trades move the feed's time past AAA's bar: no timer needed."""
    trades = [trade("AAA", 0.5, 1, 10.0), trade("BBB", 2.9, 2, 20.0), trade("BBB", 3.2, 3, 21.0)]
    emitted: list[tuple[str, float, bool]] = []
    flow = Dataflow("feed_time_test")
    out = ta_pipeline(
        "ta",
        op.input("trades", flow, TestingSource(trades, 1)),
        op.input("quotes", flow, TestingSource([], 1)),
        None,
        TaSettings(),
        TaProgress(),
    )
    op.inspect(
        "seen",
        out.microbars,
        lambda _s, b: emitted.append((b.symbol, (b.event_ts - T0).total_seconds(), b.is_final)),
    )
    op.output("sink", out.microbars, TestingSink([]))
    run_main(flow)  # type: ignore[no-untyped-call]
    assert emitted == [
        ("AAA", 1.0, True),  # feed 3.2 s passed end + 2 s lateness: final, AAA still quiet
        ("BBB", 3.0, True),  # end of input closes the rest
        ("BBB", 4.0, True),
    ]


def test_a_kept_quote_whose_payload_is_not_a_quote_is_dead_lettered_whole() -> None:
    bad = quote("AAA", 0.5, 9.9, 10.1).replace(b'"bid_price":9.9,', b'"bid_price":"x",')
    trades = [trade("AAA", 0.2, 1, 10.0), trade("AAA", 3.2, 2, 11.0)]
    mb, sg, dl, progress = run(trades, [bad, quote("AAA", 3.5, 1, 2)], None, TaSettings())
    assert [(d.stage, d.reason, d.raw, d.symbol) for d in dl] == [
        ("ta_indicators", "invalid_message", bad, "AAA")
    ]
    assert progress.dead_letters == 1
    first = sg[0].payload
    assert (first.close, first.imbalance_bid_px) == (10.0, None)  # the bad quote is not used
    assert len(mb) == len(sg) == 2


def test_the_bars_sinks_get_each_bar_before_the_indicator_step_computes_its_signal() -> None:
    """``bar_sinks`` are built before the indicator step, and Bytewax runs a worker's steps in
    build order: a bar reaches them before its signal is computed (the latency of the bars'
    rows does not include the indicators'). Counted by the progress the indicator step keeps."""
    trades = [
        trade(sym, sec + 0.5, 10 * sec + i, 10.0 + sec)
        for sec in range(8)
        for i, sym in enumerate(("AAA", "BBB", "CCC"))
    ]
    quotes = [quote(sym, sec + 0.6, 9.9, 10.1) for sec in range(8) for sym in ("AAA", "BBB", "CCC")]
    flow = Dataflow("ta_order")
    progress = TaProgress()
    seen: list[tuple[int, int]] = []  # (bar end in s, signals computed when the sink got it)

    def bar_sinks(bars: Any, _updates: Any) -> None:
        at = op.map("at", bars, lambda e: (int(e.event_ts.timestamp()), progress.signals))
        op.output("bars_seen", at, TestingSink(seen))

    out = ta_pipeline(
        "ta",
        op.input("trades", flow, TestingSource(trades, 3)),  # one second per batch
        op.input("quotes", flow, TestingSource(quotes, 3)),
        None,
        TaSettings(allowed_lateness_ms=0),
        progress,
        bar_sinks,
    )
    signals: list[Any] = []
    op.output("sg", out.signals, TestingSink(signals))
    run_main(flow)  # type: ignore[no-untyped-call]

    assert len(seen) == 24
    assert len(signals) == 24
    first_end = min(end for end, _ in seen)
    for end, computed in seen:
        # every signal computed so far belongs to an earlier second: 3 symbols a second
        assert computed <= 3 * (end - first_end), (end, computed)
