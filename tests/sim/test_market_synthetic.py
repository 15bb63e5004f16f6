"""The seeded synthetic market: determinism, market shape, bars, halts, quote source."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from torghut.sim.market import SyntheticMarket
from torghut.sim.market.wire import Message
from torghut.sim.quotes import QuoteSource

SYMBOLS = ["AAPL", "MSFT", "NVDA", "SPY", "TSLA"]
MINUTE = 60_000_000_000


def _all(market: SyntheticMarket) -> list[Message]:
    out: list[Message] = []
    while not market.exhausted:
        out.extend(market.take(limit=1000))
    return out


def test_same_seed_same_bytes_whatever_the_pacing() -> None:
    by_count = _all(SyntheticMarket(7, SYMBOLS, rate=200, max_events=10_000))
    stepped = SyntheticMarket(7, SYMBOLS, rate=200, max_events=10_000)
    by_clock: list[Message] = []
    clock = stepped.start_ns
    while not stepped.exhausted:
        clock += 250_000_000  # a realtime pump's ticks
        by_clock.extend(stepped.take(until_ns=clock))
    assert [m.encoded("json") for m in by_count] == [m.encoded("json") for m in by_clock]
    other = _all(SyntheticMarket(8, SYMBOLS, rate=200, max_events=10_000))
    assert [m.encoded("json") for m in other] != [m.encoded("json") for m in by_count]


def test_take_respects_until_and_limit() -> None:
    market = SyntheticMarket(1, SYMBOLS, rate=1000)
    first = market.take(until_ns=market.start_ns + 1_000_000_000)
    assert 800 < len(first) < 1200
    assert all(m.t_ns <= market.start_ns + 1_000_000_000 for m in first)
    assert len(market.take(limit=10)) == 10
    with pytest.raises(ValueError, match="endless"):
        market.take()


def test_every_message_has_a_unique_identity_and_trade_ids_rise_per_symbol() -> None:
    messages = _all(
        SyntheticMarket(
            3,
            [f"S{i:03d}" for i in range(300)],
            rate=5000,
            max_events=30_000,
            updated_bar_probability=0.3,
            halt_probability=0.01,
        )
    )
    identities = [m.identity for m in messages]
    assert len(identities) == len(set(identities))
    last_id: dict[str, int] = {}
    for m in messages:
        if m.type == "t":
            assert m.fields["i"] > last_id.get(m.symbol, 0)
            last_id[m.symbol] = m.fields["i"]
    assert len(last_id) == 300


def test_quotes_and_trades_look_like_a_market() -> None:
    messages = _all(
        SyntheticMarket(
            11,
            SYMBOLS,
            rate=500,
            max_events=20_000,
            updated_bar_probability=0.0,
            halt_probability=0.0,
        )
    )
    touch: dict[str, tuple[float, float]] = {}
    round_lots = odd_lots = 0
    kinds = Counter(m.type for m in messages)
    assert kinds["q"] > kinds["t"] > 5_000 * 0.6
    for m in messages:
        f = m.fields
        assert list(f)[:2] == ["T", "S"]
        if m.type == "q":
            assert f["bp"] < f["ap"]
            assert round(f["bp"] * 100) == pytest.approx(f["bp"] * 100, abs=1e-6)
            assert round(f["ap"] * 100) == pytest.approx(f["ap"] * 100, abs=1e-6)
            spread_bps = (f["ap"] - f["bp"]) / ((f["ap"] + f["bp"]) / 2) * 1e4
            assert spread_bps < 20 or f["ap"] - f["bp"] <= 0.011
            assert f["bs"] > 0
            assert f["as"] > 0
            touch[m.symbol] = (f["bp"], f["ap"])
        elif m.type == "t":
            bid, ask = touch[m.symbol]
            assert bid - 1e-9 <= f["p"] <= ask + 1e-9
            if f["s"] % 100 == 0:
                round_lots += 1
                assert f["c"] == ["@"]
            else:
                odd_lots += 1
                assert f["c"] == ["@", "I"]
    assert round_lots > odd_lots > 1000


def test_minute_bars_aggregate_the_trades_and_updated_bars_add_late_prints() -> None:
    messages = _all(
        SyntheticMarket(
            5,
            SYMBOLS,
            rate=100,
            max_events=30_000,
            updated_bar_probability=0.5,
            halt_probability=0.0,
        )
    )
    trades: dict[tuple[str, int], list[dict]] = defaultdict(list)
    published: dict[tuple[str, int], dict] = {}
    updated = 0
    for m in messages:
        f = m.fields
        key = (m.symbol, f["t"] - f["t"] % MINUTE)
        if m.type == "t":
            assert key not in published or published[key]["T"] in ("b", "u")
            trades[key].append(f)
        elif m.type in ("b", "u"):
            assert f["t"] % MINUTE == 0
            prints = trades[(m.symbol, f["t"])]
            assert f["n"] == len(prints)
            assert f["v"] == sum(p["s"] for p in prints)
            assert f["o"] == prints[0]["p"]
            assert f["c"] == prints[-1]["p"]
            assert f["h"] == max(p["p"] for p in prints)
            assert f["l"] == min(p["p"] for p in prints)
            vwap = sum(p["p"] * p["s"] for p in prints) / f["v"]
            assert f["vw"] == pytest.approx(vwap, abs=1e-4)
            if m.type == "u":
                assert published[(m.symbol, f["t"])]["n"] < f["n"]
                updated += 1
            published[(m.symbol, f["t"])] = f
    assert updated > 10
    assert len(published) == 5 * 5  # five symbols over five virtual minutes
    assert {key for key in trades} == set(published)


def test_daily_bars_run_over_the_new_york_day() -> None:
    messages = _all(SyntheticMarket(5, ["AAPL"], rate=2, max_events=2_000, halt_probability=0.0))
    dailies = [m.fields for m in messages if m.type == "d"]
    assert len(dailies) > 10
    assert {d["t"] for d in dailies} == {1_709_614_800_000_000_000}  # 2024-03-05T05:00:00Z
    assert [d["n"] for d in dailies] == sorted(d["n"] for d in dailies)
    trades = [m.fields for m in messages if m.type == "t"]
    assert dailies[-1]["n"] == len(trades)
    assert dailies[-1]["v"] == sum(t["s"] for t in trades)


def test_halts_silence_the_symbol_until_resumption() -> None:
    messages = _all(SyntheticMarket(9, SYMBOLS, rate=5, max_events=20_000, halt_probability=0.05))
    statuses = Counter(m.fields["sm"] for m in messages if m.type == "s")
    assert statuses["Trading Halt"] >= 4
    assert statuses["Trading Resumption"] >= 4
    halted: set[str] = set()
    for m in messages:
        f = m.fields
        if m.type == "s":
            assert set(f) == {"T", "S", "sc", "sm", "rc", "rm", "z", "t"}
            if f["sm"] == "Trading Halt":
                assert f["sc"] in ("H", "2")
                halted.add(m.symbol)
            else:
                assert f["sc"] in ("T", "3")
                halted.discard(m.symbol)
        elif m.type in ("t", "q") and m.symbol in halted:
            raise AssertionError(f"{m} while {m.symbol} is halted")


def test_latest_quote_is_the_last_published_touch() -> None:
    market = SyntheticMarket(2, SYMBOLS, rate=1000)
    source: QuoteSource = market
    assert source.latest_quote("AAPL") is None
    messages = market.take(limit=2000)
    last = [m for m in messages if m.type == "q" and m.symbol == "AAPL"][-1].fields
    touch = source.latest_quote("AAPL")
    assert touch is not None
    assert (touch.bid_price, touch.bid_size, touch.ask_price, touch.ask_size) == (
        last["bp"],
        last["bs"],
        last["ap"],
        last["as"],
    )
    assert int(touch.ts.timestamp() * 1e6) == last["t"] // 1000
    assert source.latest_quote("NOPE") is None


def test_finite_market_closes_its_last_minute() -> None:
    market = SyntheticMarket(
        4, ["AAPL"], rate=10, max_events=25, halt_probability=0.0, updated_bar_probability=0.0
    )
    messages = _all(market)
    assert market.exhausted
    assert market.take(limit=5) == []
    assert market.events == 25
    trades = [m for m in messages if m.type == "t"]
    bars = [m for m in messages if m.type == "b"]
    assert sum(b.fields["n"] for b in bars) == len(trades)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one symbol"):
        SyntheticMarket(1, [])
    with pytest.raises(ValueError, match="distinct"):
        SyntheticMarket(1, ["A", "A"])
    with pytest.raises(ValueError, match="rate"):
        SyntheticMarket(1, ["A"], rate=0)
