"""``backtest_runs``: every stored backtest, with its inputs, metrics and both reports.

Why Postgres (the trading store) and not files: the promotion check, the API and the live gate
read runs by id next to the paper record they are compared with, and a verdict references the
run it judged (``promotion_verdicts.run_id``). The JSON report is stored as the exact bytes the
run produced (so a stored run can be compared byte for byte with a replay); the columns beside
it are what lists and checks filter on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from trading.adapters.store.models import Base
from trading.adapters.store.types import JSON_DOC, UtcDateTime
from trading.promote.subject import subject_hash, subject_of

__all__ = ["BacktestRunRow", "StoredRun", "get_run", "list_runs", "save_run", "stored"]


class BacktestRunRow(Base):
    __tablename__ = "backtest_runs"
    __table_args__ = (
        sa.Index("backtest_runs_created_at_idx", "created_at"),
        sa.Index("backtest_runs_subject_hash_idx", "subject_hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sa.text("CURRENT_TIMESTAMP")
    )
    window_start: Mapped[datetime] = mapped_column(UtcDateTime)
    window_end: Mapped[datetime] = mapped_column(UtcDateTime)
    config_digest: Mapped[str] = mapped_column(sa.Text)
    code_version: Mapped[str] = mapped_column(sa.Text)
    subject_hash: Mapped[str] = mapped_column(sa.Text)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    rejections: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    shadow: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    verdicts: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    report_json: Mapped[str] = mapped_column(sa.Text)
    report_html: Mapped[str] = mapped_column(sa.Text)


class StoredRun(msgspec.Struct, frozen=True):
    """A run as listed (without its reports)."""

    id: str
    created_at: datetime
    window_start: datetime
    window_end: datetime
    config_digest: str
    code_version: str
    subject_hash: str
    inputs: dict[str, Any]
    summary: dict[str, Any]
    metrics: dict[str, Any]
    rejections: dict[str, Any]
    shadow: dict[str, Any]
    verdicts: dict[str, Any]


def save_run(session: Session, report_json: bytes, report_html: str) -> uuid.UUID:
    """Store one run from its JSON report bytes (and page); returns its id. The caller commits."""
    doc: Mapping[str, Any] = msgspec.json.decode(report_json)
    inputs = doc["inputs"]
    cfg = inputs["config"]
    run_id = uuid.uuid4()
    session.add(
        BacktestRunRow(
            id=run_id,
            window_start=_ts(cfg["start"]),
            window_end=_ts(cfg["end"]),
            config_digest=inputs["config_digest"],
            code_version=inputs["code_version"],
            subject_hash=subject_hash(subject_of(inputs["strategies"], inputs["prompt_version"])),
            inputs=dict(inputs),
            summary=doc["summary"],
            metrics=doc["metrics"],
            rejections=doc["rejections"],
            shadow=doc["shadow"],
            verdicts=doc["verdicts"],
            report_json=report_json.decode("utf-8"),
            report_html=report_html,
        )
    )
    session.flush()
    return run_id


def list_runs(session: Session, *, limit: int, offset: int = 0) -> list[StoredRun]:
    rows = session.scalars(
        sa.select(BacktestRunRow)
        .order_by(BacktestRunRow.created_at.desc(), BacktestRunRow.id)
        .limit(limit)
        .offset(offset)
    )
    return [stored(r) for r in rows]


def get_run(session: Session, run_id: uuid.UUID) -> BacktestRunRow | None:
    return session.get(BacktestRunRow, run_id)


def stored(r: BacktestRunRow) -> StoredRun:
    return StoredRun(
        id=str(r.id),
        created_at=r.created_at,
        window_start=r.window_start,
        window_end=r.window_end,
        config_digest=r.config_digest,
        code_version=r.code_version,
        subject_hash=r.subject_hash,
        inputs=r.inputs,
        summary=r.summary,
        metrics=r.metrics,
        rejections=r.rejections,
        shadow=r.shadow,
        verdicts=r.verdicts,
    )


def _ts(text: str) -> datetime:
    return msgspec.convert(text, datetime)
