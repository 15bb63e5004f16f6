"""Shared answers against a real chdb database: a kept page never trails what is final in
ClickHouse by more than one bar period, concurrent first askers share one computation, and a
failing read is never kept.

The shared answers' clock is stepped by the tests (``ManualClock``); ClickHouse, the app and,
for the concurrency test, the HTTP server are the real ones.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from api.app import create_app
from api.server import BackgroundServer
from api.shared_answers import GZIP_MIN_BYTES
from api.ta import LATEST_FRESH_S
from tests.api.conftest import (
    T0,
    MakeClient,
    bar,
    closed_port,
    insert_bars,
    insert_signals,
    settings_for,
    signal,
)
from tests.helpers import wait_until
from torghut.clickhouse import Client, connect
from torghut.config import ClickHouseSettings

TTL_MS = 500
BAR_PERIOD_S = 1.0
"""PT1S: the most a shared answer may trail the store (two freshness periods of 500 ms)."""

BARS = "/api/torghut/ta/bars"
RANGE = {"symbol": "AAPL", "from": T0.isoformat(), "to": (T0 + timedelta(minutes=1)).isoformat()}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _seqs(client: httpx.Client | object, params: dict[str, str] | None = None) -> list[int]:
    response = client.get(BARS, params=params or RANGE)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    return [b["seq"] for b in response.json()["bars"]]


def _metric(text: str, result: str) -> float:
    line = f'torghut_api_shared_answers_total{{result="{result}"}} '
    return next((float(x[len(line) :]) for x in text.splitlines() if x.startswith(line)), 0.0)


def test_a_kept_page_shows_a_bar_that_landed_within_one_bar_period(
    ch: Client, make_client: MakeClient
) -> None:
    insert_bars(ch, [bar(i) for i in range(10)])
    clock = ManualClock()
    with make_client(ttl_ms=TTL_MS, clock=clock) as client:
        assert _seqs(client) == list(range(10))
        insert_bars(ch, [bar(10)])
        # within its freshness the kept bytes are the answer: no read at all
        assert _seqs(client) == list(range(10))
        clock.now += BAR_PERIOD_S
        # one bar period later the answer may no longer be served as is: the request waits
        # for the refresh, which sees the range's mark moved and rebuilds the page
        assert _seqs(client) == list(range(11))
        # a correction of a final bar (same key, later ingest_ts, higher version) moves it too
        insert_bars(ch, [bar(3, close=333.0, version=2, ingest_delay_ms=900)])
        clock.now += BAR_PERIOD_S
        page = client.get(BARS, params=RANGE).json()["bars"]
        metrics = client.get("/metrics").text
    assert [(b["seq"], b["version"], b["c"]) for b in page][2:5] == [
        (2, 1, 100.0),
        (3, 2, 333.0),
        (4, 1, 100.0),
    ]
    assert _metric(metrics, "computed") == 1
    assert _metric(metrics, "hit") == 1
    assert _metric(metrics, "waited") == 2


def test_a_stale_page_is_served_only_while_its_refresh_runs(
    ch: Client, make_client: MakeClient
) -> None:
    insert_bars(ch, [bar(i) for i in range(5)])
    clock = ManualClock()
    with make_client(ttl_ms=TTL_MS, clock=clock) as client:
        assert _seqs(client) == list(range(5))
        insert_bars(ch, [bar(5)])
        clock.now += TTL_MS / 1000  # stale, within the grace: sent at once, refresh started
        first = _seqs(client)
        assert first in (list(range(5)), list(range(6)))
        wait_until(lambda: _seqs(client) == list(range(6)), 10, message="the refresh")


def test_unchanged_ranges_are_checked_not_rebuilt_and_an_open_to_follows_the_clock(
    ch: Client, make_client: MakeClient
) -> None:
    insert_bars(ch, [bar(i) for i in range(3)])
    clock = ManualClock()
    with make_client(ttl_ms=TTL_MS, clock=clock) as client:
        for _ in range(3):
            assert _seqs(client) == [0, 1, 2]
            clock.now += BAR_PERIOD_S
        metrics = client.get("/metrics").text
    assert 'torghut_api_shared_answer_refreshes_total{result="unchanged"} 2.0' in metrics
    assert 'torghut_api_shared_answer_refreshes_total{result="changed"} 0.0' in metrics


def test_latest_follows_new_signals(ch: Client, make_client: MakeClient) -> None:
    insert_signals(ch, [signal(0, close=1.0)])
    clock = ManualClock()
    url = "/api/torghut/ta/latest?symbol=AAPL"
    with make_client(ttl_ms=TTL_MS, clock=clock) as client:
        first = client.get(url).json()
        assert first["values"]["close"] == 1.0
        insert_signals(ch, [signal(1, close=2.0)])

        def newest() -> float:
            clock.now += LATEST_FRESH_S
            close: float = client.get(url).json()["values"]["close"]
            return close

        wait_until(lambda: newest() == 2.0, 10, message="the new signal on /latest")


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip, deflate", True),
        ("br;q=1.0, GZIP;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=zero", False),
        ("identity", False),
        ("", False),
    ],
)
def test_large_kept_answers_are_sent_gzipped_to_clients_that_accept_it(
    ch: Client, make_client: MakeClient, accept: str, gzipped: bool
) -> None:
    insert_bars(ch, [bar(i) for i in range(60)])
    with make_client(ttl_ms=TTL_MS, clock=ManualClock()) as client:
        first = client.get(BARS, params=RANGE, headers={"accept-encoding": "identity"})
        kept = client.get(BARS, params=RANGE, headers={"accept-encoding": accept})
        tiny = client.get("/api/torghut/ta/latest?symbol=AAPL")  # computed, then kept
        tiny_kept = client.get("/api/torghut/ta/latest?symbol=AAPL")
    assert len(first.content) >= GZIP_MIN_BYTES
    # every answer of a shared route says it depends on Accept-Encoding, computed or kept
    assert first.headers["vary"] == kept.headers["vary"] == "accept-encoding"
    assert "content-encoding" not in first.headers
    assert kept.headers.get("content-encoding") == ("gzip" if gzipped else None)
    assert kept.content == first.content  # httpx undoes the gzip
    assert int(kept.headers["content-length"]) == kept.num_bytes_downloaded
    if gzipped:
        assert kept.num_bytes_downloaded < len(first.content) / 4
    else:
        assert kept.num_bytes_downloaded == len(first.content)
    assert "content-encoding" not in tiny_kept.headers  # below the threshold: sent plain
    assert tiny_kept.json() == tiny.json()


def test_errors_are_not_kept(ch: Client, make_client: MakeClient) -> None:
    insert_bars(ch, [bar(0)])
    with make_client(ttl_ms=TTL_MS, clock=ManualClock()) as client:
        bad = {**RANGE, "from": "2026-02-30T00:00:00Z"}
        assert client.get(BARS, params=bad).status_code == 400
        assert client.get(BARS, params=bad).status_code == 400
        metrics = client.get("/metrics").text
    assert _metric(metrics, "computed") == 2
    assert _metric(metrics, "hit") == 0


def test_concurrent_first_askers_share_one_computation(
    ch: Client, ch_settings: ClickHouseSettings, sqlite_url: str
) -> None:
    insert_bars(ch, [bar(i) for i in range(600)])
    ten_minutes = {**RANGE, "to": (T0 + timedelta(minutes=10)).isoformat()}
    settings = settings_for(ch_settings, sqlite_url, ttl_ms=TTL_MS)
    app = create_app(settings, lambda: connect(ch_settings), alpaca_check=lambda: "ok")
    port = closed_port()
    with BackgroundServer(app, "127.0.0.1", port) as url, httpx.Client(base_url=url) as http:
        with ThreadPoolExecutor(20) as pool:
            pages = list(pool.map(lambda _: _seqs(http, ten_minutes), range(40)))
        metrics = http.get("/metrics").text
    assert all(page == list(range(600)) for page in pages)
    assert _metric(metrics, "computed") == 1
    assert (
        _metric(metrics, "coalesced")
        + _metric(metrics, "hit")
        + _metric(metrics, "stale")
        + _metric(metrics, "waited")
        == 39
    )
