"""``promotion_signoffs`` and ``promotion_verdicts``: who approved what, and what the check said.

Why append-only rows keyed by the subject hash (:mod:`trading.promote.subject`): an auditor must
see every sign-off and every verdict, including failed ones, and the live gate only ever asks
one question — is there a passing verdict for *exactly* the strategies and prompt this process
runs — which is one indexed lookup.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from trading.adapters.store.models import Base
from trading.adapters.store.types import JSON_DOC, UtcDateTime

__all__ = [
    "PromotionSignoffRow",
    "PromotionVerdictRow",
    "SignOff",
    "Verdict",
    "latest_passing",
    "record_signoff",
    "record_verdict",
    "signoffs_for",
]

_NOW = sa.text("CURRENT_TIMESTAMP")


class PromotionSignoffRow(Base):
    __tablename__ = "promotion_signoffs"
    __table_args__ = (sa.Index("promotion_signoffs_subject_hash_idx", "subject_hash"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)
    subject_hash: Mapped[str] = mapped_column(sa.Text)
    subject: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    approver: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)


class PromotionVerdictRow(Base):
    __tablename__ = "promotion_verdicts"
    __table_args__ = (
        sa.Index("promotion_verdicts_subject_hash_passed_idx", "subject_hash", "passed"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=_NOW)
    run_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("backtest_runs.id"))
    subject_hash: Mapped[str] = mapped_column(sa.Text)
    subject: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    reasons: Mapped[list[str]] = mapped_column(JSON_DOC)


class SignOff(msgspec.Struct, frozen=True):
    id: str
    created_at: datetime
    subject_hash: str
    approver: str
    reason: str


class Verdict(msgspec.Struct, frozen=True):
    id: str
    created_at: datetime
    run_id: str
    subject_hash: str
    passed: bool
    reasons: list[str]


def record_signoff(
    session: Session, subject: dict[str, Any], digest: str, *, approver: str, reason: str
) -> uuid.UUID:
    if not approver.strip() or not reason.strip():
        raise ValueError("a sign-off needs who approved it and why")
    row_id = uuid.uuid4()
    session.add(
        PromotionSignoffRow(
            id=row_id, subject_hash=digest, subject=subject, approver=approver, reason=reason
        )
    )
    session.flush()
    return row_id


def signoffs_for(session: Session, digest: str) -> list[SignOff]:
    rows = session.scalars(
        sa.select(PromotionSignoffRow)
        .where(PromotionSignoffRow.subject_hash == digest)
        .order_by(PromotionSignoffRow.created_at, PromotionSignoffRow.id)
    )
    return [SignOff(str(r.id), r.created_at, r.subject_hash, r.approver, r.reason) for r in rows]


def record_verdict(
    session: Session,
    *,
    run_id: uuid.UUID,
    subject: dict[str, Any],
    digest: str,
    policy: dict[str, Any],
    reasons: list[str],
) -> Verdict:
    row = PromotionVerdictRow(
        id=uuid.uuid4(),
        run_id=run_id,
        subject_hash=digest,
        subject=subject,
        policy=policy,
        passed=not reasons,
        reasons=reasons,
    )
    session.add(row)
    session.flush()
    session.refresh(row)
    return _verdict(row)


def latest_passing(session: Session, digest: str | None = None) -> Verdict | None:
    """The newest passing verdict (for ``digest``, or for any subject)."""
    q = sa.select(PromotionVerdictRow).where(PromotionVerdictRow.passed.is_(True))
    if digest is not None:
        q = q.where(PromotionVerdictRow.subject_hash == digest)
    row = session.scalars(
        q.order_by(PromotionVerdictRow.created_at.desc(), PromotionVerdictRow.id).limit(1)
    ).first()
    return None if row is None else _verdict(row)


def _verdict(r: PromotionVerdictRow) -> Verdict:
    return Verdict(str(r.id), r.created_at, str(r.run_id), r.subject_hash, r.passed, r.reasons)
