"""Bring a trading store's schema to a revision with Alembic, from code.

Why programmatic: every process that opens the store (trading flow, API, tests, the embedded
SQLite default) calls :func:`upgrade` with the URL it already has, so no ``alembic.ini`` has to be
found at run time. The migration scripts live in ``infra/postgres`` at the repository root
(the package is installed in editable/development mode, as the rest of the repo assumes).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "infra" / "postgres"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(target: str | sa.Engine, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (URL or engine) to ``revision``; idempotent."""
    if isinstance(target, str):
        command.upgrade(alembic_config(target), revision)
        return
    cfg = alembic_config()
    with target.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
