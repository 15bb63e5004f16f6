"""Opening the trading store waits, up to ``wait_s``, for a database that does not answer yet.

Why: the loop records every decision before it sends, so it cannot run without its store. A
trading process restarted while Postgres restarts or fails over used to exit at once and be
restarted again and again, under Kubernetes' growing back-off, long after the database was
back; it now waits at start (the pod's start-up probe allows it) and goes on when the database
answers. Against the real Postgres: a database that does not exist yet is refused by the real
server, exactly as one that is not accepting connections is, with an error and no password.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from tests.helpers import wait_until
from trading.adapters.store import TradingStore
from trading.core.ports import StoreUnavailable

PLANTED = "planted-Secret-7Q"


def _failures() -> float:
    return REGISTRY.get_sample_value("torghut_trading_store_open_failures_total") or 0.0


def _missing_database_url(pg_admin_url: str) -> tuple[str, str]:
    name = f"t_wait_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_admin_url).set(database=name, password=PLANTED)
    return name, url.render_as_string(hide_password=False)


def test_open_waits_until_the_database_answers(pg_admin_url: str) -> None:
    name, url = _missing_database_url(pg_admin_url)
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    before = _failures()
    opened: list[TradingStore | BaseException] = []

    def open_store() -> None:
        try:
            opened.append(TradingStore.open(url, wait_s=60.0))
        except BaseException as exc:  # handed to the test's thread
            opened.append(exc)

    opener = threading.Thread(target=open_store, daemon=True)
    opener.start()
    try:
        wait_until(lambda: _failures() >= before + 2, timeout=30, message="no retry observed")
        assert not opened, f"open returned while the database was missing: {opened}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        opener.join(timeout=60)
        assert opened, "open did not return within 60 s of the database appearing"
        store = opened[0]
        assert isinstance(store, TradingStore), store
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"trade_decisions", "executions", "trade_cursor"} <= tables
        store.close()
    finally:
        opener.join(timeout=60)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_open_gives_up_after_wait_s_with_the_reason_and_no_password(pg_admin_url: str) -> None:
    _name, url = _missing_database_url(pg_admin_url)
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        TradingStore.open(url, wait_s=1.0)
    waited = time.monotonic() - began
    assert 1.0 <= waited < 15.0, waited
    assert "does not exist" in str(raised.value)
    assert PLANTED not in str(raised.value)


def test_open_without_wait_fails_at_once(pg_admin_url: str) -> None:
    _name, url = _missing_database_url(pg_admin_url)
    before = _failures()
    with pytest.raises(StoreUnavailable):
        TradingStore.open(url)
    assert _failures() == before + 1


def test_a_sqlite_file_that_cannot_be_opened_is_not_waited_for(tmp_path: Path) -> None:
    (tmp_path / "trading.sqlite").mkdir()  # a directory where the file should be
    url = f"sqlite:///{tmp_path / 'trading.sqlite'}"
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        TradingStore.open(url, wait_s=60.0)
    assert time.monotonic() - began < 10.0
