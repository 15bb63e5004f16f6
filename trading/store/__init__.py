"""The trading audit store (Postgres, or SQLite for the embedded default).

``TradingStore.open(url)`` migrates to head and returns the store; see ``repository`` for the
unit of work, ``controls`` for the runtime controls and halts, ``models`` for the tables and
``migrate`` for the programmatic Alembic upgrade.
"""

from trading.store.controls import (
    ControlAction,
    ControlEvent,
    ControlState,
    ControlStore,
    Halt,
    HaltKind,
    KillSwitch,
    Origin,
)
from trading.store.dead_letters import StoredDeadLetter, TradingDeadLetters
from trading.store.migrate import upgrade
from trading.store.models import Base, DecisionStatus
from trading.store.repository import (
    PositionDrift,
    StoredDecision,
    StoredExecution,
    StoredOrderEvent,
    TradingStore,
    UnitOfWork,
    create_engine,
)

__all__ = [
    "Base",
    "ControlAction",
    "ControlEvent",
    "ControlState",
    "ControlStore",
    "DecisionStatus",
    "Halt",
    "HaltKind",
    "KillSwitch",
    "Origin",
    "PositionDrift",
    "StoredDeadLetter",
    "StoredDecision",
    "StoredExecution",
    "StoredOrderEvent",
    "TradingDeadLetters",
    "TradingStore",
    "UnitOfWork",
    "create_engine",
    "upgrade",
]
