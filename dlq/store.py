"""Reads and writes of the dead-letter tables (:mod:`dlq.tables`) over a SQLAlchemy engine.

Why the consumer's Kafka positions live here and not in Kafka's group offsets: a batch's rows
and the positions after it are committed in one transaction, so a crash between the two cannot
lose records (positions ahead of rows) or count them twice (rows ahead of positions). Identical
records are grouped by ``ON CONFLICT`` on the identity key (topic, stage, reason, raw SHA-256),
the batch pre-aggregated first because one statement may not touch a row twice.

Postgres in production; SQLite works too (the API lists an empty table on the embedded
default).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from dlq.tables import dead_letter_offsets, dead_letter_replays, dead_letters

__all__ = [
    "DeadLetterQuery",
    "DeadLetterStore",
    "IncomingLetter",
    "Replay",
    "StoredLetter",
]


@dataclass(frozen=True)
class IncomingLetter:
    """One record read from a DLQ topic, with where it was read."""

    topic: str
    partition: int
    offset: int
    stage: str
    reason: str
    error: str
    symbol: str | None
    source: str
    raw: bytes
    received_at: datetime


@dataclass(frozen=True)
class StoredLetter:
    """A row of ``dead_letters`` with its replays summarised."""

    id: int
    topic: str
    stage: str
    reason: str
    error: str
    symbol: str | None
    source: str
    raw: bytes
    first_seen_at: datetime
    last_seen_at: datetime
    count: int
    first_partition: int
    first_offset: int
    replays: int
    last_replayed_at: datetime | None


@dataclass(frozen=True)
class Replay:
    """A row of ``dead_letter_replays``."""

    id: int
    dead_letter_id: int
    replayed_at: datetime
    target_topic: str
    messages: int
    note: str


@dataclass(frozen=True)
class DeadLetterQuery:
    """Which rows to list or replay; every given filter must match (``ids`` alone also works).

    ``since`` / ``until`` bound ``last_seen_at`` (half-open: ``since <= t < until``).
    """

    ids: tuple[int, ...] = ()
    topic: str | None = None
    stage: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100

    @property
    def selective(self) -> bool:
        """Whether any filter is given (a replay of everything must be asked for explicitly)."""
        return bool(self.ids) or any(
            v is not None for v in (self.topic, self.stage, self.reason, self.since, self.until)
        )


class DeadLetterStore:
    """The dead-letter tables of one database."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------ consumer side

    def positions(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """Next offset to read of every partition of ``topics`` the store has seen."""
        q = sa.select(dead_letter_offsets).where(dead_letter_offsets.c.topic.in_(list(topics)))
        with self._engine.connect() as conn:
            return {(r.topic, r.partition): r.next_offset for r in conn.execute(q)}

    def record(
        self, letters: Sequence[IncomingLetter], positions: Mapping[tuple[str, int], int]
    ) -> None:
        """Add ``letters`` and move the read positions to ``positions``, in one transaction."""
        with self._engine.begin() as conn:
            for row in _grouped(letters):
                conn.execute(self._upsert(row))
            for (topic, partition), next_offset in positions.items():
                conn.execute(self._position(topic, partition, next_offset))

    def _upsert(self, row: dict[str, Any]) -> Any:
        insert = postgresql.insert if self._pg else sqlite.insert
        stmt = insert(dead_letters).values(**row)
        earliest, latest = (
            (sa.func.least, sa.func.greatest) if self._pg else (sa.func.min, sa.func.max)
        )
        ex = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=["topic", "stage", "reason", "raw_sha256"],
            set_={
                "count": dead_letters.c.count + ex.count,
                "first_seen_at": earliest(dead_letters.c.first_seen_at, ex.first_seen_at),
                "last_seen_at": latest(dead_letters.c.last_seen_at, ex.last_seen_at),
                "error": ex.error,
            },
        )

    def _position(self, topic: str, partition: int, next_offset: int) -> Any:
        insert = postgresql.insert if self._pg else sqlite.insert
        stmt = insert(dead_letter_offsets).values(
            topic=topic, partition=partition, next_offset=next_offset
        )
        return stmt.on_conflict_do_update(
            index_elements=["topic", "partition"], set_={"next_offset": next_offset}
        )

    # ------------------------------------------------------------------ reads

    def find(self, query: DeadLetterQuery) -> list[StoredLetter]:
        """Rows matching ``query``, most recently seen first, at most ``query.limit``."""
        d = dead_letters
        replays = (
            sa.select(
                dead_letter_replays.c.dead_letter_id,
                sa.func.count().label("replays"),
                sa.func.max(dead_letter_replays.c.replayed_at).label("last_replayed_at"),
            )
            .group_by(dead_letter_replays.c.dead_letter_id)
            .subquery()
        )
        q = (
            sa.select(d, replays.c.replays, replays.c.last_replayed_at)
            .outerjoin(replays, replays.c.dead_letter_id == d.c.id)
            .order_by(d.c.last_seen_at.desc(), d.c.id.desc())
            .limit(query.limit)
        )
        if query.ids:
            q = q.where(d.c.id.in_(query.ids))
        for column, value in ((d.c.topic, query.topic), (d.c.stage, query.stage)):
            if value is not None:
                q = q.where(column == value)
        if query.reason is not None:
            q = q.where(d.c.reason == query.reason)
        if query.since is not None:
            q = q.where(d.c.last_seen_at >= query.since)
        if query.until is not None:
            q = q.where(d.c.last_seen_at < query.until)
        with self._engine.connect() as conn:
            return [_stored(r) for r in conn.execute(q)]

    def get(self, letter_id: int) -> StoredLetter | None:
        found = self.find(DeadLetterQuery(ids=(letter_id,), limit=1))
        return found[0] if found else None

    def replays_of(self, letter_id: int) -> list[Replay]:
        """Every replay of one row, oldest first."""
        r = dead_letter_replays
        q = sa.select(r).where(r.c.dead_letter_id == letter_id).order_by(r.c.replayed_at, r.c.id)
        with self._engine.connect() as conn:
            return [
                Replay(
                    x.id, x.dead_letter_id, _utc(x.replayed_at), x.target_topic, x.messages, x.note
                )
                for x in conn.execute(q)
            ]

    # ------------------------------------------------------------------ replay side

    def record_replays(
        self, done: Sequence[tuple[int, str, int]], replayed_at: datetime, note: str
    ) -> None:
        """Record ``(dead letter id, target topic, messages)`` replays, in one transaction."""
        if not done:
            return
        rows = [
            {
                "dead_letter_id": letter_id,
                "replayed_at": replayed_at,
                "target_topic": topic,
                "messages": messages,
                "note": note,
            }
            for letter_id, topic, messages in done
        ]
        with self._engine.begin() as conn:
            conn.execute(sa.insert(dead_letter_replays), rows)


