"""The TA tables' TTLs, read from ClickHouse, and the check that refuses rows they would drop.

Why: ``ta_microbars`` and ``ta_signals`` expire rows by ``event_ts`` (30 and 14 days in
``infra/clickhouse/0001_ta_tables.sql``, ``ttl_only_drop_parts``). A backfill of older data
inserts rows that ClickHouse drops at once, so the run would end successfully having stored
nothing. The TTL is read from the table itself (``system.tables.engine_full``), so a migration
that changes it changes the check, and a backfill whose input is older than a table's TTL is
refused with an error naming the table, its TTL and the oldest event time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from torghut.clickhouse.client import Client
from torghut.logs import get_logger

__all__ = ["RowsBeyondTtl", "TtlGuard", "oldest_envelope_time", "parse_ttl", "table_ttls"]

log = get_logger("torghut.clickhouse.ttl")

_UNITS = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=31),  # the longest month: never refuse rows ClickHouse keeps
    "year": timedelta(days=366),
}
_TTL = re.compile(
    r"\bTTL\b.*?\+\s*(?:toInterval(\w+?)\(\s*(\d+)\s*\)|INTERVAL\s+(\d+)\s+(\w+?)S?\b)",
    re.IGNORECASE | re.DOTALL,
)


class RowsBeyondTtl(RuntimeError):
    """The input holds rows older than a table keeps; writing them would store nothing."""


def parse_ttl(engine_full: str) -> timedelta | None:
    """The row TTL of a table's ``engine_full`` (``… TTL toDateTime(ts) + toIntervalDay(30)``).

    >>> parse_ttl("ReplacingMergeTree(ingest_ts) TTL toDateTime(event_ts) + toIntervalDay(14)")
    datetime.timedelta(days=14)
    >>> parse_ttl("MergeTree ORDER BY x") is None
    True
    """
    m = _TTL.search(engine_full)
    if m is None:
        return None
    unit, count = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    step = _UNITS.get(unit.lower())
    if step is None:
        raise ValueError(f"unsupported TTL interval unit {unit!r} in {engine_full!r}")
    return int(count) * step


def table_ttls(client: Client, database: str, tables: Iterable[str]) -> dict[str, timedelta]:
    """The row TTL of each of ``tables`` that has one, from ``system.tables``."""
    names = list(tables)
    rows = client.query(
        "SELECT name, engine_full FROM system.tables "
        "WHERE database = {db:String} AND has({names:Array(String)}, name)",
        parameters={"db": database, "names": names},
    ).result_rows
    out: dict[str, timedelta] = {}
    for name, engine_full in rows:
        ttl = parse_ttl(engine_full)
        if ttl is not None:
            out[name] = ttl
    return out


@dataclass(frozen=True)
class TtlGuard:
    """Refuses event times older than ``now - TTL`` of any of the tables written."""

    ttls: Mapping[str, timedelta]
    now: datetime

    def check(self, oldest: datetime, where: str) -> None:
        """Raise :class:`RowsBeyondTtl` if ``oldest`` is beyond a table's TTL."""
        beyond = [
            (table, ttl) for table, ttl in sorted(self.ttls.items()) if oldest < self.now - ttl
        ]
        if not beyond:
            return
        tables = "; ".join(
            f"{table} keeps rows for {_days(ttl)} (its TTL), so nothing older than "
            f"{(self.now - ttl).isoformat()} survives"
            for table, ttl in beyond
        )
        error = (
            f"refusing to write TA rows from {where}: its oldest event time is "
            f"{oldest.isoformat()}, and {tables}. Backfill recent data only, or raise the "
            "table's TTL with a new migration first."
        )
        log.error("rows_beyond_ttl", error=error)
        raise RowsBeyondTtl(error)


class _Stamp(msgspec.Struct):
    event_ts: datetime


_STAMP = msgspec.json.Decoder(_Stamp)


def oldest_envelope_time(values: Iterable[bytes | None]) -> datetime | None:
    """The oldest ``event_ts`` among JSON envelopes (values that do not decode are skipped:
    the flow dead-letters them)."""
    oldest: datetime | None = None
    for v in values:
        if v is None:
            continue
        try:
            ts = _STAMP.decode(v).event_ts
        except msgspec.DecodeError:
            continue
        if ts.tzinfo is None:
            continue
        if oldest is None or ts < oldest:
            oldest = ts
    return None if oldest is None else oldest.astimezone(UTC)


def _days(ttl: timedelta) -> str:
    return f"{ttl.days} days" if ttl.days and not ttl.seconds else str(ttl)
