"""What a backtest replays and how: the window, symbols, strategies, fill, fee and review models.

Why one frozen struct: the configuration *is* the run's identity. It is recorded with the result
(its canonical JSON and hash), so the same configuration over the same rows gives the same
report byte for byte, and a promotion verdict names exactly what was tested. Nothing here reads
the environment: ``risk`` and ``strategy_params`` are validated by the same settings models the
live flow uses (``RiskSettings``, ``TradingSettings``) from these values only (no environment
variable or ``.env`` file is consulted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar, cast

import msgspec
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from torghut.config import AlpacaSettings, RiskSettings, TradingSettings
from trading.core.domain import canonical_json

__all__ = ["BacktestConfig", "FillConfig", "ReviewMode", "settings_from"]

ReviewMode = Literal["none", "approve", "recorded"]
"""``none``: no review (as with ``LLM_ENABLED=false``); ``approve``: a deterministic reviewer
that approves every order; ``recorded``: the verdicts stored in ``llm_decision_reviews`` for the
same decision hashes, replayed through the live review policy (a decision without a recorded
verdict gets the policy's fallback)."""


class FillConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an approved order fills in the paper matching engine.

    * ``model``: ``next_bar`` — the order reaches the book with the symbol's next signal row and
      fills at that row's close; ``touch`` — it fills at once at the touch of the signal's quote
      fields (buy at ``imbalance_ask_px``, sell at ``imbalance_bid_px``; the close when the row
      carries no quote);
    * ``slippage_bps``: the price moves against the order by this much before it fills;
    * fees per fill: ``fee_per_share`` × qty + ``fee_bps`` of the notional, at least
      ``min_fee``, rounded to the cent.
    """

    model: Literal["next_bar", "touch"] = "next_bar"
    slippage_bps: Decimal = Decimal(0)
    fee_per_share: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)
    min_fee: Decimal = Decimal(0)


class BacktestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One backtest: ``[start, end)`` of ``ta_signals`` event time for ``symbols``."""

    start: datetime
    end: datetime
    symbols: tuple[str, ...]
    strategies: tuple[str, ...]
    strategy_params: dict[str, dict[str, str | int | float | bool]] = msgspec.field(
        default_factory=dict
    )
    order_qty: Decimal = Decimal(1)
    fractional_symbols: tuple[str, ...] = ()
    window_size: str = "PT1S"
    table: str = "ta_signals"
    initial_cash: Decimal = Decimal(100_000)
    fill: FillConfig = msgspec.field(default_factory=FillConfig)
    review: ReviewMode = "none"
    market_hours: bool = False
    """``True``: the NYSE regular session (orders outside it wait, risk's market-open rule
    applies); ``False``: the market is always open (synthetic and crypto-like data)."""
    risk: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    """Overrides of ``RISK_*`` settings (by field name); the allowlist defaults to ``symbols``."""
    curve_period_s: int = 60
    """Event-time period of the equity curve the metrics are computed on."""
    shadow_horizon_s: int = 300
    record_limit: int = 10_000
    """Decisions and fills listed one by one in the report (the first ones); all are counted."""
    """A reviewed decision's outcome is its PnL over this much event time (LLM shadow
    evaluation)."""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("backtest window bounds must be timezone-aware (UTC)")
        if self.end <= self.start:
            raise ValueError(f"empty window: end {self.end} is not after start {self.start}")
        if not self.symbols:
            raise ValueError("a backtest needs at least one symbol")
        if not self.strategies:
            raise ValueError("a backtest needs at least one strategy")
        if min(self.curve_period_s, self.shadow_horizon_s, self.record_limit) <= 0:
            raise ValueError("curve_period_s, shadow_horizon_s and record_limit must be positive")

    @property
    def curve_period(self) -> timedelta:
        return timedelta(seconds=self.curve_period_s)

    def trading_settings(self) -> TradingSettings:
        """The strategy part of the live settings, from this configuration only."""
        return settings_from(
            TradingSettings,
            {
                "enabled": True,
                "mode": "paper",
                "strategies": list(self.strategies),
                "strategy_params": self.strategy_params,
                "order_qty": self.order_qty,
                "signal_window_size": self.window_size,
                "fractional_symbols": list(self.fractional_symbols),
            },
        )

    def risk_settings(self) -> RiskSettings:
        values: dict[str, Any] = {"symbol_allowlist": list(self.symbols)}
        values["require_market_open"] = self.market_hours
        values.update(self.risk)
        return settings_from(RiskSettings, values)

    def alpaca_settings(self) -> AlpacaSettings:
        """What risk reads of the broker settings: the symbols, and no live endpoint."""
        return settings_from(AlpacaSettings, {"symbols": list(self.symbols), "live_base_url": ""})

    def canonical(self) -> str:
        return canonical_json(msgspec.to_builtins(self, builtin_types=(Decimal, datetime)))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode("ascii")).hexdigest()


_S = TypeVar("_S", bound=BaseSettings)


def settings_from(cls: type[_S], values: Mapping[str, Any]) -> _S:
    """``cls`` validated from ``values`` alone: no ``TRADING_*``/``RISK_*``/… environment
    variable, no ``.env`` file (a settings class reads those even through ``model_validate``),
    so a backtest's result depends on its configuration only."""

    class FromValuesOnly(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    FromValuesOnly.__name__ = cls.__name__
    return cast(_S, FromValuesOnly(**values))
