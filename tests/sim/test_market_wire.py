"""Wire format: RFC 3339 nanosecond times, frames in both codecs, message identity."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from torghut.sim.market.wire import (
    Message,
    control_frame,
    decode_client_frame,
    encode_frame,
    format_rfc3339_ns,
    parse_rfc3339_ns,
)

T0 = 1_709_649_127_000_000_000  # 2024-03-05T14:32:07Z


def _trade(i: int, t_ns: int = T0) -> Message:
    return Message(
        {
            "T": "t",
            "S": "AAPL",
            "i": i,
            "x": "V",
            "p": 187.42,
            "s": 100,
            "c": ["@"],
            "z": "C",
            "t": t_ns,
        }
    )


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (T0, "2024-03-05T14:32:07Z"),
        (T0 + 200_000_000, "2024-03-05T14:32:07.2Z"),
        (T0 + 123_456_789, "2024-03-05T14:32:07.123456789Z"),
        (T0 + 1, "2024-03-05T14:32:07.000000001Z"),
    ],
)
def test_rfc3339_trims_trailing_zeros_like_go(ns: int, text: str) -> None:
    assert format_rfc3339_ns(ns) == text
    assert parse_rfc3339_ns(text) == ns


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_rfc3339_round_trip(ns: int) -> None:
    text = format_rfc3339_ns(ns)
    assert parse_rfc3339_ns(text) == ns
    # the standard library reads the same instant (it truncates beyond microseconds); compared
    # in whole microseconds, since a float timestamp near 2100 cannot hold them exactly
    parsed = datetime.fromisoformat(text).replace(tzinfo=UTC)
    assert (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) == ns // 1000


def test_rfc3339_accepts_offsets_and_rejects_garbage() -> None:
    assert parse_rfc3339_ns("2024-03-05T09:32:07.5-05:00") == T0 + 500_000_000
    for bad in (
        "2024-03-05",
        "2024-03-05T14:32:07",
        "2024-03-05T14:32:07.Z",
        "2024-03-05T14:32:07.1234567891Z",
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - one error type for every bad input
            parse_rfc3339_ns(bad)


def test_json_frame_is_an_array_with_t_first_and_string_times() -> None:
    frame = encode_frame([_trade(1), _trade(2, T0 + 5)], "json")
    decoded = json.loads(frame)
    assert [next(iter(m)) for m in decoded] == ["T", "T"]
    assert decoded[0]["t"] == "2024-03-05T14:32:07Z"
    assert decoded[1]["t"] == "2024-03-05T14:32:07.000000005Z"
    assert decoded[1]["i"] == 2


@pytest.mark.parametrize("count", [1, 15, 16, 300, 70_000])
def test_msgpack_frame_array_header_for_every_size(count: int) -> None:
    pool = [_trade(i, T0 + i) for i in range(300)]  # encodings are cached per message
    messages = [pool[i % 300] for i in range(count)]
    decoded = msgpack.unpackb(encode_frame(messages, "msgpack"))
    assert len(decoded) == count
    assert next(iter(decoded[-1])) == "T"
    assert isinstance(decoded[-1]["t"], msgpack.Timestamp)
    assert decoded[-1]["t"].to_unix_nano() == T0 + (count - 1) % 300
    assert decoded[-1]["i"] == (count - 1) % 300


def test_control_frames_in_both_codecs() -> None:
    obj = {"T": "success", "msg": "connected"}
    assert json.loads(control_frame(obj, "json")) == [obj]
    assert msgpack.unpackb(control_frame(obj, "msgpack")) == [obj]


def test_client_frames_decode_by_frame_type() -> None:
    body = {"action": "auth", "key": "k", "secret": "s"}
    assert decode_client_frame(json.dumps(body)) == body
    assert decode_client_frame(msgpack.packb(body)) == body
    with pytest.raises(ValueError):  # noqa: PT011 - msgpack and json both raise ValueError
        decode_client_frame(b"\xc1")
    with pytest.raises(ValueError):  # noqa: PT011
        decode_client_frame("{nope")


def test_message_wire_round_trip_and_identity() -> None:
    message = _trade(9, T0 + 123)
    again = Message.from_wire(message.to_wire())
    assert again == message
    assert again.identity == ("t", "AAPL", 9)
    bar = Message(
        {
            "T": "u",
            "S": "AAPL",
            "o": 1.0,
            "h": 1.0,
            "l": 1.0,
            "c": 1.0,
            "v": 5,
            "n": 2,
            "vw": 1.0,
            "t": T0,
        }
    )
    assert bar.identity == ("u", "AAPL", T0, 2)
    with pytest.raises(ValueError, match="'t'"):
        Message.from_wire({"T": "t", "S": "AAPL"})
