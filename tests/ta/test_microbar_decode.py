"""Decoding trades for the microbar step: timestamps exact, bad messages dead-lettered."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.trade_wire import decode_trades
from torghut.events import Envelope, Trade
from torghut.ta.instants import epoch_micros, rfc3339_micros


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    )
)
def test_timestamps_as_written_by_msgspec_convert_exactly(ts: datetime) -> None:
    text = msgspec.json.encode(ts).decode().strip('"')
    assert rfc3339_micros(text) == epoch_micros(ts)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-01-05T14:30:00Z", 1767623400_000000),
        ("2026-01-05T14:30:00.5Z", 1767623400_500000),
        ("2026-01-05T14:30:00.123456789Z", 1767623400_123456),  # nanoseconds truncated
        ("2026-01-05T15:30:00.25+01:00", 1767623400_250000),  # offsets: the slow path
    ],
)
def test_other_rfc3339_forms(text: str, micros: int) -> None:
    assert rfc3339_micros(text) == micros


@pytest.mark.parametrize("text", ["2026-01-05T14:30:00", "2026-13-05T14:30:00Z", "yesterday"])
def test_naive_or_malformed_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - both causes are ValueErrors by design
        rfc3339_micros(text)


def test_bad_messages_are_dead_lettered_with_their_bytes_and_the_rest_decoded() -> None:
    ts = datetime(2026, 1, 5, 14, 30, 0, 250000, tzinfo=UTC)
    good = msgspec.json.encode(Envelope(ts, ts, "AAA", 1, Trade(7, "V", 10.5, 3.0)))
    nan = msgspec.json.encode(Envelope(ts, ts, "AAA", 2, Trade(8, "V", math.nan, 3.0)))
    naive = good.replace(b'Z"', b'"', 1)  # event_ts comes first
    offset = msgspec.json.encode(
        Envelope(
            ts.astimezone(timezone(timedelta(hours=-5))), ts, "AAA", 3, Trade(9, "V", 1.0, 1.0)
        )
    )
    ticks, dead = decode_trades([good, b"{", nan, naive, offset])
    assert ticks[0] == ("AAA", epoch_micros(ts), 7, "V", 10.5, 3.0)
    assert math.isnan(ticks[1][4])  # NaN travels as null: rejected later as invalid_price
    assert ticks[2][1] == epoch_micros(ts)
    assert len(ticks) == 3
    assert [(d.reason, d.raw) for d in dead] == [
        ("invalid_message", b"{"),
        ("invalid_message", naive),
    ]
