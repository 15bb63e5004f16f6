"""Open a clickhouse-connect client for the configured ClickHouse, server or embedded.

Why one factory: production talks to a ClickHouse server over HTTP(S) and the embedded default
runs the same engine in-process through chdb; both are reached through the same
clickhouse-connect ``Client`` API, so every caller (TA sink, trading loop, API) gets its client
here and never branches on the backend.

chdb limits that shape this module (``shared/infra-provisioning.md`` §5.3):

* one engine path per process: every client of a process shares that engine, each with its own
  handle (cheap, ~15 ms after the first). Asking for a second path raises
  :class:`EmbeddedClickHouseError` instead of chdb's terse ``BAD_ARGUMENTS``;
* the data directory is locked by the process that opened it: a second process gets a clear
  error naming both ways out (a ClickHouse server via ``CH_DSN=http://...``, or all stages that
  touch ClickHouse in one process).

Timestamps come back as timezone-aware UTC datetimes (``tz_mode="aware"``), matching the
:mod:`torghut.events` contracts.
"""

from __future__ import annotations

import errno
import fcntl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from torghut.config import ClickHouseSettings

__all__ = ["Client", "EmbeddedClickHouseError", "connect", "embedded_path", "quote_ident"]


class EmbeddedClickHouseError(RuntimeError):
    """The embedded (chdb) ClickHouse cannot be opened by this process; the message says why."""


_engine_lock = threading.Lock()
_engine_path: Path | None = None


def connect(settings: ClickHouseSettings) -> Client:
    """A client on ``settings.database``, created if missing (``ON CLUSTER`` when clustered).

    Each call returns a new client (its own session/handle); close it when done. For chdb all
    clients of the process share one engine, so calls are cheap after the first.
    """
    if settings.embedded:
        path = embedded_path(settings.dsn)
        bootstrap = _open_embedded(path, database=None)
        _create_database(bootstrap, settings)
        bootstrap.close()
        return _open_embedded(path, database=settings.database)
    # clickhouse-connect picks TLS from the port only; the DSN's scheme must say it explicitly.
    tls = settings.dsn.startswith(("https://", "clickhouses://"))
    bootstrap = clickhouse_connect.get_client(
        dsn=settings.dsn, database="default", secure=tls, tz_mode="aware"
    )
    _create_database(bootstrap, settings)
    bootstrap.close()
    return clickhouse_connect.get_client(
        dsn=settings.dsn, database=settings.database, secure=tls, tz_mode="aware"
    )


def embedded_path(dsn: str) -> Path:
    """The data directory of a ``chdb:///abs/dir`` DSN (absolute; relative paths resolved)."""
    parts = urlsplit(dsn)
    raw = (parts.netloc + parts.path) if parts.netloc not in ("", "memory") else parts.path
    if parts.netloc == "memory" or not raw:
        raise EmbeddedClickHouseError(
            f"CH_DSN={dsn!r}: the embedded store needs a data directory, e.g. chdb:///var/data/chdb"
        )
    return Path(raw).resolve()


def quote_ident(name: str) -> str:
    """Backquote an identifier (database, table, cluster) for interpolation into DDL."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _create_database(client: Client, settings: ClickHouseSettings) -> None:
    on_cluster = f" ON CLUSTER {quote_ident(settings.cluster)}" if settings.cluster else ""
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_ident(settings.database)}{on_cluster}")


def _open_embedded(path: Path, database: str | None) -> Client:
    global _engine_path
    with _engine_lock:
        if _engine_path is not None and _engine_path != path:
            raise EmbeddedClickHouseError(
                f"this process already runs the embedded ClickHouse on {_engine_path}; chdb allows "
                f"one data directory per process, so {path} cannot be opened too"
            )
        path.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"dsn": f"chdb://{path}", "tz_mode": "aware"}
        if database is not None:
            kwargs["database"] = database
        try:
            client = clickhouse_connect.get_client(**kwargs)
        except ProgrammingError as exc:
            if "already initialized with path" in str(exc):
                raise EmbeddedClickHouseError(
                    f"this process already runs the embedded ClickHouse on another directory; "
                    f"chdb allows one data directory per process, so {path} cannot be opened too"
                ) from exc
            if _engine_path is None and _locked_elsewhere(path):
                raise EmbeddedClickHouseError(
                    f"the embedded ClickHouse directory {path} is locked by another process. "
                    "Either point every stage at a ClickHouse server (CH_DSN=http://host:8123), "
                    "or run the stages that use ClickHouse (TA sink, trading loop, API) in one "
                    "process."
                ) from exc
            raise
        _engine_path = path
        return client


def _locked_elsewhere(path: Path) -> bool:
    """True when another process holds ClickHouse's ``status`` file lock in ``path``.

    Only called while this process has no engine open, so our own lock cannot be the holder.
    """
    status = path / "status"
    if not status.exists():
        return False
    with status.open("rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EAGAIN, errno.EACCES)
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False
