"""From a deterministic decision to an order intent: LLM review (when enabled), then risk.

Why one function: the order of the gates is a safety property — review may only shrink or veto,
and risk runs *after* review on the decision that would actually be sent, every time. The
trading flow calls :func:`adjudicate` and stores the result in one unit of work
(``store.record_decision(a.decision, risk=a.risk, review=a.review)``); it never calls the
gates itself. A vetoed decision skips risk (nothing would be sent) and is stored as vetoed.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from prometheus_client import Counter

from torghut.config import LlmSettings, TradingSettings
from torghut.logs import get_logger
from trading.domain import Action, Decision, SignalRow
from trading.llm import DecisionReview, OpenAiChatReviewer, ReviewOutcome
from trading.risk import RiskContext, RiskLimits, RiskVerdict, evaluate

__all__ = ["Adjudication", "adjudicate", "build_review"]

_log = get_logger("trading.adjudicate")

OUTCOMES = Counter(
    "torghut_trading_adjudications_total",
    "Decisions by outcome after review and risk",
    ["strategy_id", "outcome"],
)
RISK_REJECTIONS = Counter(
    "torghut_risk_rejections_total",
    "Failing risk rules, one count per rule and decision",
    ["check"],
)


class Adjudication(msgspec.Struct, frozen=True):
    """``decision`` as the strategy made it (its hash is the ``client_order_id``); ``final`` as
    it would be sent (reduced qty, or ``HOLD`` after a veto)."""

    decision: Decision
    final: Decision
    review: ReviewOutcome | None
    risk: RiskVerdict | None

    @property
    def approved(self) -> bool:
        return self.risk is not None and self.risk.approved and self.final.action is not Action.HOLD


def adjudicate(
    decision: Decision,
    *,
    review: DecisionReview | None,
    recent: Sequence[SignalRow],
    limits: RiskLimits,
    context: RiskContext,
) -> Adjudication:
    """Review (if configured), then every risk rule on the reviewed decision."""
    outcome = review.review(decision, recent) if review is not None else None
    final = outcome.apply(decision) if outcome is not None else decision
    if outcome is not None and outcome.vetoed:
        OUTCOMES.labels(strategy_id=decision.strategy_id, outcome="vetoed").inc()
        _log.info("decision_vetoed", decision_hash=decision.decision_hash, error=outcome.error)
        return Adjudication(decision, final, outcome, None)
    verdict = evaluate(final, limits, context)
    if verdict.approved:
        OUTCOMES.labels(strategy_id=decision.strategy_id, outcome="approved").inc()
    else:
        OUTCOMES.labels(strategy_id=decision.strategy_id, outcome="rejected").inc()
        for reason in verdict.reasons:
            RISK_REJECTIONS.labels(check=reason.code.value).inc()
        _log.info(
            "decision_rejected",
            decision_hash=decision.decision_hash,
            symbol=decision.symbol,
            reasons=[r.code.value for r in verdict.reasons],
        )
    return Adjudication(decision, final, outcome, verdict)


def build_review(llm: LlmSettings, trading: TradingSettings) -> DecisionReview | None:
    """The configured reviewer, or ``None`` when ``LLM_ENABLED`` is false (the default)."""
    if not llm.enabled:
        return None
    return DecisionReview(OpenAiChatReviewer(llm), llm, live=trading.mode == "live")
