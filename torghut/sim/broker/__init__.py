"""An Alpaca-compatible paper broker: engine (:mod:`.book`), wire shapes, HTTP/websocket shell.

``BrokerSimulator(quotes).run_in_thread()`` gives a base URL that alpaca-py's ``TradingClient``
and (with ``/stream``) ``TradingStream`` accept as ``url_override`` unchanged.
"""

from torghut.sim.broker.app import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, BrokerSimulator
from torghut.sim.broker.book import AccountConfig, OrderRequest, PaperBook
from torghut.sim.broker.clock import AlwaysOpen, NyseSchedule, VirtualClock, wall_clock
from torghut.sim.broker.errors import BrokerError
from torghut.sim.broker.faults import Faults, SubmitFault

__all__ = [
    "DEFAULT_KEY_ID",
    "DEFAULT_SECRET_KEY",
    "AccountConfig",
    "AlwaysOpen",
    "BrokerError",
    "BrokerSimulator",
    "Faults",
    "NyseSchedule",
    "OrderRequest",
    "PaperBook",
    "SubmitFault",
    "VirtualClock",
    "wall_clock",
]
