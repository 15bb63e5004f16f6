"""TA endpoints against a real chdb database: FINAL dedup, ranges, latest + lag, the cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.ta_reads import LatestBoard
from tests.api.conftest import (
    T0,
    MakeClient,
    bar,
    insert_bars,
    insert_signals,
    signal,
)
from torghut.clickhouse import Client

RANGE = {"from": T0.isoformat(), "to": (T0 + timedelta(minutes=1)).isoformat()}


def test_bars_show_each_key_once_in_its_latest_version(ch: Client, make_client: MakeClient) -> None:
    insert_bars(ch, [bar(0, close=100.0), bar(1, close=101.0), bar(2, close=102.0)])
    # A late trade corrected second 1: same key, later ingest_ts, higher version.
    insert_bars(ch, [bar(1, close=111.0, version=2, ingest_delay_ms=900)])
    insert_bars(ch, [bar(0, symbol="MSFT"), bar(0, close=5.0, window="PT1M")])
    with make_client() as client:
        r = client.get("/api/torghut/ta/bars", params={"symbol": "aapl", **RANGE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == "AAPL"
    assert body["window"] == "PT1S"
    assert [(b["seq"], b["c"], b["version"]) for b in body["bars"]] == [
        (0, 100.0, 1),
        (1, 111.0, 2),
        (2, 102.0, 1),
    ]
    assert body["count"] == 3
    assert datetime.fromisoformat(body["from"]) == T0


def test_bars_range_is_half_open_and_window_selects_the_lane(
    ch: Client, make_client: MakeClient
) -> None:
    insert_bars(ch, [bar(i) for i in range(5)])
    insert_bars(ch, [bar(0, close=7.0, window="PT1M")])
    with make_client() as client:
        r = client.get(
            "/api/torghut/ta/bars",
            params={
                "symbol": "AAPL",
                "from": (T0 + timedelta(seconds=1)).isoformat(),
                "to": (T0 + timedelta(seconds=3)).isoformat(),
            },
        )
        minute = client.get(
            "/api/torghut/ta/bars", params={"symbol": "AAPL", "window": "PT1M", **RANGE}
        )
        limited = client.get("/api/torghut/ta/bars", params={"symbol": "AAPL", "limit": 2, **RANGE})
    assert [b["seq"] for b in r.json()["bars"]] == [1, 2]
    assert [b["c"] for b in minute.json()["bars"]] == [7.0]
    assert [b["seq"] for b in limited.json()["bars"]] == [0, 1]


def test_signals_show_corrections_once(ch: Client, make_client: MakeClient) -> None:
    insert_signals(ch, [signal(0, rsi=40.0), signal(1, rsi=45.0)])
    insert_signals(ch, [signal(1, rsi=65.0, version=2, ingest_delay_ms=800)])
    with make_client() as client:
        r = client.get("/api/torghut/ta/signals", params={"symbol": "AAPL", **RANGE})
    assert r.status_code == 200, r.text
    points = r.json()["signals"]
    assert [(p["seq"], p["version"], p["values"]["rsi14"]) for p in points] == [
        (0, 1, 40.0),
        (1, 2, 65.0),
    ]
    assert points[0]["values"]["boll_upper"] == 102.0
    assert points[0]["values"]["macd"] is None


def test_latest_gives_newest_signal_and_its_lag(ch: Client, make_client: MakeClient) -> None:
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    insert_signals(ch, [signal(i, at=recent, close=100.0 + i) for i in range(3)])
    insert_signals(ch, [signal(2, at=recent, close=200.0, version=2, ingest_delay_ms=400)])
    with make_client() as client:
        r = client.get("/api/torghut/ta/latest", params={"symbol": "aapl"})
        empty = client.get("/api/torghut/ta/latest", params={"symbol": "NVDA"})
    assert r.status_code == 200, r.text
    body = r.json()
    newest = recent + timedelta(seconds=2)
    assert datetime.fromisoformat(body["event_ts"]) == newest
    assert body["values"]["close"] == 200.0
    assert body["ingest_lag_ms"] == 400
    assert 28_000 - 1 <= body["lag_ms"] < 28_000 + 60_000
    assert empty.json() == {
        "symbol": "NVDA",
        "window": "PT1S",
        "event_ts": None,
        "ingest_ts": None,
        "lag_ms": None,
        "ingest_lag_ms": None,
        "values": None,
    }


def test_cached_answers_are_reused_within_the_ttl_and_counted(
    ch: Client, make_client: MakeClient
) -> None:
    insert_signals(ch, [signal(0, close=1.0)])
    # a clock that stands still: every answer stays fresh however slowly the requests come
    # (on the monotonic clock a shared ``/latest`` answer is re-rendered after 0.25 s)
    frozen = make_client(ttl_ms=600_000, clock=lambda: 1_000.0)
    with frozen as cached, make_client(ttl_ms=0) as uncached:
        assert cached.get("/api/torghut/ta/latest?symbol=AAPL").json()["values"]["close"] == 1.0
        insert_signals(ch, [signal(1, close=2.0), signal(0, symbol="MSFT", close=3.0)])
        # the same response again: served whole from the response cache
        assert cached.get("/api/torghut/ta/latest?symbol=AAPL").json()["values"]["close"] == 1.0
        # another symbol: a hit on the board the first request loaded for every symbol
        assert cached.get("/api/torghut/ta/latest?symbol=MSFT").json()["values"] is None
        assert uncached.get("/api/torghut/ta/latest?symbol=AAPL").json()["values"]["close"] == 2.0
        assert uncached.get("/api/torghut/ta/latest?symbol=MSFT").json()["values"]["close"] == 3.0
        metrics = cached.get("/metrics").text
    assert 'torghut_api_ta_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'torghut_api_ta_cache_lookups_total{result="miss"} 1.0' in metrics


def test_symbols_merge_configured_and_seen(ch: Client, make_client: MakeClient) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    insert_signals(ch, [signal(0, symbol="TSLA", at=T0), signal(0, symbol="ZZZ", at=old)])
    with make_client() as client:
        r = client.get("/api/torghut/ta/symbols")
    assert r.json() == {"symbols": ["AAPL", "MSFT", "TSLA"]}


def test_latest_board_follows_new_rows_corrections_and_new_symbols(ch: Client) -> None:
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    board = LatestBoard("PT1S")
    insert_signals(ch, [signal(i, at=recent, close=10.0 + i) for i in range(3)])
    board.refresh(ch, 1.0)
    row = board.row("AAPL")
    assert row is not None
    assert row.payload.close == 12.0
    assert board.row("MSFT") is None
    # a corrected version of the newest row, a newer row of nothing, and a new symbol
    insert_signals(
        ch,
        [
            signal(2, at=recent, close=99.0, version=2, ingest_delay_ms=900),
            signal(0, at=recent, symbol="MSFT", close=5.0),
        ],
    )
    board.refresh(ch, 2.0)
    corrected, msft = board.row("AAPL"), board.row("MSFT")
    assert corrected is not None
    assert (corrected.payload.close, corrected.version) == (99.0, 2)
    assert msft is not None
    assert msft.payload.close == 5.0
    assert board.newest() == recent + timedelta(seconds=2)
    assert board.refreshed_at == 2.0
