"""Real rows for the console's tests: ClickHouse bars and TA-Lib indicators, and a trading store
with decisions, fills, a rejection, a veto, reconciliation snapshots, dead letters and a signal
correction, all through the project's own writers (no hand-built SQL).

The bars are a seeded random walk ending ``end`` (the dashboard opens on the recent minutes);
the indicators are TA-Lib over those bars (EMA 12/26, MACD 12/26/9, RSI 14, Bollinger 20/2,
session VWAP), so a drawn pane has real shapes and real warm-up gaps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import talib

from torghut.clickhouse import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    Client,
    microbar_row,
    signal_row,
)
from torghut.events import Envelope, Microbar, Signal, Window
from trading.adapters.store import TradingDeadLetters, TradingStore
from trading.core.adjudicate import Adjudication
from trading.core.domain import Action, Decision, OrderType
from trading.core.llm.policy import ReviewOutcome
from trading.core.orders import OrderStatus
from trading.core.ports import BrokerOrder, PositionSnapshot, SignalCursor
from trading.core.risk import RiskCheck, RiskReason, RiskVerdict
from trading.core.signals import SignalCorrection, SignalDeadLetter

__all__ = ["Seeded", "seed_bars", "seed_trading"]


def _nan_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def seed_bars(ch: Client, symbol: str, end: datetime, seconds: int, seed: int = 1) -> list[float]:
    """``seconds`` 1 s bars and signals of ``symbol`` ending at ``end`` (exclusive); returns
    the closes."""
    rng = random.Random(seed)
    start = end - timedelta(seconds=seconds)
    price = 100.0 + seed
    opens, highs, lows, closes, vols = [], [], [], [], []
    for _ in range(seconds):
        o = price
        price = max(1.0, price + rng.gauss(0, 0.08))
        h = max(o, price) + abs(rng.gauss(0, 0.03))
        lo = min(o, price) - abs(rng.gauss(0, 0.03))
        opens.append(o)
        highs.append(h)
        lows.append(lo)
        closes.append(price)
        vols.append(float(rng.randint(1, 50) * 10))
    c = np.array(closes)
    ema12, ema26 = talib.EMA(c, 12), talib.EMA(c, 26)
    macd, macd_signal, macd_hist = talib.MACD(c, 12, 26, 9)
    rsi = talib.RSI(c, 14)
    upper, mid, lower = talib.BBANDS(c, 20, 2.0, 2.0)
    typical = (np.array(highs) + np.array(lows) + c) / 3
    vwap = np.cumsum(typical * np.array(vols)) / np.cumsum(np.array(vols))
    bars, signals = [], []
    for i in range(seconds):
        ts = start + timedelta(seconds=i)
        window = Window(size="PT1S", start=ts, end=ts + timedelta(seconds=1))
        bars.append(
            Envelope(
                event_ts=ts,
                ingest_ts=ts + timedelta(milliseconds=40),
                symbol=symbol,
                seq=i,
                payload=Microbar(
                    o=opens[i],
                    h=highs[i],
                    l=lows[i],
                    c=closes[i],
                    v=vols[i],
                    vwap=float(typical[i]),
                    count=3,
                ),
                is_final=True,
                source="ta",
                window=window,
                version=1,
            )
        )
        signals.append(
            Envelope(
                event_ts=ts,
                ingest_ts=ts + timedelta(milliseconds=60),
                symbol=symbol,
                seq=i,
                payload=Signal(
                    macd=_nan_none(macd[i]),
                    macd_signal=_nan_none(macd_signal[i]),
                    macd_hist=_nan_none(macd_hist[i]),
                    ema12=_nan_none(ema12[i]),
                    ema26=_nan_none(ema26[i]),
                    rsi14=_nan_none(rsi[i]),
                    boll_mid=_nan_none(mid[i]),
                    boll_upper=_nan_none(upper[i]),
                    boll_lower=_nan_none(lower[i]),
                    vwap_session=float(vwap[i]),
                    close=closes[i],
                ),
                is_final=True,
                source="ta",
                window=window,
                version=1,
            )
        )
    ch.insert(MICROBARS_TABLE, [microbar_row(b) for b in bars], column_names=MICROBAR_COLUMNS)
    ch.insert(SIGNALS_TABLE, [signal_row(s) for s in signals], column_names=SIGNAL_COLUMNS)
    return closes


@dataclass
class Seeded:
    """What :func:`seed_trading` wrote, for the assertions."""

    decision_times: dict[str, datetime] = field(default_factory=dict)
    fill_times: list[datetime] = field(default_factory=list)
    realized_pnl: Decimal = Decimal(0)
    dead_letter_reason: str = "bad_value"


def _decision(symbol: str, at: datetime, action: Action, qty: int, price: Decimal) -> Decision:
    return Decision(
        strategy_id="macd_rsi",
        strategy_version="1",
        symbol=symbol,
        event_ts=at,
        action=action,
        qty=Decimal(qty),
        order_type=OrderType.MARKET,
        params={"qty": Decimal(qty), "window_size": "PT1S"},
        rationale="seeded",
        reference_price=price,
        window_size="PT1S",
    )


def _fill(
    store: TradingStore, hash_: str, symbol: str, side: str, qty: int, price: str, at: datetime
) -> None:
    def order(status: OrderStatus, filled: str, when: datetime) -> BrokerOrder:
        return BrokerOrder(
            id=f"order-{hash_[:10]}",
            client_order_id=hash_,
            symbol=symbol,
            side=side,
            qty=Decimal(qty),
            status=status,
            filled_qty=Decimal(filled),
            filled_avg_price=Decimal(price) if filled != "0" else None,
            submitted_at=at,
            updated_at=when,
        )

    store.record_submission(order(OrderStatus.NEW, "0", at))
    filled_at = at + timedelta(milliseconds=300)
    store.apply_order_update(
        order(OrderStatus.FILLED, str(qty), filled_at), event_type="fill", at=filled_at
    )
    with store.unit_of_work() as uow:
        uow.mark_reconciled([f"order-{hash_[:10]}"], filled_at + timedelta(seconds=1))
        uow.commit()


def seed_trading(store: TradingStore, symbol: str, end: datetime, closes: list[float]) -> Seeded:
    """A filled buy, a filled partial sell (realising PnL), a risk rejection and a veto on
    ``symbol`` in the last minutes before ``end``; a reconciliation snapshot; two dead letters
    and one signal correction."""
    out = Seeded()
    n = len(closes)

    def at(seconds_before_end: int) -> tuple[datetime, Decimal]:
        i = n - seconds_before_end
        return end - timedelta(seconds=seconds_before_end), Decimal(f"{closes[i]:.2f}")

    t_buy, p_buy = at(240)
    buy = store.record_decision(
        Adjudication.of(_decision(symbol, t_buy, Action.BUY, 10, p_buy), risk=RiskVerdict(()))
    )
    _fill(store, buy.decision_hash, symbol, "buy", 10, str(p_buy), t_buy)
    out.decision_times["buy"] = t_buy
    out.fill_times.append(t_buy + timedelta(milliseconds=300))

    t_sell, p_sell = at(120)
    sell = store.record_decision(
        Adjudication.of(_decision(symbol, t_sell, Action.SELL, 4, p_sell), risk=RiskVerdict(()))
    )
    _fill(store, sell.decision_hash, symbol, "sell", 4, str(p_sell), t_sell)
    out.decision_times["sell"] = t_sell
    out.fill_times.append(t_sell + timedelta(milliseconds=300))
    out.realized_pnl = (p_sell - p_buy) * 4

    t_rej, p_rej = at(180)
    store.record_decision(
        Adjudication.of(
            _decision(symbol, t_rej, Action.BUY, 500, p_rej),
            risk=RiskVerdict(
                (RiskReason(RiskCheck.MAX_NOTIONAL_PER_ORDER, "notional 50000 > limit 5000"),)
            ),
        )
    )
    out.decision_times["rejection"] = t_rej

    t_veto, p_veto = at(60)
    veto = ReviewOutcome(
        model="m1",
        prompt_version="p1",
        effective_verdict="veto",
        effective_qty=Decimal(0),
        shadow=False,
        fallback=False,
        latency_ms=80,
        verdict="veto",
    )
    store.record_decision(
        Adjudication.of(_decision(symbol, t_veto, Action.SELL, 6, p_veto), risk=None, review=veto)
    )
    out.decision_times["veto"] = t_veto

    with store.unit_of_work() as uow:
        uow.record_positions(
            end - timedelta(seconds=30),
            [PositionSnapshot(symbol=symbol, qty=Decimal(6), market_value=Decimal(6) * p_veto)],
        )
        uow.commit()

    cursor = SignalCursor("PT1S", end - timedelta(seconds=90), symbol, 7)
    dead = TradingDeadLetters(store.engine)
    dead.record(
        [
            SignalDeadLetter(cursor, out.dead_letter_reason, "rsi14 is NaN", "{...}", end),
            SignalDeadLetter(cursor, out.dead_letter_reason, "close is NaN", "{...}", end),
            SignalCorrection(cursor, 2, end - timedelta(seconds=80)),
        ],
        end,
    )
    return out
