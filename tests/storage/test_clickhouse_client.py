"""connect(): creates the database, names both ways out when chdb's directory is taken."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torghut.clickhouse import Client, EmbeddedClickHouseError, connect
from torghut.clickhouse.client import embedded_path
from torghut.config import ClickHouseSettings

REPO = Path(__file__).resolve().parents[2]


def test_connect_creates_the_database_and_returns_aware_utc(chdb_path: Path) -> None:
    settings = ClickHouseSettings(dsn=f"chdb://{chdb_path}", database="t_connect_creates")
    client = connect(settings)
    try:
        assert client.command("SELECT currentDatabase()") == "t_connect_creates"
        (ts,) = client.query("SELECT toDateTime64('2026-01-02 03:04:05.678', 3, 'UTC')").first_row
        assert ts.utcoffset() is not None
        assert ts.isoformat() == "2026-01-02T03:04:05.678000+00:00"
    finally:
        client.command("DROP DATABASE t_connect_creates SYNC")
        client.close()


def test_a_second_data_dir_in_one_process_is_refused(
    ch: Client, tmp_path: Path, chdb_path: Path
) -> None:
    other = ClickHouseSettings(dsn=f"chdb://{tmp_path / 'other'}", database="x")
    with pytest.raises(EmbeddedClickHouseError, match="one data directory per process"):
        connect(other)


def test_a_directory_locked_by_another_process_names_both_ways_out(tmp_path: Path) -> None:
    data = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from torghut.clickhouse import connect
                from torghut.config import ClickHouseSettings
                c = connect(ClickHouseSettings(dsn="chdb://{data}", database="held"))
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    from torghut.clickhouse import EmbeddedClickHouseError, connect
                    from torghut.config import ClickHouseSettings
                    try:
                        connect(ClickHouseSettings(dsn="chdb://{data}", database="x"))
                    except EmbeddedClickHouseError as exc:
                        print(exc)
                    """
                ),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert "locked by another process" in second.stdout
    assert "CH_DSN=http://" in second.stdout
    assert "in one process" in second.stdout


def test_embedded_path_parsing() -> None:
    assert embedded_path("chdb:///var/x/chdb") == Path("/var/x/chdb")
    assert embedded_path("chdb://rel/dir") == Path("rel/dir").resolve()
    with pytest.raises(EmbeddedClickHouseError, match="needs a data directory"):
        embedded_path("chdb://memory")
