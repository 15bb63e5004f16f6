"""What a dataflow process does before its flow runs: storage migrated, run arguments read.

* :func:`migrate_clickhouse`: the one "connect → migrate" of every flow that touches
  ClickHouse (TA, trading, the demo). The trading store (Postgres/SQLite) migrates itself when
  :class:`trading.adapters.store.TradingStore` opens it.
* :func:`bytewax_run_args`: the recovery directory and cluster position ``python -m
  bytewax.run`` was started with, read the way ``bytewax.run`` reads them (flags, then its
  environment variables, the StatefulSet pod name and the hostfile), because the flow must
  prepare the recovery directory before Bytewax opens it, i.e. while the flow is built.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torghut.clickhouse import connect, migrate
from torghut.config import ClickHouseSettings
from torghut.logs import get_logger
from torghut.recovery import SOLO, ClusterMember

__all__ = ["BytewaxRun", "bytewax_run_args", "migrate_clickhouse"]

log = get_logger("dataflows.startup")


def migrate_clickhouse(settings: ClickHouseSettings) -> list[str]:
    """Connect, apply every pending migration, close; the labels applied (logged)."""
    client = connect(settings)
    try:
        applied = migrate(client, settings)
    finally:
        client.close()
    if applied:
        log.info("clickhouse_migrated", applied=applied)
    return applied


@dataclass(frozen=True)
class BytewaxRun:
    """The arguments of ``python -m bytewax.run`` that the flow's start-up needs."""

    recovery_dir: Path | None
    member: ClusterMember
    backup_interval_s: int | None
    """``-b``: how long Bytewax keeps older snapshots (the backups' safety margin)."""
    snapshot_interval_s: float | None
    """``-s``: how often Bytewax snapshots (the checkpoint-age metric's expected period)."""


def bytewax_run_args(argv: Sequence[str], environ: Mapping[str, str]) -> BytewaxRun | None:
    """What ``bytewax.run`` was started with, or None when this process is not ``bytewax.run``
    (tests, ``bytewax.visualize``)."""
    if not argv or not argv[0].replace("\\", "/").endswith("bytewax/run.py"):
        return None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", type=Path)
    parser.add_argument("-b", "--backup-interval", type=int)
    parser.add_argument("-s", "--snapshot-interval", type=float)
    parser.add_argument("-i", "--process-id", type=int)
    parser.add_argument("-a", "--addresses")
    args, _ = parser.parse_known_args(list(argv[1:]))
    recovery = args.recovery_directory or _env_path(environ, "BYTEWAX_RECOVERY_DIRECTORY")
    backup = args.backup_interval
    if backup is None and environ.get("BYTEWAX_RECOVERY_BACKUP_INTERVAL"):
        backup = int(environ["BYTEWAX_RECOVERY_BACKUP_INTERVAL"])
    process = args.process_id
    if process is None and environ.get("BYTEWAX_PROCESS_ID"):
        process = int(environ["BYTEWAX_PROCESS_ID"])
    if process is None and "BYTEWAX_POD_NAME" in environ and "BYTEWAX_STATEFULSET_NAME" in environ:
        prefix = environ["BYTEWAX_STATEFULSET_NAME"] + "-"
        process = int(environ["BYTEWAX_POD_NAME"].replace(prefix, ""))
    addresses = args.addresses or environ.get("BYTEWAX_ADDRESSES")
    if process is not None and addresses is None and "BYTEWAX_HOSTFILE_PATH" in environ:
        lines = Path(environ["BYTEWAX_HOSTFILE_PATH"]).read_text().splitlines()
        addresses = ";".join(line.strip() for line in lines if line.strip())
    member = SOLO
    if process is not None and addresses:
        member = ClusterMember(process, len(addresses.split(";")))
    snapshot = args.snapshot_interval
    if snapshot is None and environ.get("BYTEWAX_SNAPSHOT_INTERVAL"):
        snapshot = float(environ["BYTEWAX_SNAPSHOT_INTERVAL"])
    return BytewaxRun(recovery, member, backup, snapshot)


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None
