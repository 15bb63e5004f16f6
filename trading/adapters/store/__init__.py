"""The SQL decision store (Postgres, or SQLite for the embedded default): the SQLAlchemy
adapter of the core's :class:`~trading.core.ports.DecisionStore` and
:class:`~trading.core.ports.ControlStore` ports.

``TradingStore.open(url)`` migrates to head and returns the store; see ``repository`` for the
unit of work, ``controls`` for the runtime controls and halts, ``models`` for the tables,
``migrate`` for the programmatic Alembic upgrade and ``errors`` for how database errors become
the port's. The control values (kill switch, halts, commands) are the core's
(:mod:`trading.core.control_state`) and are re-exported here for the API and the CLI.
"""

from trading.adapters.store.controls import ControlStore
from trading.adapters.store.dead_letters import StoredDeadLetter, TradingDeadLetters
from trading.adapters.store.migrate import upgrade
from trading.adapters.store.models import Base
from trading.adapters.store.repository import TradingStore, UnitOfWork, create_engine
from trading.core.control_state import (
    ControlAction,
    ControlEvent,
    ControlState,
    Halt,
    HaltKind,
    KillSwitch,
    Origin,
)

__all__ = [
    "Base",
    "ControlAction",
    "ControlEvent",
    "ControlState",
    "ControlStore",
    "Halt",
    "HaltKind",
    "KillSwitch",
    "Origin",
    "StoredDeadLetter",
    "TradingDeadLetters",
    "TradingStore",
    "UnitOfWork",
    "create_engine",
    "upgrade",
]
