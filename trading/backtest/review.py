"""Offline reviewers for a backtest: recorded verdicts or a deterministic policy, never the network.

Why reviewers (``trading.ports.Reviewer``) rather than a shortcut around the review: the answer
still passes the live policy (:class:`trading.core.llm.DecisionReview`: schema, bounds, quantity
increment, confidence, fallback, circuit breaker), so a replayed verdict has exactly the effect
it had, or would have had, live. The breaker runs on the replay's event time, so how fast a
backtest runs never changes which reviews it skips.

* :class:`RecordedReviewer` answers with the raw model text stored in ``llm_decision_reviews``
  for the same decision hash; a decision without one gets a provider error, hence the policy's
  fallback (as when the provider was unreachable);
* :class:`ApprovingReviewer` approves every order with full confidence (a review that changes
  nothing, to measure the cost of the review path itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session

from torghut.config import LlmSettings
from trading.adapters.store.models import LlmReviewRow, TradeDecisionRow
from trading.backtest.config import BacktestConfig, settings_from
from trading.core.clock import Clock
from trading.core.llm import DecisionReview
from trading.core.ports import ProviderReply, ReviewRequest
from trading.core.quantity import QuantityRules

__all__ = [
    "ApprovingReviewer",
    "RecordedReviewer",
    "RecordedVerdict",
    "load_recorded",
    "offline_review",
]

_APPROVE = msgspec.json.encode(
    {"verdict": "approve", "confidence": 1.0, "reason": "deterministic backtest policy"}
).decode()


class RecordedVerdict(msgspec.Struct, frozen=True):
    model: str
    raw_response: str | None
    error: str | None


class ApprovingReviewer:
    model = "backtest/approve"

    def review(self, request: ReviewRequest) -> ProviderReply:
        return ProviderReply(self.model, _APPROVE, 0)


class RecordedReviewer:
    def __init__(self, verdicts: Mapping[str, RecordedVerdict], model: str) -> None:
        self._verdicts = dict(verdicts)
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    def review(self, request: ReviewRequest) -> ProviderReply:
        found = self._verdicts.get(request.decision_hash)
        if found is None:
            return ProviderReply(self._model, None, 0, error="recorded: no verdict stored")
        if found.raw_response is None:
            return ProviderReply(found.model, None, 0, error=found.error or "recorded: empty")
        return ProviderReply(found.model, found.raw_response, 0)


def load_recorded(session: Session, start: datetime, end: datetime) -> dict[str, RecordedVerdict]:
    """The newest stored review of each decision made on a signal in ``[start, end)``."""
    q = (
        sa.select(
            TradeDecisionRow.decision_hash,
            LlmReviewRow.model,
            LlmReviewRow.raw_response,
            LlmReviewRow.error,
        )
        .join(TradeDecisionRow, TradeDecisionRow.id == LlmReviewRow.decision_id)
        .where(TradeDecisionRow.event_ts >= start, TradeDecisionRow.event_ts < end)
        .order_by(LlmReviewRow.created_at, LlmReviewRow.id)
    )
    return {h: RecordedVerdict(m, raw, err) for h, m, raw, err in session.execute(q)}


def offline_review(
    config: BacktestConfig,
    recorded: Mapping[str, RecordedVerdict],
    clock: Clock,
    *,
    llm: Mapping[str, object] | None = None,
) -> tuple[DecisionReview | None, str | None]:
    """The review policy over the configured offline reviewer (``None`` for ``review=none``).

    ``llm`` overrides ``LLM_*`` policy settings (shadow, fallback, min confidence…); ``clock``
    is the replay's simulated clock (the breaker runs on it).
    """
    if config.review == "none":
        return None, None
    models = sorted({v.model for v in recorded.values()})
    reviewer: ApprovingReviewer | RecordedReviewer = (
        ApprovingReviewer()
        if config.review == "approve"
        else RecordedReviewer(recorded, models[0] if len(models) == 1 else "recorded")
    )
    settings = settings_from(LlmSettings, {"enabled": True, **dict(llm or {})})
    review = DecisionReview(
        reviewer,
        settings,
        live=False,
        quantity=QuantityRules(config.fractional_symbols),
        clock=clock,
    )
    return review, reviewer.model
