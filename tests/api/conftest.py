"""Fixtures of the API tests: a migrated chdb database, a migrated SQLite store, seed helpers
and a ``make_client`` factory that runs the real app (lifespan included) under TestClient."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from api.app import create_app
from api.health import AlpacaCheck
from api.ta_reads import ClientFactory
from torghut.clickhouse import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    Client,
    connect,
    microbar_row,
    migrate,
    signal_row,
)
from torghut.config import (
    AlpacaSettings,
    ApiSettings,
    ClickHouseSettings,
    Settings,
    StoreSettings,
    TradingSettings,
)
from torghut.events import Envelope, Microbar, Signal, Window
from trading.adapters.store import TradingStore, create_engine, upgrade
from trading.core.domain import Action, Decision, OrderType

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
"""Recent on purpose: ClickHouse TTLs (14/30 days) hide older rows from ``FINAL`` reads."""

MakeClient = Callable[..., AbstractContextManager[TestClient[Any]]]


@pytest.fixture
def ch_settings(chdb_path: Path, ch_database: str) -> ClickHouseSettings:
    return ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=ch_database)


@pytest.fixture
def ch(ch_settings: ClickHouseSettings) -> Iterator[Client]:
    """A client on the test database with every ClickHouse migration applied."""
    client = connect(ch_settings)
    migrate(client, ch_settings)
    yield client
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'trading.sqlite'}"
    upgrade(url)
    return url


@pytest.fixture
def store_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(sqlite_url)
    yield engine
    engine.dispose()


def settings_for(
    ch_settings: ClickHouseSettings,
    store_url: str,
    *,
    ttl_ms: int = 0,
    trading: TradingSettings | None = None,
    alpaca: AlpacaSettings | None = None,
) -> Settings:
    return Settings(
        clickhouse=ch_settings,
        store=StoreSettings(url=store_url),
        alpaca=alpaca or AlpacaSettings(symbols=("AAPL", "MSFT")),
        trading=trading,
        api=ApiSettings(ta_cache_ttl_ms=ttl_ms, max_rows=1000),
    )


@pytest.fixture
def make_client(
    ch: Client, ch_settings: ClickHouseSettings, sqlite_url: str, store_engine: sa.Engine
) -> MakeClient:
    """``with make_client(ttl_ms=..., ...) as client:`` — the app over the test stores."""

    @contextmanager
    def make(
        *,
        ttl_ms: int = 0,
        trading: TradingSettings | None = None,
        ch_factory: ClientFactory | None = None,
        clickhouse: ClickHouseSettings | None = None,
        engine: sa.Engine | None = None,
        alpaca_check: AlpacaCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[TestClient[Any]]:
        ch_cfg = clickhouse or ch_settings
        settings = settings_for(ch_cfg, sqlite_url, ttl_ms=ttl_ms, trading=trading)
        app = create_app(
            settings,
            ch_client_factory=ch_factory or (lambda: connect(ch_cfg)),
            store_engine=engine or store_engine,
            alpaca_check=alpaca_check or (lambda: "ok"),
            clock=clock,
        )
        with TestClient(app) as client:
            yield client

    return make


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- TA rows --------------------------------------------------------------------------------


def bar(
    i: int,
    *,
    symbol: str = "AAPL",
    close: float = 100.0,
    version: int = 1,
    ingest_delay_ms: int = 50,
    window: str = "PT1S",
) -> Envelope[Microbar]:
    """The bar ``i`` seconds after :data:`T0`; ``seq`` = ``i`` (PT1S) or 10**6 + ``i`` (PT1M).

    The table key has no window column, so lanes need distinct ``seq`` s, as the TA flow's
    ``lane_seq`` gives them.
    """
    ts = T0 + timedelta(seconds=i)
    step = timedelta(seconds=1 if window == "PT1S" else 60)
    return Envelope(
        event_ts=ts,
        ingest_ts=ts + timedelta(milliseconds=ingest_delay_ms),
        symbol=symbol,
        seq=i if window == "PT1S" else 10**6 + i,
        payload=Microbar(o=close, h=close + 1, l=close - 1, c=close, v=10.0, vwap=close, count=3),
        is_final=True,
        source="ta",
        window=Window(size=window, start=ts, end=ts + step),
        version=version,
    )


def signal(
    i: int,
    *,
    symbol: str = "AAPL",
    close: float = 100.0,
    rsi: float = 50.0,
    version: int = 1,
    ingest_delay_ms: int = 50,
    window: str = "PT1S",
    at: datetime = T0,
) -> Envelope[Signal]:
    ts = at + timedelta(seconds=i)
    return Envelope(
        event_ts=ts,
        ingest_ts=ts + timedelta(milliseconds=ingest_delay_ms),
        symbol=symbol,
        seq=i,
        payload=Signal(rsi14=rsi, close=close, boll_upper=close + 2, boll_lower=close - 2),
        is_final=True,
        source="ta",
        window=Window(size=window, start=ts, end=ts + timedelta(seconds=1)),
        version=version,
    )


def insert_bars(ch: Client, bars: list[Envelope[Microbar]]) -> None:
    ch.insert(MICROBARS_TABLE, [microbar_row(b) for b in bars], column_names=MICROBAR_COLUMNS)


def insert_signals(ch: Client, signals: list[Envelope[Signal]]) -> None:
    ch.insert(SIGNALS_TABLE, [signal_row(s) for s in signals], column_names=SIGNAL_COLUMNS)


# --- trading store ----------------------------------------------------------------------------


def decision(symbol: str = "AAPL", second: int = 0, **overrides: Any) -> Decision:
    base: dict[str, Any] = {
        "strategy_id": "macd_rsi",
        "strategy_version": "1",
        "symbol": symbol,
        "event_ts": T0 + timedelta(seconds=second),
        "action": Action.BUY,
        "qty": Decimal(10),
        "order_type": OrderType.MARKET,
        "params": {"qty": Decimal(10), "window_size": "PT1S"},
        "rationale": "test",
        "reference_price": Decimal(100),
        "window_size": "PT1S",
    }
    base.update(overrides)
    return Decision(**base)


class SteppingClock:
    """The store's clock: each ``now`` one second later, so ``created_at`` orders are certain."""

    def __init__(self, start: datetime = T0) -> None:
        self._start = self._at = start

    def now(self) -> datetime:
        self._at += timedelta(seconds=1)
        return self._at

    def monotonic(self) -> float:
        return (self._at - self._start).total_seconds()

    def sleep(self, seconds: float) -> None:
        self._at += timedelta(seconds=seconds)


def open_store(url: str) -> TradingStore:
    return TradingStore(create_engine(url), SteppingClock())
