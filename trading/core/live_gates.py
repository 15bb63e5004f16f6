"""Which trading endpoint orders may go to: paper unless every live gate is set.

Why a pure function at the edge: the execution adapter builds its broker client from
:func:`trading_endpoint` and nothing else, so one small, exhaustively tested function decides
whether real money can move. Live needs all three: ``TRADING_MODE=live``,
``TRADING_LIVE_ENABLED=true`` and an explicitly configured ``ALPACA_LIVE_BASE_URL``. A paper
configuration that points at Alpaca's live host is refused too (a copy-paste away from real
orders). The risk engine re-checks the same gates on every order (``live_gates``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from torghut.config import AlpacaSettings, TradingSettings

__all__ = ["LIVE_HOSTS", "LiveGateError", "TradingEndpoint", "trading_endpoint"]

LIVE_HOSTS = frozenset({"api.alpaca.markets"})
"""Hosts that execute real-money orders."""


class LiveGateError(ValueError):
    """The configuration asks for live trading without every gate, or mixes paper and live."""


class TradingEndpoint(msgspec.Struct, frozen=True):
    """``base_url`` empty in paper mode = the built-in paper broker simulator."""

    live: bool
    base_url: str


def trading_endpoint(trading: TradingSettings, alpaca: AlpacaSettings) -> TradingEndpoint:
    if trading.mode == "live":
        missing = []
        if not trading.live_enabled:
            missing.append("TRADING_LIVE_ENABLED=true")
        if not alpaca.live_base_url.strip():
            missing.append("ALPACA_LIVE_BASE_URL")
        if missing:
            raise LiveGateError(f"TRADING_MODE=live also needs {' and '.join(missing)}")
        return TradingEndpoint(live=True, base_url=alpaca.live_base_url.strip())
    paper = alpaca.paper_base_url.strip()
    if paper and (urlsplit(paper).hostname or "").lower() in LIVE_HOSTS:
        raise LiveGateError(
            f"ALPACA_PAPER_BASE_URL={paper} is a live trading host; paper mode refuses it"
        )
    return TradingEndpoint(live=False, base_url=paper)
