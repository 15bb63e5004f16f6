"""Alpaca frames → envelopes: every field mapped, bad messages isolated, seq rising."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgpack
import pytest

from operators.alpaca_decode import Frame, FrameDecoder
from torghut.events import Bar, Quote, Trade, TradingStatus, Window
from torghut.sim.market import SyntheticMarket
from torghut.sim.market.wire import encode_frame

RECEIVED = datetime(2024, 3, 5, 15, 2, 12, tzinfo=UTC)
T_NS = 1_709_650_931_418_273_491  # 2024-03-05T15:02:11.418273491Z

TRADE = {
    "T": "t",
    "S": "AAPL",
    "i": 52983525,
    "x": "V",
    "p": 187.42,
    "s": 100,
    "c": ["@"],
    "z": "C",
}
QUOTE = {
    "T": "q", "S": "AAPL", "bx": "V", "bp": 187.41, "bs": 200, "ax": "V", "ap": 187.44,
    "as": 300, "c": ["R"], "z": "C",
}  # fmt: skip
BAR = {"T": "b", "S": "SPY", "o": 510.11, "h": 510.3, "l": 510.02, "c": 510.25, "v": 48213,
       "n": 512, "vw": 510.187}  # fmt: skip
STATUS = {"T": "s", "S": "XYZ", "sc": "H", "sm": "Trading Halt", "rc": "LUDP",
          "rm": "Volatility Trading Pause", "z": "C"}  # fmt: skip


def msgpack_frame(*messages: dict[str, object], t_ns: int = T_NS) -> Frame:
    stamped = [{**m, "t": msgpack.Timestamp.from_unix_nano(t_ns)} for m in messages]
    return Frame(RECEIVED, msgpack.packb(stamped), binary=True)


def json_frame(*messages: dict[str, object], t: str = "2024-03-05T15:02:11.418273491Z") -> Frame:
    return Frame(RECEIVED, json.dumps([{**m, "t": t} for m in messages]).encode(), binary=False)


@pytest.mark.parametrize("make", [msgpack_frame, json_frame])
def test_every_published_type_is_translated_field_by_field(make: object) -> None:
    out = FrameDecoder().decode(make(TRADE, QUOTE, STATUS))  # type: ignore[operator]
    assert out.dead_letters == []
    assert [family for family, _ in out.events] == ["trades", "quotes", "status"]
    (_, trade), (_, quote), (_, status) = out.events
    ts = datetime(2024, 3, 5, 15, 2, 11, 418273, tzinfo=UTC)
    assert trade.event_ts == ts
    assert trade.ingest_ts == RECEIVED
    assert trade.symbol == "AAPL"
    assert trade.payload == Trade(52983525, "V", 187.42, 100.0, ("@",), "C")
    assert quote.payload == Quote("V", 187.41, 200.0, "V", 187.44, 300.0, ("R",), "C")
    assert status.symbol == "XYZ"
    assert status.payload == TradingStatus(
        "H", "Trading Halt", "LUDP", "Volatility Trading Pause", "C"
    )
    assert trade.source == "alpaca"
    assert trade.is_final


@pytest.mark.parametrize(
    ("tag", "kind", "size", "span", "final", "version"),
    [
        ("b", "bar", "PT1M", timedelta(minutes=1), True, 1),
        ("u", "updated_bar", "PT1M", timedelta(minutes=1), True, 2),
        ("d", "daily_bar", "P1D", timedelta(days=1), False, 1),
    ],
)
def test_bars_carry_their_window_and_end_time(
    tag: str, kind: str, size: str, span: timedelta, final: bool, version: int
) -> None:
    start_ns = 1_709_650_920_000_000_000  # 2024-03-05T15:02:00Z
    out = FrameDecoder().decode(msgpack_frame({**BAR, "T": tag}, t_ns=start_ns))
    [(family, env)] = out.events
    start = datetime(2024, 3, 5, 15, 2, tzinfo=UTC)
    assert family == "bars"
    assert env.payload == Bar(kind, 510.11, 510.3, 510.02, 510.25, 48213.0, 512, 510.187)  # type: ignore[arg-type]
    assert env.window == Window(size=size, start=start, end=start + span)
    assert env.event_ts == start + span
    assert (env.is_final, env.version) == (final, version)


@pytest.mark.parametrize("make", [msgpack_frame, json_frame])
def test_a_bad_message_is_dead_lettered_alone_with_its_own_bytes(make: object) -> None:
    broken = {**TRADE, "i": "not-an-id"}
    out = FrameDecoder().decode(make(TRADE, broken, QUOTE))  # type: ignore[operator]
    assert [f for f, _ in out.events] == ["trades", "quotes"]
    [dead] = out.dead_letters
    assert dead.reason == "invalid_message"
    assert dead.symbol == "AAPL"
    assert "`$.i`" in dead.error
    assert dead.received_at == RECEIVED
    decoded = msgpack.unpackb(dead.raw) if make is msgpack_frame else json.loads(dead.raw)
    assert decoded["i"] == "not-an-id"


def test_unknown_and_ignored_types() -> None:
    correction = {"T": "c", "S": "AAPL", "x": "D", "oi": 1, "ci": 2}
    luld = {"T": "l", "S": "AAPL", "u": 1.0, "d": 0.5, "i": "B", "z": "C"}
    mystery = {"T": "zz", "S": "AAPL"}
    out = FrameDecoder().decode(msgpack_frame(TRADE, correction, luld, mystery))
    assert [f for f, _ in out.events] == ["trades"]
    assert out.ignored == 2
    [dead] = out.dead_letters
    assert dead.reason == "unknown_type"


@pytest.mark.parametrize(
    ("data", "binary"),
    [(b"\xc1\x93\xc1", True), (b'[{"T":"t","S":', False), (b"\x93\x01\x02", True), (b"{}", False)],
)
def test_a_frame_that_does_not_parse_is_one_dead_letter_with_all_its_bytes(
    data: bytes, binary: bool
) -> None:
    out = FrameDecoder().decode(Frame(RECEIVED, data, binary))
    assert out.events == []
    [dead] = out.dead_letters
    assert dead.raw == data
    assert dead.reason in ("malformed_frame", "invalid_message")


def test_seq_rises_across_frames_and_is_floored_at_receive_time() -> None:
    decoder = FrameDecoder()
    first = decoder.decode(msgpack_frame(TRADE, QUOTE))
    later = Frame(RECEIVED + timedelta(seconds=1), msgpack_frame(TRADE).data)
    second = decoder.decode(later)
    seqs = [env.seq for _, env in first.events + second.events]
    floor = int(RECEIVED.timestamp() * 1_000_000)
    assert seqs == [floor + 1, floor + 2, floor + 1_000_001]
    earlier = Frame(RECEIVED - timedelta(seconds=5), msgpack_frame(TRADE).data)
    assert decoder.decode(earlier).events[0][1].seq == floor + 1_000_002


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_every_simulated_message_decodes(codec: str) -> None:
    market = SyntheticMarket(3, ["AAPL", "MSFT", "XYZ"], rate=20, halt_probability=0.05)
    messages = market.take(limit=3000)
    frame = Frame(RECEIVED, encode_frame(messages, codec), binary=codec == "msgpack")  # type: ignore[arg-type]
    out = FrameDecoder().decode(frame)
    assert out.dead_letters == []
    assert len(out.events) + out.ignored == len(messages)
    kinds = {m.type for m in messages}
    assert {"t", "q", "b", "d"} <= kinds
    for message, (_, env) in zip(
        [m for m in messages if m.type in "tqbuds"], out.events, strict=True
    ):
        assert env.symbol == message.symbol
        if env.window is None:  # bars carry their end; everything else its own time, to the µs
            since_epoch = env.event_ts - datetime(1970, 1, 1, tzinfo=UTC)
            assert since_epoch // timedelta(microseconds=1) == message.t_ns // 1000


LAST_NS_OF_A_SECOND = 1_709_650_931_999_999_600  # 2024-03-05T15:02:11.9999996Z


@pytest.mark.parametrize(
    "frame",
    [
        msgpack_frame(TRADE, t_ns=LAST_NS_OF_A_SECOND),
        json_frame(TRADE, t="2024-03-05T15:02:11.9999996Z"),
    ],
    ids=["msgpack", "json"],
)
def test_nanoseconds_are_truncated_so_a_trade_stays_in_its_second(frame: Frame) -> None:
    """msgspec alone rounds to the nearest µs: this trade would have moved to 15:02:12."""
    [(family, env)] = FrameDecoder().decode(frame).events
    assert family == "trades"
    assert env.event_ts == datetime(2024, 3, 5, 15, 2, 11, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (msgpack.Timestamp(1_709_650_931, 0), datetime(2024, 3, 5, 15, 2, 11, tzinfo=UTC)),
        (
            msgpack.Timestamp(1_709_650_931, 418_273_491),
            datetime(2024, 3, 5, 15, 2, 11, 418_273, tzinfo=UTC),
        ),
        (msgpack.Timestamp(2**34 + 5, 7_000), datetime(2514, 5, 30, 1, 53, 9, 7, tzinfo=UTC)),
        (
            msgpack.Timestamp(-1, 999_999_999),
            datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        ),
    ],
    ids=["32-bit", "64-bit", "96-bit", "before-1970"],
)
def test_every_msgpack_timestamp_format_is_read(
    value: msgpack.Timestamp, expected: datetime
) -> None:
    frame = Frame(RECEIVED, msgpack.packb([{**TRADE, "t": value}]), binary=True)
    [(_, env)] = FrameDecoder().decode(frame).events
    assert env.event_ts == expected


@pytest.mark.parametrize("make", [msgpack_frame, json_frame])
def test_a_message_with_a_bad_timestamp_is_dead_lettered_alone(make: object) -> None:
    bad_t: object = msgpack.ExtType(5, b"\x00" * 8) if make is msgpack_frame else "11:02 today"
    frame = make(TRADE, QUOTE)  # type: ignore[operator]
    messages = msgpack.unpackb(frame.data) if frame.binary else json.loads(frame.data)
    messages[0]["t"] = bad_t
    data = msgpack.packb(messages) if frame.binary else json.dumps(messages).encode()
    out = FrameDecoder().decode(Frame(RECEIVED, data, frame.binary))
    assert [f for f, _ in out.events] == ["quotes"]
    [dead] = out.dead_letters
    assert dead.reason == "invalid_message"
    assert dead.symbol == "AAPL"
