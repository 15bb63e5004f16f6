"""The live-gating matrix: no combination short of every gate selects a live endpoint."""

from __future__ import annotations

import itertools

import pytest

from torghut.config import AlpacaSettings, TradingSettings
from trading.core.live_gates import LiveGateError, TradingEndpoint, trading_endpoint

LIVE_URL = "https://api.alpaca.markets"
PAPER_URL = "https://paper-api.alpaca.markets"


@pytest.mark.parametrize(
    ("mode", "live_enabled", "live_url", "paper_url"),
    list(itertools.product(["paper", "live"], [False, True], ["", LIVE_URL], ["", PAPER_URL])),
)
def test_live_only_with_every_gate(
    mode: str, live_enabled: bool, live_url: str, paper_url: str
) -> None:
    trading = TradingSettings(mode=mode, live_enabled=live_enabled)  # type: ignore[arg-type]
    alpaca = AlpacaSettings(live_base_url=live_url, paper_base_url=paper_url)
    all_gates = mode == "live" and live_enabled and bool(live_url)
    if mode == "live" and not all_gates:
        with pytest.raises(LiveGateError, match="TRADING_MODE=live also needs"):
            trading_endpoint(trading, alpaca)
        return
    endpoint = trading_endpoint(trading, alpaca)
    if all_gates:
        assert endpoint == TradingEndpoint(live=True, base_url=LIVE_URL)
    else:
        assert endpoint == TradingEndpoint(live=False, base_url=paper_url)


def test_paper_mode_refuses_a_live_host() -> None:
    with pytest.raises(LiveGateError, match="live trading host"):
        trading_endpoint(
            TradingSettings(live_enabled=True),
            AlpacaSettings(paper_base_url="https://API.alpaca.markets/", live_base_url=LIVE_URL),
        )
