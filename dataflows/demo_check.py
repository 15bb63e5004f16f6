"""``python -m dataflows.demo_check``: do the stored signals equal TA-Lib over the stored bars?

Run it after one or more ``make demo`` runs (the embedded ClickHouse is locked while a demo
runs). For every symbol it reads the final 1 s bars and signals (``FINAL``, ``is_final``) of
all runs, recomputes EMA 12/26, MACD 12/26/9, RSI 14 and Bollinger 20/2 with TA-Lib over the
stored closes in event-time order, and counts the warm values that differ (relative 1e-9) and
the values that are warm on one side only. Exit status 1 when any differs.

Why a script and not a test: it checks what two real demo runs left behind (minutes of wall
clock each); the property itself is unit-tested in ``tests/ta/test_indicators_talib.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import talib

from torghut.clickhouse import connect
from torghut.config import load_settings

FIELDS = ("ema12", "ema26", "macd", "macd_signal", "macd_hist", "rsi14", "boll_upper", "boll_mid")
REL = 1e-9


def reference(closes: np.ndarray) -> dict[str, np.ndarray]:
    macd, signal, hist = talib.MACD(closes, 12, 26, 9)
    upper, mid, _lower = talib.BBANDS(closes, 20, 2.0, 2.0)
    return {
        "ema12": talib.EMA(closes, 12),
        "ema26": talib.EMA(closes, 26),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "rsi14": talib.RSI(closes, 14),
        "boll_upper": upper,
        "boll_mid": mid,
    }


def main() -> int:
    settings = load_settings()
    client = connect(settings.clickhouse)
    bars = client.query(
        "SELECT symbol, event_ts, c FROM ta_microbars FINAL "
        "WHERE window_size = 'PT1S' AND is_final ORDER BY symbol, event_ts"
    ).result_rows
    cols = ", ".join(FIELDS)
    signals = client.query(
        f"SELECT symbol, event_ts, {cols} FROM ta_signals FINAL "
        "WHERE window_size = 'PT1S' AND is_final ORDER BY symbol, event_ts"
    ).result_rows
    client.close()
    by_symbol: dict[str, list[tuple[object, float]]] = {}
    for sym, ts, close in bars:
        by_symbol.setdefault(sym, []).append((ts, close))
    stored: dict[tuple[str, object], tuple[float | None, ...]] = {
        (row[0], row[1]): tuple(row[2:]) for row in signals
    }
    warm = differ = one_sided = missing = 0
    for sym, series in sorted(by_symbol.items()):
        closes = np.array([c for _, c in series], dtype=np.float64)
        ref = reference(closes)
        for i, (ts, _) in enumerate(series):
            values = stored.get((sym, ts))
            if values is None:
                missing += 1
                continue
            for k, name in enumerate(FIELDS):
                mine, theirs = values[k], ref[name][i]
                if mine is None and np.isnan(theirs):
                    continue
                if mine is None or np.isnan(theirs):
                    one_sided += 1
                    continue
                warm += 1
                if abs(mine - theirs) > REL * max(1.0, abs(theirs)):
                    differ += 1
    print(
        f"symbols {len(by_symbol)}, bars {sum(len(s) for s in by_symbol.values())}, "
        f"bars without a stored signal {missing}; warm values compared {warm}: "
        f"{differ} differ from TA-Lib, {one_sided} warm on one side only"
    )
    return 1 if differ or one_sided else 0


if __name__ == "__main__":
    sys.exit(main())
