"""Trading dead letters and signal corrections in the store (``trading_dead_letters``).

Why in the trading store and not only in a JSON-lines file: an operator asks "which signal rows
did the trading loop refuse, and which signals changed after we acted on them?" from the API and
the dashboard, filtered by time and symbol, on whichever machine serves the API; a file on the
trading process's disk answers none of that. The JSON-lines file may stay as an extra.

Rows are append-only and written by the trading flow's audit output
(:mod:`dataflows.trading_audit`); ``kind`` is ``dead_letter`` (a signal row the reader could not
use: ``reason`` says why, ``detail`` holds the error, ``raw`` a bounded rendering of the row) or
``correction`` (a newer version of a row the cursor had passed: audited, never re-traded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from trading.adapters.store.models import Base
from trading.adapters.store.types import JSON_DOC, UtcDateTime
from trading.core.signals import SignalCorrection, SignalDeadLetter

__all__ = ["DeadLetterKind", "StoredDeadLetter", "TradingDeadLetterRow", "TradingDeadLetters"]

DeadLetterKind = Literal["dead_letter", "correction"]


class TradingDeadLetterRow(Base):
    """One signal row the trading loop refused, or one correction it audited without trading."""

    __tablename__ = "trading_dead_letters"
    __table_args__ = (
        sa.Index("trading_dead_letters_kind_at_idx", "kind", "at"),
        sa.Index("trading_dead_letters_symbol_at_idx", "symbol", "at"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    symbol: Mapped[str] = mapped_column(sa.Text)
    window_size: Mapped[str] = mapped_column(sa.Text)
    event_ts: Mapped[datetime] = mapped_column(UtcDateTime)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    reason: Mapped[str] = mapped_column(sa.Text)
    detail: Mapped[str] = mapped_column(sa.Text)
    record: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)


class StoredDeadLetter(msgspec.Struct, frozen=True):
    id: int
    kind: DeadLetterKind
    at: datetime
    symbol: str
    window_size: str
    event_ts: datetime
    seq: int
    reason: str
    detail: str
    record: dict[str, Any]


class TradingDeadLetters:
    """Append and read ``trading_dead_letters`` over an engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def record(self, items: Iterable[SignalDeadLetter | SignalCorrection], at: datetime) -> int:
        """Append one row per item in one transaction; returns how many were written.

        ``at`` stamps corrections (a dead letter carries its own time)."""
        rows = [_row(item, at) for item in items]
        if rows:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(TradingDeadLetterRow), rows)
        return len(rows)

    def read(
        self,
        kind: DeadLetterKind,
        symbol: str | None,
        since: datetime | None,
        limit: int,
    ) -> list[StoredDeadLetter]:
        """Newest first."""
        t = TradingDeadLetterRow
        q = sa.select(t).where(t.kind == kind).order_by(t.at.desc(), t.id.desc()).limit(limit)
        if symbol is not None:
            q = q.where(t.symbol == symbol)
        if since is not None:
            q = q.where(t.at >= since)
        with self._engine.connect() as conn:
            found: Sequence[Any] = conn.execute(q).all()
        return [
            StoredDeadLetter(
                id=r.id,
                kind=kind,
                at=r.at,
                symbol=r.symbol,
                window_size=r.window_size,
                event_ts=r.event_ts,
                seq=r.seq,
                reason=r.reason,
                detail=r.detail,
                record=r.record,
            )
            for r in found
        ]

    def counts_by_reason(self, since: datetime | None) -> dict[tuple[str, str], int]:
        """``(kind, reason) -> rows`` at or after ``since``."""
        t = TradingDeadLetterRow
        q = sa.select(t.kind, t.reason, sa.func.count()).group_by(t.kind, t.reason)
        if since is not None:
            q = q.where(t.at >= since)
        with self._engine.connect() as conn:
            return {(str(k), str(r)): int(n) for k, r, n in conn.execute(q).all()}


def _row(item: SignalDeadLetter | SignalCorrection, at: datetime) -> dict[str, Any]:
    c = item.cursor
    base: dict[str, Any] = {
        "symbol": c.symbol,
        "window_size": c.window_size,
        "event_ts": c.event_ts,
        "seq": c.seq,
        "record": msgspec.to_builtins(item),
    }
    if isinstance(item, SignalDeadLetter):
        return {
            **base,
            "kind": "dead_letter",
            "at": item.at,
            "reason": item.reason,
            "detail": item.error[:2000],
        }
    return {
        **base,
        "kind": "correction",
        "at": at,
        "reason": "signal_corrected_after_use",
        "detail": f"version {item.version} ingested at {item.ingest_ts.isoformat()}",
    }
