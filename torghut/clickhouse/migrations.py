"""Apply the versioned ClickHouse migrations of ``infra/clickhouse/`` once each.

Why a migrator of our own: the DDL must render for a single node (``ReplacingMergeTree``) and
for a cluster (``Replicated…`` + ``ON CLUSTER``) from one source, which generic tools do not
do, and chdb (tests, embedded default) must run it in-process. The rules:

* ``NNNN_name.sql`` files, applied in version order; each applied version is recorded with its
  SHA-256 in ``<database>.schema_migrations`` (read with ``FINAL``);
* an applied file whose checksum changed stops the run before anything is applied
  (:class:`MigrationError`): fix forward with a new file;
* statements are idempotent (``IF NOT EXISTS``), so a crash between applying a file and
  recording it only re-applies it.

Placeholders (double braces, so ClickHouse's ``{shard}``/``{replica}`` macros pass through):
``{{db}}``, ``{{on_cluster}}``, ``{{replacing_engine(table, version_column)}}``.
In a cluster the migration log itself is replicated per shard, so any replica of the shard the
migrator talks to knows what was applied.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from torghut.clickhouse.client import Client, connect, quote_ident
from torghut.clickhouse.row_binary import insert_rows, layout_of
from torghut.config import ClickHouseSettings, SettingsError, load_section
from torghut.logs import configure_logging, get_logger

__all__ = [
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationError",
    "load_migrations",
    "migrate",
    "render",
    "statements",
]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "infra" / "clickhouse"

_LOG_TABLE = "schema_migrations"
_LOG_DDL = """
CREATE TABLE IF NOT EXISTS {{db}}.schema_migrations {{on_cluster}} (
  version UInt32,
  name String,
  checksum String,
  applied_at DateTime64(3, 'UTC')
)
ENGINE = {{replacing_engine(schema_migrations, applied_at)}}
ORDER BY version
"""
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*(?:\(([^)]*)\))?\s*\}\}")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)

log = get_logger("torghut.clickhouse.migrations")


class MigrationError(RuntimeError):
    """Migrations cannot be applied safely (changed file, bad template, bad file name)."""


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file: its source template and the SHA-256 of that source."""

    version: int
    name: str
    source: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All ``NNNN_name.sql`` files of ``directory`` in version order (duplicates rejected)."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake.sql")
        raw = path.read_bytes()
        mig = Migration(int(m[1]), m[2], raw.decode(), hashlib.sha256(raw).hexdigest())
        if mig.version in found:
            raise MigrationError(f"two migrations with version {m[1]}: {found[mig.version].label}")
        found[mig.version] = mig
    return [found[v] for v in sorted(found)]


def render(template: str, settings: ClickHouseSettings) -> str:
    """Fill the placeholders for a single node or, with ``settings.cluster``, a cluster."""

    def fill(m: re.Match[str]) -> str:
        name, args = m[1], [a.strip() for a in (m[2] or "").split(",") if a.strip()]
        if name == "db" and not args:
            return quote_ident(settings.database)
        if name == "on_cluster" and not args:
            return f"ON CLUSTER {quote_ident(settings.cluster)}" if settings.cluster else ""
        if name == "replacing_engine" and len(args) == 2:
            table, version_column = args
            if settings.cluster is None:
                return f"ReplacingMergeTree({version_column})"
            return (
                f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{cluster}}/{{shard}}/{table}', "
                f"'{{replica}}', {version_column})"
            )
        raise MigrationError(f"unknown placeholder {m[0]!r}")

    return _PLACEHOLDER.sub(fill, template)


def statements(sql: str) -> list[str]:
    """Split rendered SQL into statements at ``;`` line ends; full-line ``--`` comments dropped."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]


def migrate(
    client: Client, settings: ClickHouseSettings, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Apply pending migrations in order; return the labels applied (``[]`` when up to date)."""
    migrations = load_migrations(directory)
    client.command(render(_LOG_DDL, settings))
    applied = _applied(client, settings)
    changed = [
        m.label for m in migrations if m.version in applied and applied[m.version] != m.checksum
    ]
    if changed:
        raise MigrationError(
            f"applied migrations changed on disk: {', '.join(changed)}; never edit an applied "
            "file, add a new one"
        )
    unknown = sorted(set(applied) - {m.version for m in migrations})
    if unknown:
        log.warning("migrations_unknown_to_this_build", versions=unknown)
    done: list[str] = []
    log_table = f"{quote_ident(settings.database)}.{_LOG_TABLE}"
    log_layout = layout_of(client, log_table, ("version", "name", "checksum", "applied_at"))
    for mig in migrations:
        if mig.version in applied:
            continue
        for stmt in statements(render(mig.source, settings)):
            client.command(stmt)
        row = (mig.version, mig.name, mig.checksum, datetime.now(UTC))
        insert_rows(client, log_table, log_layout, [row])
        log.info("migration_applied", migration=mig.label, cluster=settings.cluster)
        done.append(mig.label)
    return done


def _applied(client: Client, settings: ClickHouseSettings) -> dict[int, str]:
    rows = client.query(
        f"SELECT version, checksum FROM {quote_ident(settings.database)}.{_LOG_TABLE} FINAL"
    ).result_rows
    return {int(v): str(c) for v, c in rows}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m torghut.clickhouse [--print] [--dir DIR]`` (settings from CH_*)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--print", action="store_true", help="print the rendered SQL only")
    parser.add_argument("--dir", type=Path, default=MIGRATIONS_DIR)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_section(ClickHouseSettings)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if args.print:
        for mig in load_migrations(args.dir):
            sys.stdout.write(f"-- {mig.label}\n")
            for stmt in statements(render(mig.source, settings)):
                sys.stdout.write(f"{stmt};\n\n")
        return 0
    client = connect(settings)
    try:
        applied = migrate(client, settings, args.dir)
    finally:
        client.close()
    sys.stdout.write("\n".join(applied or ["up to date"]) + "\n")
    return 0
