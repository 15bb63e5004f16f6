"""Alpaca-compatible market-data simulator: synthetic market, replay, faults, websocket server.

Public API (other engineers depend on it; keep it stable):

* :class:`MarketSimulator` — the websocket server (``start``/``stop``, ``run_in_thread``,
  ``emitted``/``sent``, ``inject``, ``disconnect_all``, ``stats``, ``latest_quote``).
* :class:`SyntheticMarket` — the seeded market (``take``, ``latest_quote``).
* :class:`SessionReplay`, :func:`read_session`, :func:`write_session`, :func:`record_session`.
* :class:`FaultRule`, :class:`FaultKind` — faults on demand.
* :class:`Message`, :func:`message_identity` — the wire messages.

Typical test use::

    sim = MarketSimulator(symbols=["AAPL", "MSFT"], rate=2000, pacing="fast",
                          faults=[FaultRule(FaultKind.DUPLICATE, every=5)])
    with sim.run_in_thread() as url:          # ws://127.0.0.1:PORT/v2/iex
        ...  # connect a client (key "sim-key", secret "sim-secret"), subscribe, read
        sim.inject(FaultRule(FaultKind.DISCONNECT))   # once, on the next data frame
        expected = {m.identity for m in sim.sent()}   # what reached at least one socket
"""

from torghut.sim.market.faults import FaultKind, FaultRecord, FaultRule
from torghut.sim.market.replay import SessionReplay, read_session, record_session, write_session
from torghut.sim.market.server import DEFAULT_CREDENTIALS, FEEDS, MarketSimulator, MessageSource
from torghut.sim.market.synthetic import DEFAULT_START, SyntheticMarket
from torghut.sim.market.wire import (
    Message,
    format_rfc3339_ns,
    message_identity,
    parse_rfc3339_ns,
)

__all__ = [
    "DEFAULT_CREDENTIALS",
    "DEFAULT_START",
    "FEEDS",
    "FaultKind",
    "FaultRecord",
    "FaultRule",
    "MarketSimulator",
    "Message",
    "MessageSource",
    "SessionReplay",
    "SyntheticMarket",
    "format_rfc3339_ns",
    "message_identity",
    "parse_rfc3339_ns",
    "read_session",
    "record_session",
    "write_session",
]
