"""Metrics against an independent implementation (empyrical) on arbitrary return series, and
the ones it does not have (drawdown duration, trade statistics) against hand-worked values."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.backtest.metrics import (
    annual_volatility,
    cagr,
    calmar,
    equity_metrics,
    max_drawdown,
    max_drawdown_duration,
    sharpe,
    sortino,
    total_return,
    trade_stats,
)

PPY = 252.0
returns_lists = st.lists(
    # period returns as prices make them: zero, or at least a hundredth of a basis point (below
    # that both implementations only compare their floating-point rounding noise)
    st.floats(min_value=-0.2, max_value=0.2, allow_nan=False, allow_infinity=False).filter(
        lambda r: r == 0 or abs(r) >= 1e-6
    ),
    min_size=2,
    max_size=300,
)


def _close(ours: float | None, theirs: float) -> None:
    assert ours is not None
    assert math.isfinite(theirs)
    assert ours == pytest.approx(theirs, rel=1e-7, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(returns_lists)
def test_return_and_risk_metrics_match_empyrical(values: list[float]) -> None:
    r = pl.Series(values, dtype=pl.Float64)
    arr = np.array(values)
    _close(total_return(r), float(empyrical.cum_returns_final(arr)))
    _close(annual_volatility(r, PPY), float(empyrical.annual_volatility(arr, annualization=PPY)))
    ours_sharpe = sharpe(r, PPY)
    if ours_sharpe is not None:
        _close(ours_sharpe, float(empyrical.sharpe_ratio(arr, annualization=PPY)))
    ours_sortino = sortino(r, PPY)
    if ours_sortino is not None:
        _close(ours_sortino, float(empyrical.sortino_ratio(arr, annualization=PPY)))
    # empyrical measures drawdowns from the first period's value; ours from the start (1.0):
    # the same thing with a zero return in front.
    _close(max_drawdown(r), float(empyrical.max_drawdown(np.concatenate([[0.0], arr]))))
    ours_cagr = cagr(r, PPY)
    if ours_cagr is not None:
        _close(ours_cagr, float(empyrical.annual_return(arr, annualization=PPY)))
    ours_calmar = calmar(r, PPY)
    if ours_calmar is not None:
        theirs = float(empyrical.annual_return(arr, annualization=PPY)) / abs(
            float(empyrical.max_drawdown(np.concatenate([[0.0], arr])))
        )
        _close(ours_calmar, theirs)


def test_undefined_metrics_are_none_not_nan() -> None:
    flat = pl.Series([0.0, 0.0, 0.0])
    assert sharpe(flat, PPY) is None
    assert sortino(flat, PPY) is None
    assert calmar(flat, PPY) is None
    assert max_drawdown(flat) == 0.0
    assert trade_stats([]).win_rate is None
    assert trade_stats([1.0, 2.0]).profit_factor is None


def test_drawdown_duration_counts_periods_below_the_peak() -> None:
    # equity 1 → 1.1 → 0.99 → 1.045 → 1.1 (recovered) → 1.0
    r = pl.Series([0.1, -0.1, 1.045 / 0.99 - 1, 1.1 / 1.045 - 1, 1.0 / 1.1 - 1])
    assert max_drawdown_duration(r) == 2
    assert max_drawdown(r) == pytest.approx(-0.1)


def test_trade_statistics_by_hand() -> None:
    stats = trade_stats([30.0, -10.0, 20.0, -20.0])
    assert stats.trades == 4
    assert stats.win_rate == 0.5
    assert stats.profit_factor == pytest.approx(50 / 30)
    assert stats.expectancy == pytest.approx(5.0)


def test_equity_metrics_turnover_exposure_and_pnl() -> None:
    m = equity_metrics(
        [100.0, 110.0, 99.0, 121.0],
        periods_per_year=PPY,
        profits=[21.0],
        traded_notional=215.0,
        exposed_periods=2,
        fills=2,
        fees=0.0,
    )
    assert m.pnl == pytest.approx(21.0)
    assert m.total_return == pytest.approx(0.21)
    assert m.turnover == pytest.approx(215.0 / 107.5)
    assert m.exposure == pytest.approx(2 / 3)
    assert m.max_drawdown == pytest.approx(-0.1)
    assert m.max_drawdown_duration == 1


def _bits(values: list[float | None]) -> list[str | None]:
    """Values as exact text (NaN, infinities and the sign of zero included)."""
    return [None if v is None else v.hex() for v in values]


# any float a returns series can hold, the edge cases drawn often
edge_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, -1e-300, math.inf, -math.inf, math.nan]),
    st.floats(min_value=-0.2, max_value=0.2),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(edge_floats, max_size=60), st.lists(edge_floats, min_size=1, max_size=60))
def test_elementwise_forms_equal_the_expression_forms_to_the_bit(
    values: list[float], curve: list[float]
) -> None:
    """The metrics' helpers avoid polars' expression methods; the former expression forms are
    the oracle here, compared bit for bit (fails on any difference in rounding, NaN or signed
    zero handling)."""
    from trading.backtest.metrics import _mean_square_loss, _tiny, drawdown_series, returns_of

    r = pl.Series(values, dtype=pl.Float64)
    equity = pl.Series(curve, dtype=pl.Float64)
    assert _bits(returns_of(equity).to_list()) == _bits(
        (equity / equity.shift(1) - 1).slice(1).to_list()
    )
    wealth = pl.concat([pl.Series([1.0]), (r + 1).cum_prod()])
    assert _bits(drawdown_series(r).to_list()) == _bits(
        (wealth / wealth.cum_max() - 1).slice(1).to_list()
    )
    if r.len():
        downside = float((r.clip(upper_bound=0) ** 2).mean())  # type: ignore[arg-type]
        assert _bits([_mean_square_loss(r)]) == _bits([downside])
        for spread in (0.0, 1e-15, 1e-3, math.inf):
            scale = float(r.abs().max())  # type: ignore[arg-type]
            assert _tiny(spread, r) == (spread <= scale * 1e-12)
        assert _bits([sortino(r, PPY)]) == _bits([_sortino_by_expressions(r, PPY)])


def _sortino_by_expressions(returns: pl.Series, periods_per_year: float) -> float | None:
    downside = math.sqrt(float((returns.clip(upper_bound=0) ** 2).mean()))  # type: ignore[arg-type]
    scale = float(returns.abs().max())  # type: ignore[arg-type]
    if not downside > 0 or downside <= scale * 1e-12:
        return None
    mean = float(returns.mean())  # type: ignore[arg-type]
    value = mean * periods_per_year / (downside * math.sqrt(periods_per_year))
    return value if math.isfinite(value) else None
