"""The console over real stores: chdb with seeded bars and TA-Lib indicators, a SQLite trading
store with seeded decisions and fills, and the real app served by uvicorn on a free port (the
browser and schemathesis talk HTTP to it like an operator would)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from api.app import create_app
from api.server import BackgroundServer
from tests.api.conftest import ch, ch_settings, settings_for, sqlite_url, store_engine
from tests.console.seed import Seeded, seed_bars, seed_trading
from torghut.clickhouse import Client, connect
from torghut.config import ApiSettings, ClickHouseSettings, TradingSettings
from trading.adapters.store import TradingStore

__all__ = ["ch", "ch_settings", "sqlite_url", "store_engine"]

TOKEN = "console-test-token"
SYMBOL = "AAPL"
SECONDS = 900


@dataclass
class Console:
    url: str
    end: datetime
    seeded: Seeded
    closes: list[float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def console(
    ch: Client, ch_settings: ClickHouseSettings, sqlite_url: str, store_engine: sa.Engine
) -> Iterator[Console]:
    """The seeded app on ``url``; the bars end at the current second so the page opens on them."""
    end = datetime.now(UTC).replace(microsecond=0)
    closes = seed_bars(ch, SYMBOL, end, SECONDS, seed=1)
    seed_bars(ch, "MSFT", end, 120, seed=2)
    store = TradingStore(store_engine)
    seeded = seed_trading(store, SYMBOL, end, closes)
    settings = settings_for(
        ch_settings, sqlite_url, ttl_ms=500, trading=TradingSettings(enabled=True)
    )
    settings.api = ApiSettings(
        ta_cache_ttl_ms=500,
        max_rows=20_000,
        control_token=TOKEN,  # type: ignore[arg-type]
    )
    app = create_app(
        settings,
        ch_client_factory=lambda: connect(ch_settings),
        store_engine=store_engine,
        alpaca_check=lambda: "ok",
    )
    with BackgroundServer(app, "127.0.0.1", _free_port()) as url:
        yield Console(url, end, seeded, closes)
