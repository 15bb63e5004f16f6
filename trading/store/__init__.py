"""The trading audit store (Postgres, or SQLite for the embedded default).

``TradingStore.open(url)`` migrates to head and returns the store; see ``repository`` for the
unit of work, ``models`` for the tables and ``migrate`` for the programmatic Alembic upgrade.
"""

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
    "DecisionStatus",
    "PositionDrift",
    "StoredDecision",
    "StoredExecution",
    "StoredOrderEvent",
    "TradingStore",
    "UnitOfWork",
    "create_engine",
    "upgrade",
]
