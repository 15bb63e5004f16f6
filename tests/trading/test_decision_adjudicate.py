"""Review, then risk on the reviewed decision, then one unit of work — end to end over the real
local LLM server and the store."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from pydantic import SecretStr

from dataflows.trading import build_review
from tests.trading.conftest import LlmServer, decision
from tests.trading.test_risk import CTX, LIMITS
from torghut.config import LlmSettings, TradingSettings
from trading.adapters.store import TradingStore
from trading.adapters.system_clock import SystemClock
from trading.core.adjudicate import adjudicate, conclude, precheck
from trading.core.decisions import DecisionStatus
from trading.core.domain import Action
from trading.core.llm import DecisionReview
from trading.core.quantity import QuantityRules
from trading.core.risk import RiskCheck

CLOCK = SystemClock()


def llm(url: str, **changes: object) -> LlmSettings:
    base: dict[str, object] = {
        "enabled": True,
        "base_url": url,
        "model": "m",
        "api_key": SecretStr("k"),
        "timeout_s": 2.0,
        "shadow": False,
        "fallback": "pass",
    }
    base.update(changes)
    return LlmSettings(**base)  # type: ignore[arg-type]


def test_without_review_risk_decides(store: TradingStore) -> None:
    a = adjudicate(decision(), review=None, recent=[], limits=LIMITS, context=CTX)
    assert a.approved
    assert a.review is None
    assert a.final == a.decision
    stored = store.record_decision(a)
    assert stored.status is DecisionStatus.PENDING_SUBMIT


def test_what_risk_rejects_is_never_sent_to_the_model(
    llm_server: LlmServer, store: TradingStore
) -> None:
    review = build_review(llm(llm_server.url), TradingSettings(), CLOCK)
    tight = dataclasses.replace(LIMITS, max_notional_per_order=Decimal(500))
    d = decision()  # 10 x 100 = 1000 > 500
    llm_server.answer_json(verdict="adjust", confidence=0.9, adjusted_qty=4, reason="smaller")
    a = adjudicate(d, review=review, recent=[], limits=tight, context=CTX)
    assert not a.approved
    assert a.review is None
    assert a.risk is not None
    assert a.risk.codes == {RiskCheck.MAX_NOTIONAL_PER_ORDER}
    assert llm_server.requests == [], "no model call for a decision risk rejects anyway"
    stored = store.record_decision(a)
    assert stored.status is DecisionStatus.REJECTED


def test_risk_runs_again_on_the_reviewed_quantity(
    llm_server: LlmServer, store: TradingStore
) -> None:
    review = build_review(llm(llm_server.url), TradingSettings(), CLOCK)
    assert isinstance(review, DecisionReview)
    d = decision()
    llm_server.answer_json(verdict="adjust", confidence=0.9, adjusted_qty=4, reason="smaller")
    assert precheck(d, limits=LIMITS, context=CTX) is None
    outcome = review.review(d, [])
    # The world changed while the model thought: the order now breaks a tighter limit.
    tight = dataclasses.replace(LIMITS, max_notional_per_order=Decimal(300))
    late = conclude(d, outcome, limits=tight, context=CTX)
    assert not late.approved
    assert late.risk is not None
    assert late.risk.codes == {RiskCheck.MAX_NOTIONAL_PER_ORDER}
    a = conclude(d, outcome, limits=LIMITS, context=CTX)
    assert a.approved
    assert a.final.qty == Decimal(4)
    assert a.final.decision_hash == d.decision_hash
    stored = store.record_decision(a)
    assert stored.qty == Decimal(4)
    assert stored.order_request().qty == Decimal(4)


def test_a_quantity_off_the_increment_is_rejected_by_the_last_check() -> None:
    odd = decision(qty=Decimal("2.5"))
    a = adjudicate(odd, review=None, recent=[], limits=LIMITS, context=CTX)
    assert not a.approved
    assert a.risk is not None
    assert a.risk.codes == {RiskCheck.INVALID_ORDER}
    fractional = QuantityRules(["AAPL"])
    assert adjudicate(
        odd, review=None, recent=[], limits=LIMITS, context=CTX, quantity=fractional
    ).approved


def test_a_veto_skips_risk_and_is_stored_as_vetoed(
    llm_server: LlmServer, store: TradingStore
) -> None:
    review = build_review(llm(llm_server.url), TradingSettings(), CLOCK)
    llm_server.answer_json(verdict="veto", confidence=0.9, reason="no")
    a = adjudicate(decision(), review=review, recent=[], limits=LIMITS, context=CTX)
    assert not a.approved
    assert a.risk is None
    assert a.final.action is Action.HOLD
    stored = store.record_decision(a)
    assert stored.status is DecisionStatus.VETOED


def test_an_approved_review_does_not_bypass_risk(llm_server: LlmServer) -> None:
    review = build_review(llm(llm_server.url), TradingSettings(), CLOCK)
    llm_server.answer_json(verdict="approve", confidence=1.0, reason="yes")
    killed = dataclasses.replace(LIMITS, kill_switch=True)
    a = adjudicate(decision(), review=review, recent=[], limits=killed, context=CTX)
    assert not a.approved
    assert a.risk is not None
    assert a.risk.codes == {RiskCheck.KILL_SWITCH}


def test_review_is_off_by_default_and_forced_to_veto_in_live_mode(llm_server: LlmServer) -> None:
    assert build_review(LlmSettings(), TradingSettings(), CLOCK) is None
    live = build_review(llm(llm_server.url), TradingSettings(mode="live"), CLOCK)
    assert live is not None
    llm_server.raw(500, b"{}")
    assert live.review(decision(), []).vetoed
