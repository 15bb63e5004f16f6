"""PostgreSQL 15 smoke tests through SQLAlchemy 2 + psycopg 3."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa


def test_unique_violation_rolls_back_transaction(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SHOW server_version")).scalar_one().startswith("15.")
            conn.execute(
                sa.text(
                    "CREATE TABLE trade_decisions ("
                    " id bigserial PRIMARY KEY,"
                    " decision_hash text NOT NULL UNIQUE,"
                    " symbol text NOT NULL)"
                )
            )
        ins = sa.text("INSERT INTO trade_decisions (decision_hash, symbol) VALUES (:h, :s)")
        with engine.connect() as conn:
            tx = conn.begin()
            conn.execute(ins, {"h": "h1", "s": "AAPL"})
            conn.execute(ins, {"h": "h2", "s": "MSFT"})
            with pytest.raises(sa.exc.IntegrityError) as exc:
                conn.execute(ins, {"h": "h1", "s": "AAPL"})
            assert tx.is_active
            tx.rollback()
        assert isinstance(exc.value.orig, psycopg.errors.UniqueViolation)
        assert exc.value.orig.diag.constraint_name == "trade_decisions_decision_hash_key"
        with engine.connect() as conn:
            # the whole transaction was rolled back, including the non-conflicting rows
            assert conn.execute(sa.text("SELECT count(*) FROM trade_decisions")).scalar_one() == 0
        with engine.begin() as conn:
            conn.execute(ins, {"h": "h1", "s": "AAPL"})
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM trade_decisions")).scalar_one() == 1
    finally:
        engine.dispose()


def test_databases_are_isolated(pg_url: str, pg_admin_url: str) -> None:
    name = sa.make_url(pg_url).database
    assert name is not None
    assert name.startswith("t_")
    engine = sa.create_engine(pg_admin_url)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT datname FROM pg_database")).scalars().all()
        assert name in names
    finally:
        engine.dispose()
