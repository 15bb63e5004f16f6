"""Pure parts of the API: query parameter parsing and the TTL cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api import params
from api.errors import InvalidQuery
from api.ta_reads import TtlCache

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-02T15:00:00Z", NOW),
        ("2026-03-02T16:00:00+01:00", NOW),
        ("2026-03-02T16:00:00 01:00", NOW),  # '+' decoded as a space in a query string
        ("2026-03-02T15:00:00", NOW),  # no offset = UTC
        ("2026-03-02T15:00:00.250Z", NOW + timedelta(milliseconds=250)),
        (str(int(NOW.timestamp() * 1000) + 7), NOW + timedelta(milliseconds=7)),
    ],
)
def test_timestamps_accept_iso_and_epoch_ms(raw: str, expected: datetime) -> None:
    got = params.timestamp(raw, "from")
    assert got == expected
    assert got is not None
    assert got.tzinfo is not None


@pytest.mark.parametrize("raw", ["yesterday", "2026-02-30T00:00:00Z", "99999999999999999", "1e9"])
def test_malformed_timestamps_name_the_parameter(raw: str) -> None:
    with pytest.raises(InvalidQuery) as err:
        params.timestamp(raw, "to")
    assert err.value.parameter == "to"
    assert repr(raw) in err.value.detail


def test_time_range_defaults_and_order() -> None:
    assert params.time_range(None, None, NOW, timedelta(minutes=5)) == (
        NOW - timedelta(minutes=5),
        NOW,
    )
    start, end = params.time_range("2026-03-02T14:00:00Z", None, NOW, timedelta(minutes=5))
    assert (start, end) == (NOW - timedelta(hours=1), NOW)
    with pytest.raises(InvalidQuery, match="is after"):
        params.time_range("2026-03-02T15:00:01Z", "2026-03-02T15:00:00Z", NOW, timedelta(1))
    assert params.time_range("2026-03-02T15:00:00Z", "2026-03-02T15:00:00Z", NOW, timedelta(1)) == (
        NOW,
        NOW,
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [("aapl", "AAPL"), (" brk.b ", "BRK.B"), ("btc/usd", "BTC/USD")]
)
def test_symbols_are_upper_cased(raw: str, expected: str) -> None:
    assert params.symbol(raw) == expected


@pytest.mark.parametrize("raw", ["", "  ", "A B", "1AAPL", "AAPL;DROP", "A" * 17, "ÄPPL"])
def test_bad_symbols_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidQuery) as err:
        params.symbol(raw)
    assert err.value.parameter == "symbol"


def test_optional_symbol_and_window_and_limit() -> None:
    assert params.optional_symbol(None) is None
    assert params.optional_symbol("") is None
    assert params.window(None, ("PT1S", "PT1M")) == "PT1S"
    assert params.window("pt1m", ("PT1S", "PT1M")) == "PT1M"
    with pytest.raises(InvalidQuery, match="PT1M, PT1S"):
        params.window("PT1H", ("PT1S", "PT1M"))
    assert params.limit(None, 50, 100) == 50
    assert params.limit(None, 500, 100) == 100
    assert params.limit(500, 500, 100) == 500
    assert params.limit(501, 500, 100) == 500  # a page holds at most API_MAX_ROWS rows
    with pytest.raises(InvalidQuery, match="below 1"):
        params.limit(0, 500, 100)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the calendar's edges with an offset overflowed datetime (500s) or reached ClickHouse
        ("0001-01-01T00:00:00+01:00", params.TS_MIN),
        ("0001-01-01T00:00:00Z", params.TS_MIN),
        ("9999-12-31T23:59:59-01:00", params.TS_MAX),
        ("-9999999999999999", params.TS_MIN),
        ("9999999999999999", params.TS_MAX),
        ("1900-01-01T00:30:00+01:00", params.TS_MIN),
        ("1900-01-03T00:00:00+01:00", datetime(1900, 1, 2, 23, tzinfo=UTC)),
    ],
)
def test_timestamps_outside_the_stores_range_are_clamped(raw: str, expected: datetime) -> None:
    assert params.timestamp(raw, "from") == expected


def test_since_refuses_the_future() -> None:
    assert params.since("2026-03-02T15:00:30Z", NOW) == NOW + timedelta(seconds=30)
    with pytest.raises(InvalidQuery) as err:
        params.since("2026-03-02T15:02:00Z", NOW)
    assert err.value.parameter == "since"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_ttl_cache_expires_and_stays_bounded() -> None:
    clock = FakeClock()
    cache = TtlCache(0.5, max_entries=2, clock=clock)
    cache.put("a", 1)
    assert cache.get("a") == (True, 1)
    clock.t += 0.49
    assert cache.get("a") == (True, 1)
    clock.t += 0.02
    assert cache.get("a") == (False, None)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") == (False, None)
    assert cache.get("c") == (True, 3)


def test_ttl_zero_disables_the_cache() -> None:
    cache = TtlCache(0)
    cache.put("a", 1)
    assert cache.get("a") == (False, None)
