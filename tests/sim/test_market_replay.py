"""Recorded sessions: file round trip, recorder against a live simulator, paced replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.sim.test_market_support import KEY, SECRET, Client, running, wire
from torghut.sim.market import (
    SessionReplay,
    SyntheticMarket,
    read_session,
    record_session,
    write_session,
)
from torghut.sim.market.wire import Message

T0 = 1_709_649_000_000_000_000


def _quote(symbol: str, t_ns: int, bid: float) -> Message:
    return Message(
        {
            "T": "q",
            "S": symbol,
            "bx": "V",
            "bp": bid,
            "bs": 100,
            "ax": "V",
            "ap": bid + 0.02,
            "as": 200,
            "c": ["R"],
            "z": "C",
            "t": t_ns,
        }
    )


def test_session_file_round_trip(tmp_path: Path) -> None:
    market = SyntheticMarket(3, ["AAPL", "MSFT"], rate=200, max_events=3000)
    messages: list[Message] = []
    while not market.exhausted:
        messages.extend(market.take(limit=500))
    path = tmp_path / "session.jsonl"
    assert write_session(path, messages) == len(messages)
    lines = path.read_text().splitlines()
    assert lines[0].startswith('{"T":')
    assert read_session(path) == messages


def test_bad_session_lines_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"T":"q","S":"A","t":"2024-03-05T14:30:00Z"}\n\n[1]\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        read_session(path)


def test_replay_keeps_file_order_and_paces_by_the_running_max_time() -> None:
    late = Message(
        {"T": "t", "S": "A", "i": 1, "x": "V", "p": 1.0, "s": 1, "c": ["@"], "z": "C", "t": T0 + 5}
    )
    messages = [_quote("A", T0 + 10, 1.0), late, _quote("A", T0 + 20, 1.01)]
    replay = SessionReplay(messages)
    assert replay.start_ns == T0 + 10
    assert replay.latest_quote("A") is None
    assert replay.take(until_ns=T0 + 9) == []
    assert replay.take(until_ns=T0 + 10) == messages[:2]
    touch = replay.latest_quote("A")
    assert touch is not None
    assert (touch.bid_price, touch.ask_price) == (1.0, 1.02)
    assert replay.take(limit=5) == messages[2:]
    assert replay.exhausted


def test_record_a_live_session_then_replay_it_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with running(rate=3000, pacing="fast", batch_size=50) as (sim, url):
        count = asyncio.run(
            record_session(
                url,
                KEY,
                SECRET,
                {"trades": ["*"], "quotes": ["AAPL"]},
                path,
                max_messages=400,
                timeout_s=20,
            )
        )
        assert count == 400
        recorded = read_session(path)
        wait_until(lambda: len(sim.sent()) >= 400, 5)
        assert recorded == sim.sent()[:400]
    with running(source=SessionReplay(path), pacing="fast", batch_size=30) as (replay_sim, url):
        with Client(url) as c:
            c.handshake()
            c.subscribe(trades=["*"], quotes=["*"])
            got = c.data(400)
        assert got == wire(recorded)
        assert replay_sim.wait_exhausted(5)


def test_replay_at_a_speed_factor(tmp_path: Path) -> None:
    # Two virtual seconds of quotes, replayed four times faster than recorded.
    messages = [_quote("A", T0 + k * 100_000_000, 10 + k / 100) for k in range(21)]
    path = tmp_path / "paced.jsonl"
    write_session(path, messages)
    with running(source=SessionReplay(path), speed=4.0) as (sim, url), Client(url) as c:
        c.handshake()
        began = time.monotonic()  # before subscribing: the replay clock starts with it
        c.subscribe(quotes=["A"])
        got = c.data(21)
        elapsed = time.monotonic() - began
        assert sim.wait_exhausted(5)
    assert got == wire(messages)
    assert 0.4 <= elapsed < 2.0
