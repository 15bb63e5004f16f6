"""Deterministic strategies and the registry that builds them by id from settings.

``TRADING_STRATEGIES`` lists the enabled ids; ``TRADING_STRATEGY_PARAMS`` (JSON object keyed by
id) overrides their parameters. ``TRADING_ORDER_QTY`` is the default ``qty`` of every strategy.
An unknown id or parameter fails at start, naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torghut.config import TradingSettings
from trading.core.strategies.base import (
    OrderParams,
    Strategy,
    SymbolState,
    advance,
    initial_state,
    make_decision,
)
from trading.core.strategies.bollinger import BollingerReversion
from trading.core.strategies.macd_rsi import MacdRsi

__all__ = [
    "REGISTRY",
    "BollingerReversion",
    "MacdRsi",
    "OrderParams",
    "Strategy",
    "SymbolState",
    "advance",
    "build_strategies",
    "initial_state",
    "make_decision",
]

REGISTRY: dict[str, Callable[[Mapping[str, Any]], Strategy[Any]]] = {
    MacdRsi.id: MacdRsi.from_params,
    BollingerReversion.id: BollingerReversion.from_params,
}
"""Strategy id → factory from a parameter mapping."""


def build_strategies(settings: TradingSettings) -> dict[str, Strategy[Any]]:
    """The enabled strategies, in configured order, with their configured parameters."""
    unknown = [s for s in settings.strategy_params if s not in REGISTRY]
    missing = [s for s in settings.strategies if s not in REGISTRY]
    if unknown or missing:
        raise ValueError(
            f"unknown strategy id(s) {sorted(set(unknown + missing))}; known: {sorted(REGISTRY)}"
        )
    built: dict[str, Strategy[Any]] = {}
    for sid in settings.strategies:
        raw: dict[str, Any] = {"qty": settings.order_qty}
        raw.update(settings.strategy_params.get(sid, {}))
        try:
            built[sid] = REGISTRY[sid](raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"strategy {sid}: invalid parameters: {exc}") from exc
    return built
