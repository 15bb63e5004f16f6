"""Alembic environment of the trading store (Postgres, or SQLite for the embedded default).

The URL or an open connection comes from the caller
(``trading.adapters.store.migrate.upgrade``); from the CLI it is ``TRADING_DB_URL`` through the
store settings. SQLite runs in batch mode so later ``ALTER``s work there too. On Postgres the
migration holds a transaction-scoped advisory lock, so processes that start together against a fresh
database migrate one after the other instead of racing on ``CREATE TABLE`` (SQLite serialises
writers by itself).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

from torghut.config import StoreSettings
from trading.adapters.store.models import Base

config = context.config
_LOCK_KEY = 0x746F7267  # "torg": one key for every trading-store migration
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or StoreSettings().url


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        context.run_migrations()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
