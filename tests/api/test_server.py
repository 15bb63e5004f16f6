"""The Alpaca health check against a real local HTTP server, and the background server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from api.app import create_app
from api.health import alpaca_http_check
from api.server import BackgroundServer
from tests.api.conftest import T0, bar, closed_port, insert_bars, settings_for
from torghut.clickhouse import Client
from torghut.config import AlpacaSettings, ClickHouseSettings, TradingSettings


class _Clock(BaseHTTPRequestHandler):
    """``GET /v2/clock``: 200 with the right key, 401 otherwise (as Alpaca answers)."""

    def do_GET(self) -> None:
        ok = self.path == "/v2/clock" and self.headers.get("APCA-API-KEY-ID") == "k1"
        body = b'{"is_open": true}' if ok else b'{"message": "unauthorized"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def alpaca_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Clock)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _check(paper_url: str, key: str = "k1", trading: TradingSettings | None = None) -> str:
    alpaca = AlpacaSettings(paper_base_url=paper_url, key_id=SecretStr(key))
    settings = settings_for(ClickHouseSettings(), "sqlite://", alpaca=alpaca, trading=trading)
    return alpaca_http_check(settings)()


def test_alpaca_check_states(alpaca_url: str) -> None:
    assert _check(alpaca_url) == "ok"
    assert _check(alpaca_url, key="wrong") == "error"
    assert _check(f"http://127.0.0.1:{closed_port()}") == "error"
    assert _check("") == "unknown"
    # Live mode without every live gate is a misconfiguration, reported as an error.
    assert _check(alpaca_url, trading=TradingSettings(mode="live")) == "error"


def test_background_server_serves_and_stops() -> None:
    down = ClickHouseSettings(dsn=f"http://127.0.0.1:{closed_port()}", database="torghut")
    settings = settings_for(down, "sqlite://")
    engine = sa.create_engine("sqlite://")
    port = closed_port()
    with BackgroundServer(create_app(settings, store_engine=engine), port=port) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").status_code == 503
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")
    engine.dispose()


def test_concurrent_uncached_reads_all_succeed(
    ch: Client, ch_settings: ClickHouseSettings, sqlite_url: str
) -> None:
    """Many HTTP clients at once on one serialised ClickHouse client: every answer complete."""
    symbols = ["AAPL", "MSFT", "NVDA", "SPY"]
    for n, sym in enumerate(symbols, start=1):
        insert_bars(ch, [bar(i, symbol=sym) for i in range(10 * n)])
    app = create_app(settings_for(ch_settings, sqlite_url, ttl_ms=0))
    query = {"from": T0.isoformat(), "to": (T0 + timedelta(minutes=5)).isoformat()}

    def client(url: str, k: int) -> list[tuple[str, int, int]]:
        with httpx.Client(base_url=url, timeout=30) as http:
            out = []
            for j in range(8):
                sym = symbols[(k + j) % len(symbols)]
                r = http.get("/api/torghut/ta/bars", params={"symbol": sym, **query})
                out.append((sym, r.status_code, r.json().get("count", -1)))
            return out

    with BackgroundServer(app, port=closed_port()) as url, ThreadPoolExecutor(6) as pool:
        answers = [a for part in pool.map(client, [url] * 6, range(6)) for a in part]
    assert len(answers) == 48
    for sym, status, count in answers:
        assert (status, count) == (200, 10 * (symbols.index(sym) + 1))
