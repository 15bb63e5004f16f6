"""Fixtures of the storage tests: ClickHouse settings/clients on the per-test chdb database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from torghut.clickhouse import Client, connect, migrate
from torghut.config import ClickHouseSettings


@pytest.fixture
def ch_settings(chdb_path: Path, ch_database: str) -> ClickHouseSettings:
    """Settings pointing at this process's chdb dir and the test's fresh database."""
    return ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=ch_database)


@pytest.fixture
def ch(ch_settings: ClickHouseSettings) -> Iterator[Client]:
    """A :func:`torghut.clickhouse.connect` client on a database with every migration applied."""
    client = connect(ch_settings)
    migrate(client, ch_settings)
    yield client
    client.close()
