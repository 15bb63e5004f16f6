"""From a deterministic decision to an order intent: risk pre-check, LLM review, risk again.

Why this order: the order of the gates is a safety property.

1. :func:`precheck` — every risk rule on the decision as the strategy made it. A decision risk
   would reject is rejected here and never costs a model call (nor waits for one).
2. the review (when enabled; :class:`~trading.core.llm.DecisionReview`) may only shrink or veto;
   it runs wherever the caller likes (the trading pipeline runs it off the dataflow worker).
3. :func:`conclude` — every risk rule again, on the decision that would actually be sent
   (reduced qty), against the world as it is *after* the review; risk always has the last
   word. It also refuses a quantity that is not on the symbol's increment
   (:mod:`trading.core.quantity`), so what is stored is exactly what the broker can hold.

:func:`adjudicate` is the three in a row for synchronous callers. The result is stored in one
unit of work (``uow.record_decision(adjudication)``), with the status the decision lifecycle
gives it (:func:`trading.core.decisions.initial_status`). A vetoed
decision skips the second risk pass (nothing would be sent) and is stored as vetoed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import msgspec
from prometheus_client import Counter

from torghut.logs import get_logger
from trading.core.domain import Action, Decision, SignalRow
from trading.core.llm import DecisionReview, ReviewOutcome
from trading.core.quantity import QuantityRules
from trading.core.risk import RiskCheck, RiskContext, RiskLimits, RiskReason, RiskVerdict, evaluate

__all__ = ["Adjudication", "adjudicate", "conclude", "precheck"]

_log = get_logger("trading.core.adjudicate")

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

    @classmethod
    def of(
        cls, decision: Decision, *, risk: RiskVerdict | None, review: ReviewOutcome | None = None
    ) -> Adjudication:
        """An adjudication from its parts, the review applied once, here (risk verdicts reached
        elsewhere: a broker that refused the state reads, a recorded session)."""
        final = review.apply(decision) if review is not None else decision
        return cls(decision, final, review, risk)


def adjudicate(
    decision: Decision,
    *,
    review: DecisionReview | None,
    recent: Sequence[SignalRow],
    limits: RiskLimits,
    context: RiskContext,
    quantity: QuantityRules | None = None,
) -> Adjudication:
    """Pre-check, review (if configured and the pre-check passed), then risk on the result."""
    if review is not None:
        rejected = precheck(decision, limits=limits, context=context, quantity=quantity)
        if rejected is not None:
            return rejected
    outcome = review.review(decision, recent) if review is not None else None
    return conclude(decision, outcome, limits=limits, context=context, quantity=quantity)


def precheck(
    decision: Decision,
    *,
    limits: RiskLimits,
    context: RiskContext,
    quantity: QuantityRules | None = None,
) -> Adjudication | None:
    """Risk on the unreviewed decision: its rejection, or ``None`` when it may be reviewed."""
    verdict = _evaluate(decision, limits, context, quantity or QuantityRules())
    if verdict.approved:
        return None
    _rejected(decision, verdict, stage="precheck")
    return Adjudication(decision, decision, None, verdict)


def conclude(
    decision: Decision,
    outcome: ReviewOutcome | None,
    *,
    limits: RiskLimits,
    context: RiskContext,
    quantity: QuantityRules | None = None,
) -> Adjudication:
    """Apply the review's outcome (if any), then every risk rule on what would be sent."""
    final = outcome.apply(decision) if outcome is not None else decision
    if outcome is not None and outcome.vetoed:
        _outcome(decision.strategy_id, "vetoed").inc()
        _log.info("decision_vetoed", decision_hash=decision.decision_hash, error=outcome.error)
        return Adjudication(decision, final, outcome, None)
    verdict = _evaluate(final, limits, context, quantity or QuantityRules())
    if verdict.approved:
        _outcome(decision.strategy_id, "approved").inc()
    else:
        _rejected(decision, verdict, stage="final")
    return Adjudication(decision, final, outcome, verdict)


def _evaluate(
    decision: Decision, limits: RiskLimits, context: RiskContext, quantity: QuantityRules
) -> RiskVerdict:
    """Every risk rule, and the quantity increment (a rule of the instrument, not of risk
    limits, so it lives in :mod:`trading.core.quantity`)."""
    verdict = evaluate(decision, limits, context)
    if decision.action is Action.HOLD or quantity.on_increment(decision.symbol, decision.qty):
        return verdict
    step = quantity.increment(decision.symbol)
    detail = f"qty {decision.qty} is not a multiple of {step} for {decision.symbol}"
    reason = RiskReason(RiskCheck.INVALID_ORDER, detail)
    return RiskVerdict((*verdict.reasons, reason))


def _rejected(decision: Decision, verdict: RiskVerdict, *, stage: str) -> None:
    _outcome(decision.strategy_id, "rejected").inc()
    for reason in verdict.reasons:
        _rejection(reason.code).inc()
    _log.info(
        "decision_rejected",
        decision_hash=decision.decision_hash,
        symbol=decision.symbol,
        stage=stage,
        reasons=[str(r.code) for r in verdict.reasons],  # StrEnum: str() is its value
    )


# Each counter's child per label values, looked up once (``labels`` validates and locks on every
# call: a replay adjudicates thousands of decisions). Strategy ids, outcomes and rule codes are
# few; nothing removes a child from these counters.
@cache
def _outcome(strategy_id: str, outcome: str) -> Any:
    return OUTCOMES.labels(strategy_id=strategy_id, outcome=outcome)


@cache
def _rejection(check: RiskCheck) -> Any:
    return RISK_REJECTIONS.labels(check=check.value)
