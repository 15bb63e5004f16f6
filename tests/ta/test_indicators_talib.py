"""Every price indicator equals TA-Lib within 1e-9 relative once warm, and is None exactly
where TA-Lib returns NaN, for arbitrary price series (walks, constant runs, large jumps).

σ of log returns is checked against ``talib.STDDEV`` of ``ln(c_i / c_{i-1})`` and against an
exact two-pass oracle; the long-series test shows the rolling sums do not drift.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from torghut.config import TaSettings
from torghut.events import Microbar, Signal
from torghut.ta.bollinger import Bollinger
from torghut.ta.indicators import IndicatorEngine
from torghut.ta.rsi import Rsi
from torghut.ta.volatility import RealizedVolatility

REL = 1e-9
T0 = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def price_series(draw: st.DrawFn) -> np.ndarray:
    """Positive prices, 1..320 bars: random walks, constant runs, penny ticks, large jumps.

    Hypothesis chooses the shape (segments, lengths, volatilities, jumps); a seeded numpy
    generator fills in the walk noise, which keeps generation fast.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    price = draw(st.floats(0.5, 20_000.0))
    prices: list[float] = []
    segments = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["walk", "flat", "jump", "tick"]),
                st.integers(1, 80),
                st.floats(1e-6, 0.05),
            ),
            min_size=1,
            max_size=8,
        )
    )
    for kind, length, scale in segments:
        if kind == "jump":
            price *= float(np.exp(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 1.5)))
        for _ in range(length):
            if kind == "walk":
                price *= float(np.exp(rng.normal(0.0, scale)))
            elif kind == "tick":
                price = round(price + rng.choice([-0.01, 0.0, 0.01]), 2)
            price = min(max(price, 0.05), 1e6)
            prices.append(price)
    return np.array(prices[:320], dtype=np.float64)


def run_engine(closes: np.ndarray) -> list[Signal]:
    engine = IndicatorEngine("PT1S", TaSettings())
    signals = []
    for i, close in enumerate(closes.tolist()):
        bar = Microbar(o=close, h=close, l=close, c=close, v=1.0, vwap=close, count=1)
        signal = engine.on_bar(T0 + timedelta(seconds=i + 1), bar)
        assert signal is not None
        signals.append(signal)
    return signals


def column(signals: list[Signal], name: str) -> list[float | None]:
    return [getattr(signal, name) for signal in signals]


def assert_matches(name: str, mine: list[float | None], reference: np.ndarray, atol: float) -> None:
    """None exactly where the reference is NaN; elsewhere within REL relative (+ atol)."""
    assert len(mine) == len(reference)
    for i, (got, want) in enumerate(zip(mine, reference.tolist(), strict=True)):
        if np.isnan(want):
            assert got is None, f"{name}[{i}] = {got}, TA-Lib is still warming up"
            continue
        assert got is not None, f"{name}[{i}] is None, TA-Lib gives {want}"
        assert abs(got - want) <= REL * abs(want) + atol, f"{name}[{i}]: {got} != {want}"


def log_returns(closes: np.ndarray) -> np.ndarray:
    return np.concatenate([[np.nan], np.log(closes[1:] / closes[:-1])])


def exact_rolling_std(values: np.ndarray, size: int) -> np.ndarray:
    """Two-pass population σ per window (accurate to a few ulps), NaN before the first."""
    out = np.full(len(values), np.nan)
    if len(values) >= size:
        windows = sliding_window_view(values, size)
        means = windows.mean(axis=1, keepdims=True)
        out[size - 1 :] = np.sqrt(((windows - means) ** 2).mean(axis=1))
    return out


def assert_matches_talib_or_exact(
    name: str, mine: list[float | None], talib_values: np.ndarray, exact: np.ndarray, atol: float
) -> None:
    """Within REL of TA-Lib; where TA-Lib itself is further than REL from the exact value
    (its running sums keep residue of large values that left the window), within REL of
    the exact value instead."""
    assert (np.isnan(talib_values) == np.isnan(exact)).all()
    assert_matches(name + "(exact)", mine, exact, atol)
    for i, (got, want, truth) in enumerate(zip(mine, talib_values, exact, strict=True)):
        if got is None or abs(got - want) <= REL * abs(want) + atol:
            continue
        assert abs(want - truth) > REL * abs(truth) + atol, f"{name}[{i}]: {got} != {want}"


