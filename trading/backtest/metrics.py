"""Performance metrics of an equity curve and its trades, computed with polars; pure.

Why elementwise arithmetic and reductions rather than polars' expression methods (``shift``,
``clip``, ``pow``, ``abs``) where the result is the same to the bit: each of those runs a query
on polars' thread pool, and a report computes these for every symbol (``tests/backtest/
test_metrics.py`` compares the two forms bit for bit on arbitrary series).

Why one module of plain functions: the same numbers are shown in the report, stored with the run,
served by the API and compared by the promotion check, so they are defined once. Conventions
(those of empyrical, against which ``tests/backtest/test_metrics.py`` checks them on arbitrary
return series):

* returns are simple period returns of the equity curve (``e[t] / e[t-1] - 1``), the risk-free
  rate is 0 and ``periods_per_year`` annualises them (a 1-second bar curve of a regular session
  has 252 × 23,400 periods a year);
* Sharpe = mean / sample std (ddof 1) × √P; Sortino = mean × P / (√(mean(min(r, 0)²)) × √P);
  annual volatility = sample std × √P; CAGR = (1 + total)^(P / n) − 1;
* drawdowns are measured from the initial equity on (a loss in the first period is a drawdown);
  the max drawdown duration is the longest stretch, in periods, spent below a previous peak;
* Calmar = CAGR / |max drawdown|;
* a *trade* is a closing fill (it reduces a position): its profit is (exit − average entry) ×
  qty less its fees and its share of the entry fees; win rate, profit factor (gross wins /
  gross losses) and expectancy (mean profit per trade) are over trades;
* turnover = traded notional / mean equity; exposure = share of periods with a position open.

A metric that is undefined for its input (a Sharpe of a flat curve, a profit factor without
losing trades) is ``None``, never NaN or infinity: the JSON report stays valid and comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import polars as pl

__all__ = [
    "Metrics",
    "TradeStats",
    "annual_volatility",
    "cagr",
    "calmar",
    "drawdown_series",
    "equity_metrics",
    "max_drawdown",
    "max_drawdown_duration",
    "returns_of",
    "sharpe",
    "sortino",
    "total_return",
    "trade_stats",
]

SESSION_SECONDS = 23_400
TRADING_DAYS = 252


class TradeStats(msgspec.Struct, frozen=True):
    trades: int
    win_rate: float | None
    profit_factor: float | None
    expectancy: float | None
    gross_profit: float
    gross_loss: float


class Metrics(msgspec.Struct, frozen=True):
    """Every metric of one curve (overall, or one symbol's)."""

    total_return: float | None
    cagr: float | None
    annual_volatility: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float | None
    max_drawdown_duration: int
    calmar: float | None
    win_rate: float | None
    profit_factor: float | None
    expectancy: float | None
    turnover: float | None
    exposure: float | None
    trades: int
    fills: int
    fees: float
    pnl: float


def returns_of(equity: pl.Series) -> pl.Series:
    """Simple period returns of an equity curve (one fewer than its points)."""
    n = equity.len()
    return equity.slice(1) / equity.slice(0, max(n - 1, 0)) - 1


def total_return(returns: pl.Series) -> float | None:
    if returns.len() == 0:
        return None
    return _finite((returns + 1).product() - 1)


def cagr(returns: pl.Series, periods_per_year: float) -> float | None:
    total = total_return(returns)
    if total is None or total <= -1:
        return None
    try:
        return _finite((1 + total) ** (periods_per_year / returns.len()) - 1)
    except OverflowError:  # a short window annualised: the growth is beyond any float
        return None


def annual_volatility(returns: pl.Series, periods_per_year: float) -> float | None:
    if returns.len() < 2:
        return None
    std = returns.std(ddof=1)
    return None if std is None else _finite(float(std) * math.sqrt(periods_per_year))  # type: ignore[arg-type]


def sharpe(returns: pl.Series, periods_per_year: float) -> float | None:
    if returns.len() < 2:
        return None
    std = float(returns.std(ddof=1))  # type: ignore[arg-type]
    if not std > 0 or _tiny(std, returns):
        return None
    return _finite(float(returns.mean()) / std * math.sqrt(periods_per_year))  # type: ignore[arg-type]


def sortino(returns: pl.Series, periods_per_year: float) -> float | None:
    if returns.len() == 0:
        return None
    downside = math.sqrt(_mean_square_loss(returns))
    if not downside > 0 or _tiny(downside, returns):
        return None
    mean = float(returns.mean())  # type: ignore[arg-type]
    return _finite(mean * periods_per_year / (downside * math.sqrt(periods_per_year)))


def _mean_square_loss(returns: pl.Series) -> float:
    """The mean of min(r, 0)² over a non-empty series."""
    losses = np.minimum(returns.to_numpy(), 0.0)  # NaN stays NaN, as polars' clip keeps it
    with np.errstate(over="ignore"):  # a square beyond any float is inf, silently, as in polars
        squares = losses * losses
    return float(pl.Series(squares).mean())  # type: ignore[arg-type]


def drawdown_series(returns: pl.Series) -> pl.Series:
    """Drawdown after each period (≤ 0), from a starting value of 1."""
    # wealth is the running product of the growth factors after a 1.0 (exact: 1.0 × x is x);
    # both running operations in one query
    growth = pl.concat([pl.Series("g", [1.0]), (returns + 1).rename("g")])
    wealth = pl.col("g").cum_prod()
    return growth.to_frame().select(wealth / wealth.cum_max() - 1).to_series().slice(1)


def max_drawdown(returns: pl.Series) -> float | None:
    return _deepest(drawdown_series(returns))


def max_drawdown_duration(returns: pl.Series) -> int:
    """Longest run of consecutive periods below a previous peak."""
    return _longest_under(drawdown_series(returns))


def calmar(returns: pl.Series, periods_per_year: float) -> float | None:
    return _calmar(cagr(returns, periods_per_year), max_drawdown(returns))


def _deepest(drawdowns: pl.Series) -> float | None:
    if drawdowns.len() == 0:
        return None
    return _finite(min(float(drawdowns.min()), 0.0))  # type: ignore[arg-type]


def _longest_under(drawdowns: pl.Series) -> int:
    runs = (drawdowns < 0).rle()
    longest = runs.struct.field("len").filter(runs.struct.field("value")).max()
    return int(longest) if longest is not None else 0  # type: ignore[arg-type]


def _calmar(growth: float | None, deepest: float | None) -> float | None:
    if deepest is None or growth is None or deepest == 0:
        return None
    return _finite(growth / abs(deepest))


def trade_stats(profits: Sequence[float]) -> TradeStats:
    """Win rate, profit factor and expectancy of closed trades' profits (after fees)."""
    if not profits:
        return TradeStats(0, None, None, None, 0.0, 0.0)
    s = pl.Series(profits, dtype=pl.Float64)
    wins = float(s.filter(s > 0).sum())
    losses = -float(s.filter(s < 0).sum())
    return TradeStats(
        trades=s.len(),
        win_rate=_finite(float((s > 0).sum()) / s.len()),
        profit_factor=_finite(wins / losses) if losses > 0 else None,
        expectancy=_finite(float(s.mean())),  # type: ignore[arg-type]
        gross_profit=wins,
        gross_loss=losses,
    )


def equity_metrics(
    equity: Sequence[float],
    *,
    periods_per_year: float,
    profits: Sequence[float],
    traded_notional: float,
    exposed_periods: int,
    fills: int,
    fees: float,
) -> Metrics:
    """All metrics of one equity curve (its first point is the starting equity)."""
    curve = pl.Series(equity, dtype=pl.Float64)
    returns = returns_of(curve) if curve.len() > 1 else pl.Series([], dtype=pl.Float64)
    stats = trade_stats(profits)
    mean_equity = float(curve.mean()) if curve.len() else 0.0  # type: ignore[arg-type]
    periods = returns.len()
    # the drawdowns once, for the three metrics made of them
    drawdowns = drawdown_series(returns)
    growth = cagr(returns, periods_per_year)
    deepest = _deepest(drawdowns)
    return Metrics(
        total_return=total_return(returns),
        cagr=growth,
        annual_volatility=annual_volatility(returns, periods_per_year),
        sharpe=sharpe(returns, periods_per_year),
        sortino=sortino(returns, periods_per_year),
        max_drawdown=deepest,
        max_drawdown_duration=_longest_under(drawdowns),
        calmar=_calmar(growth, deepest),
        win_rate=stats.win_rate,
        profit_factor=stats.profit_factor,
        expectancy=stats.expectancy,
        turnover=_finite(traded_notional / mean_equity) if mean_equity > 0 else None,
        exposure=_finite(exposed_periods / periods) if periods else None,
        trades=stats.trades,
        fills=fills,
        fees=fees,
        pnl=(float(curve[-1]) - float(curve[0])) if curve.len() else 0.0,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _tiny(spread: float, returns: pl.Series) -> bool:
    """A dispersion that is rounding noise of a constant series (std of [x, x, x] in floating
    point can be 1e-18 rather than 0): such a ratio means nothing, so it is undefined."""
    # the largest absolute value, from the extremes (negation is exact; abs() is a query)
    scale = max(float(returns.max()), -float(returns.min()))  # type: ignore[arg-type]
    return spread <= scale * 1e-12