def _grouped(letters: Sequence[IncomingLetter]) -> list[dict[str, Any]]:
    """One row per identity: the batch's copies counted, earliest and latest seen kept."""
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for x in letters:
        digest = hashlib.sha256(x.raw).hexdigest()
        key = (x.topic, x.stage, x.reason, digest)
        row = rows.get(key)
        if row is None:
            rows[key] = {
                "topic": x.topic,
                "stage": x.stage,
                "reason": x.reason,
                "error": x.error,
                "symbol": x.symbol,
                "source": x.source,
                "raw": x.raw,
                "raw_sha256": digest,
                "first_seen_at": x.received_at,
                "last_seen_at": x.received_at,
                "count": 1,
                "first_partition": x.partition,
                "first_offset": x.offset,
            }
            continue
        row["count"] += 1
        row["error"] = x.error
        row["first_seen_at"] = min(row["first_seen_at"], x.received_at)
        row["last_seen_at"] = max(row["last_seen_at"], x.received_at)
    return list(rows.values())


def _utc(ts: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _stored(r: Any) -> StoredLetter:
    return StoredLetter(
        id=r.id,
        topic=r.topic,
        stage=r.stage,
        reason=r.reason,
        error=r.error,
        symbol=r.symbol,
        source=r.source,
        raw=bytes(r.raw),
        first_seen_at=_utc(r.first_seen_at),
        last_seen_at=_utc(r.last_seen_at),
        count=r.count,
        first_partition=r.first_partition,
        first_offset=r.first_offset,
        replays=r.replays or 0,
        last_replayed_at=_utc(r.last_replayed_at) if r.last_replayed_at is not None else None,
    )
