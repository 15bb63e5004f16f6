"""Shared pieces of the trading-flow tests: signal rows in ClickHouse, settings, a paper broker.

Imported by ``test_signals``, ``test_execution``, ``test_reconcile``, ``test_trading_flow``,
``test_crash`` and ``test_live_gating`` (``tests/trading/conftest.py`` belongs to the domain
tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from torghut.clickhouse import SIGNAL_COLUMNS, migrate, signal_row
from torghut.config import (
    AlpacaSettings,
    ClickHouseSettings,
    RecoverySettings,
    RiskSettings,
    Settings,
    StoreSettings,
    TradingSettings,
)
from torghut.events import Envelope, Signal, Window
from torghut.sim.broker import AccountConfig, BrokerSimulator
from torghut.sim.quotes import StaticQuotes, Touch

SYMBOLS = ("AAPL", "MSFT")
PRICES = {"AAPL": 187.40, "MSFT": 411.20}


def envelope(
    symbol: str,
    event_ts: datetime,
    seq: int = 0,
    *,
    version: int = 1,
    ingest_ts: datetime | None = None,
    window: str = "PT1S",
    **indicators: Any,
) -> Envelope[Signal]:
    return Envelope(
        event_ts=event_ts,
        ingest_ts=ingest_ts or datetime.now(UTC),
        symbol=symbol,
        seq=seq,
        payload=Signal(**indicators),
        window=Window(
            size=window, step=window, start=event_ts - timedelta(seconds=1), end=event_ts
        ),
        version=version,
    )


def crossing_signals(
    start: datetime, count: int, symbols: Sequence[str] = SYMBOLS
) -> list[Envelope[Signal]]:
    """``count`` rows per symbol, one per second, whose MACD crosses its signal on every row
    after the first (RSI 50): ``macd_rsi`` decides buy, sell, buy, ... once per row."""
    rows = []
    for i in range(count):
        for symbol in symbols:
            diff = 0.5 if i % 2 else -0.5
            rows.append(
                envelope(
                    symbol,
                    start + timedelta(seconds=i),
                    i,
                    macd=1.0 + diff,
                    macd_signal=1.0,
                    rsi14=50.0,
                    close=PRICES.get(symbol, 100.0) + i * 0.01,
                )
            )
    return rows


def ch_settings(chdb_path: Path, database: str) -> ClickHouseSettings:
    return ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=database)


def prepare_signals(client: Any, settings: ClickHouseSettings) -> None:
    migrate(client, settings)


def insert_signals(client: Any, envelopes: Sequence[Envelope[Signal]]) -> None:
    client.insert("ta_signals", [signal_row(e) for e in envelopes], column_names=SIGNAL_COLUMNS)


def trading_settings(
    *,
    clickhouse: ClickHouseSettings,
    store_url: str,
    broker_url: str,
    data_dir: Path,
    **trading: Any,
) -> Settings:
    """Paper trading on ``broker_url`` with limits loose enough for every crossing signal."""
    base: dict[str, Any] = {
        "enabled": True,
        "strategies": ("macd_rsi",),
        "exit_at_end": True,
        "signal_settle_s": 0,
        "poll_interval_s": 0.05,
        "reconcile_interval_s": 0.5,
        "dead_letter_path": data_dir / "dead-letters.jsonl",
    }
    base.update(trading)
    return Settings(
        clickhouse=clickhouse,
        store=StoreSettings(url=store_url),
        recovery=RecoverySettings(dir=data_dir / "recovery"),
        alpaca=AlpacaSettings(paper_base_url=broker_url, symbols=SYMBOLS),
        trading=TradingSettings(**base),
        risk=RiskSettings(
            symbol_cooldown_s=0,
            max_orders_per_minute=10_000,
            max_signal_staleness_s=3600,
            allow_shorting=True,
            max_notional_per_order=Decimal(100_000),
            max_position_per_symbol=Decimal(1_000_000),
            max_gross_exposure=Decimal(10_000_000),
        ),
    )


def static_quotes() -> StaticQuotes:
    now = datetime.now(UTC)
    return StaticQuotes({s: Touch(p - 0.01, 500, p + 0.01, 500, now) for s, p in PRICES.items()})


@pytest.fixture
def paper_broker() -> Iterator[BrokerSimulator]:
    """The paper broker simulator on a free port (shorting allowed), filling at static quotes."""
    sim = BrokerSimulator(
        static_quotes(),
        key_id="sim-key",
        secret_key="sim-secret",
        account=AccountConfig(shorting_enabled=True),
    )
    with sim.run_in_thread():
        yield sim
