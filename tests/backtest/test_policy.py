"""The promotion policy's pure evaluation: each LLM rule against a baseline, and a pass."""

from __future__ import annotations

import msgspec

from trading.backtest.shadow import verdict_stability
from trading.promote.policy import Evidence, LlmPolicy, Policy, SignoffPolicy, evaluate

GOOD = Evidence(
    sharpe=2.0,
    max_drawdown=-0.01,
    decisions=10,
    rejected=1,
    reviewed=True,
    veto_rate=0.2,
    approve_rate=0.8,
    baseline_veto_rate=0.25,
    baseline_approve_rate=0.75,
    has_baseline=True,
    verdict_stability=0.95,
    veto_precision=0.7,
    veto_recall=0.6,
    subject_changed=False,
)
LLM = LlmPolicy(
    max_veto_rate_change=0.1,
    max_approve_rate_change=0.1,
    min_verdict_stability=0.9,
    min_veto_precision=0.5,
    min_veto_recall=0.5,
)


def test_a_stable_review_passes() -> None:
    assert evaluate(Policy(llm=LLM), GOOD) == []


def test_unstable_rates_and_verdicts_fail_with_every_reason() -> None:
    shifted = msgspec.structs.replace(
        GOOD,
        veto_rate=0.5,
        approve_rate=0.5,
        verdict_stability=0.6,
        veto_precision=0.2,
        veto_recall=None,
        subject_changed=True,
    )
    reasons = evaluate(Policy(llm=LLM, signoff=SignoffPolicy()), shifted)
    assert [r.split(" ")[1] for r in reasons[:2]] == ["veto", "veto"]
    assert "precision on losing trades 0.2" in reasons[0]
    assert "recall on losing trades undefined" in reasons[1]
    assert "LLM veto rate 0.5 moved from the baseline's 0.25" in reasons[2]
    assert "LLM approve rate 0.5 moved from the baseline's 0.75" in reasons[3]
    assert "verdict stability 0.6" in reasons[4]
    assert "no human sign-off" in reasons[5]
    assert len(reasons) == 6


def test_llm_rules_do_not_apply_without_a_review() -> None:
    unreviewed = Evidence(sharpe=1.0, max_drawdown=0.0, decisions=1, rejected=0, reviewed=False)
    assert (
        evaluate(Policy(llm=LLM, signoff=SignoffPolicy(required_on_change=False)), unreviewed) == []
    )


def test_verdict_stability_compares_the_decisions_both_runs_reviewed() -> None:
    a = {"h1": "approve", "h2": "veto", "h3": None}
    b = {"h1": "approve", "h2": "approve", "h4": "veto"}
    assert verdict_stability(a, b) == 0.5
    assert verdict_stability(a, {}) is None