@PROPERTY
@given(price_series())
def test_price_indicators_equal_talib(closes: np.ndarray) -> None:
    signals = run_engine(closes)
    atol = 1e-12 * float(np.max(closes))
    macd, macd_signal, macd_hist = talib.MACD(closes, 12, 26, 9)
    assert_matches("ema12", column(signals, "ema12"), talib.EMA(closes, 12), atol)
    assert_matches("ema26", column(signals, "ema26"), talib.EMA(closes, 26), atol)
    assert_matches("macd", column(signals, "macd"), macd, atol)
    assert_matches("macd_signal", column(signals, "macd_signal"), macd_signal, atol)
    assert_matches("macd_hist", column(signals, "macd_hist"), macd_hist, atol)
    assert_matches("rsi14", column(signals, "rsi14"), talib.RSI(closes, 14), 1e-9)
    assert column(signals, "close") == closes.tolist()

    upper, middle, lower = talib.BBANDS(closes, 20, 2.0, 2.0, 0)
    sigma = exact_rolling_std(closes, 20)
    mean = np.full(len(closes), np.nan)
    if len(closes) >= 20:
        mean[19:] = sliding_window_view(closes, 20).mean(axis=1)
    assert_matches("boll_mid", column(signals, "boll_mid"), middle, atol)
    assert_matches_talib_or_exact(
        "boll_upper", column(signals, "boll_upper"), upper, mean + 2 * sigma, atol
    )
    assert_matches_talib_or_exact(
        "boll_lower", column(signals, "boll_lower"), lower, mean - 2 * sigma, atol
    )

    returns = log_returns(closes)
    exact_vol = np.concatenate([[np.nan], exact_rolling_std(returns[1:], 60)])
    assert_matches_talib_or_exact(
        "vol_realized_w60s",
        column(signals, "vol_realized_w60s"),
        talib.STDDEV(returns, 60, 1.0),
        exact_vol,
        1e-18,
    )


def test_constant_prices_have_zero_sigma_and_ta_lib_rsi() -> None:
    closes = np.full(100, 1234.5678)
    signals = run_engine(closes)
    last = signals[-1]
    assert last.boll_mid == last.boll_upper == last.boll_lower == 1234.5678
    assert last.vol_realized_w60s == 0.0
    assert last.rsi14 == 0.0 == talib.RSI(closes, 14)[-1]
    # TA-Lib's SMA seed (sum / N) rounds: the EMAs sit an ulp off the price, as TA-Lib's do.
    assert last.ema12 == talib.EMA(closes, 12)[-1]
    assert last.macd == talib.MACD(closes, 12, 26, 9)[0][-1]
    assert abs(last.macd or 1.0) <= 1e-15 * 1234.5678 * 1e3


def test_constant_run_after_a_jump_returns_to_exact_zero_sigma() -> None:
    closes = np.concatenate([np.linspace(10.0, 9000.0, 70), np.full(80, 17.25)])
    signals = run_engine(closes)
    assert signals[-1].boll_upper == signals[-1].boll_lower == 17.25
    assert signals[-1].vol_realized_w60s == 0.0
    assert signals[-1].rsi14 is not None
    assert abs(signals[-1].rsi14 - talib.RSI(closes, 14)[-1]) <= 1e-12


def test_long_series_at_1e4_with_tiny_variance_does_not_drift() -> None:
    rng = np.random.default_rng(20261125)
    n = 100_000
    closes = 1e4 + np.cumsum(rng.normal(0.0, 1e-4, n)) + rng.normal(0.0, 1e-5, n)
    closes[40_000:40_500] = 1e4 + 250.0
    bands = Bollinger(20, 2.0)
    volatility = RealizedVolatility(60)
    mids = np.full(n, np.nan)
    sigmas = np.full(n, np.nan)
    vols = np.full(n, np.nan)
    for i, close in enumerate(closes.tolist()):
        out = bands.update(close)
        if out is not None:
            mids[i] = out[0]
            sigmas[i] = (out[1] - out[2]) / 4.0
        vol = volatility.update(close)
        if vol is not None:
            vols[i] = vol
    exact_sigma = exact_rolling_std(closes, 20)
    exact_mid = np.concatenate([np.full(19, np.nan), sliding_window_view(closes, 20).mean(1)])
    warm = slice(19, None)
    assert np.max(np.abs(mids[warm] - exact_mid[warm]) / exact_mid[warm]) <= 1e-12
    sigma_error = np.abs(sigmas[warm] - exact_sigma[warm]) - 1e-9 * exact_sigma[warm]
    # (upper - lower) / 4 carries the rounding of mid ± 2σ: a few ulps of the price.
    assert np.max(sigma_error) <= 4 * np.spacing(1e4 + 250.0)
    assert np.nanmax(np.abs(talib.BBANDS(closes, 20, 2.0, 2.0, 0)[1] - mids) / closes) <= 1e-12
    returns = np.log(closes[1:] / closes[:-1])
    exact_vol = exact_rolling_std(returns, 60)[59:]
    assert np.all(np.abs(vols[60:] - exact_vol) <= 1e-9 * exact_vol + 1e-18)
    assert (vols[40_061:40_500] == 0.0).all()
    assert np.isnan(vols[:60]).all()
    assert np.isnan(sigmas[:19]).all()


def test_rsi_matches_talib_after_a_long_series() -> None:
    rng = np.random.default_rng(7)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 5000)))
    rsi = Rsi(14)
    mine = [rsi.update(close) for close in closes.tolist()]
    assert_matches("rsi14", mine, talib.RSI(closes, 14), 1e-9)
