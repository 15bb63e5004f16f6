"""The promotion policy (TOML) and its evaluation: every failed reason, from evidence; pure.

Why pure: the gate that decides whether real money may follow a strategy must be testable
reason by reason. :func:`evaluate` takes the :class:`Evidence` gathered from Postgres
(:mod:`trading.promote.evidence`) and returns every failed reason, in a fixed order; an empty
list is a pass. The design's list, made executable:

* ``[backtest]`` — ``min_sharpe``, ``max_drawdown`` (a fraction, e.g. ``0.05``) and
  ``max_reject_rate`` (risk rejections / decisions) of the run;
* ``[paper]`` — ``max_drawdown`` of the realised paper PnL since the last promotion (on
  ``equity``), and ``max_reconciliation_errors_increase``: reconciliation halts (failing passes,
  position drift) since the last promotion minus those in the same span before it;
* ``[llm]`` — with a review in the run: veto and approve rates within ``max_veto_rate_change``
  / ``max_approve_rate_change`` of the baseline run's, ``min_verdict_stability`` over the
  decisions both runs reviewed, and the shadow evaluation's ``min_veto_precision`` /
  ``min_veto_recall`` on losing trades (:mod:`trading.backtest.shadow`);
* ``[signoff]`` — ``required_on_change``: a subject (strategy versions, parameters, prompt
  version) other than the last promoted one needs a recorded human sign-off.

A section left out of the file is not checked; a misspelt key is an error (``forbid_unknown``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

__all__ = [
    "BacktestPolicy",
    "Evidence",
    "LlmPolicy",
    "PaperPolicy",
    "Policy",
    "SignoffPolicy",
    "evaluate",
    "load_policy",
]


class BacktestPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_sharpe: float | None = None
    max_drawdown: float | None = None
    max_reject_rate: float | None = None


class PaperPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    equity: float = 100_000.0
    max_drawdown: float | None = None
    max_reconciliation_errors_increase: int | None = None


class LlmPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_veto_rate_change: float | None = None
    max_approve_rate_change: float | None = None
    min_verdict_stability: float | None = None
    min_veto_precision: float | None = None
    min_veto_recall: float | None = None


class SignoffPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    required_on_change: bool = True


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    backtest: BacktestPolicy = msgspec.field(default_factory=BacktestPolicy)
    paper: PaperPolicy = msgspec.field(default_factory=PaperPolicy)
    llm: LlmPolicy = msgspec.field(default_factory=LlmPolicy)
    signoff: SignoffPolicy = msgspec.field(default_factory=SignoffPolicy)


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """What the check judges (gathered by :func:`trading.promote.evidence.gather`)."""

    sharpe: float | None
    max_drawdown: float | None
    decisions: int
    rejected: int
    reviewed: bool
    veto_rate: float | None = None
    approve_rate: float | None = None
    baseline_veto_rate: float | None = None
    baseline_approve_rate: float | None = None
    has_baseline: bool = False
    verdict_stability: float | None = None
    veto_precision: float | None = None
    veto_recall: float | None = None
    paper_drawdown: float | None = None
    reconciliation_errors: int = 0
    reconciliation_errors_before: int = 0
    subject_changed: bool = True
    signoffs: int = 0


def load_policy(path: Path) -> Policy:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"promotion policy {path}: not TOML: {exc}") from exc
    try:
        return msgspec.convert(raw, Policy)
    except msgspec.ValidationError as exc:
        raise ValueError(f"promotion policy {path}: {exc}") from exc


def evaluate(policy: Policy, ev: Evidence) -> list[str]:
    """Every failed reason (empty: the run passes)."""
    reasons: list[str] = []
    bt = policy.backtest
    if bt.min_sharpe is not None and (ev.sharpe is None or ev.sharpe < bt.min_sharpe):
        reasons.append(f"sharpe {_num(ev.sharpe)} is below the minimum {bt.min_sharpe:g}")
    if bt.max_drawdown is not None:
        dd = abs(ev.max_drawdown) if ev.max_drawdown is not None else None
        if dd is None or dd > bt.max_drawdown:
            reasons.append(f"backtest max drawdown {_num(dd)} exceeds {bt.max_drawdown:g}")
    if bt.max_reject_rate is not None:
        if ev.decisions == 0:
            reasons.append("the run made no decisions: its reject rate cannot be judged")
        elif ev.rejected / ev.decisions > bt.max_reject_rate:
            rate = ev.rejected / ev.decisions
            reasons.append(f"reject rate {rate:.4g} exceeds {bt.max_reject_rate:g}")
    paper = policy.paper
    if paper.max_drawdown is not None and (
        ev.paper_drawdown is not None and ev.paper_drawdown > paper.max_drawdown
    ):
        reasons.append(
            f"paper drawdown {ev.paper_drawdown:.4g} since the last promotion exceeds "
            f"{paper.max_drawdown:g}"
        )
    allowed = paper.max_reconciliation_errors_increase
    increase = ev.reconciliation_errors - ev.reconciliation_errors_before
    if allowed is not None and increase > allowed:
        reasons.append(
            f"reconciliation errors rose from {ev.reconciliation_errors_before} to "
            f"{ev.reconciliation_errors} (allowed increase {allowed})"
        )
    reasons.extend(_llm(policy.llm, ev))
    if policy.signoff.required_on_change and ev.subject_changed and ev.signoffs == 0:
        reasons.append(
            "strategy versions, parameters or prompt version changed since the last promotion "
            "and no human sign-off is recorded for them (python -m trading.promote sign-off)"
        )
    return reasons


def _llm(p: LlmPolicy, ev: Evidence) -> list[str]:
    if not ev.reviewed:
        return []
    out: list[str] = []
    for name, floor, value in (
        ("veto precision", p.min_veto_precision, ev.veto_precision),
        ("veto recall", p.min_veto_recall, ev.veto_recall),
    ):
        if floor is not None and (value is None or value < floor):
            out.append(f"LLM {name} on losing trades {_num(value)} is below {floor:g}")
    wanted = (p.max_veto_rate_change, p.max_approve_rate_change, p.min_verdict_stability)
    if all(w is None for w in wanted):
        return out
    if not ev.has_baseline:
        return [*out, "LLM review rates need a baseline run to compare with (--baseline)"]
    for name, limit, now, before in (
        ("veto", p.max_veto_rate_change, ev.veto_rate, ev.baseline_veto_rate),
        ("approve", p.max_approve_rate_change, ev.approve_rate, ev.baseline_approve_rate),
    ):
        if limit is None:
            continue
        if now is None or before is None or abs(now - before) > limit:
            out.append(
                f"LLM {name} rate {_num(now)} moved from the baseline's {_num(before)} by more "
                f"than {limit:g}"
            )
    stable = p.min_verdict_stability
    if stable is not None and (ev.verdict_stability is None or ev.verdict_stability < stable):
        out.append(
            f"LLM verdict stability {_num(ev.verdict_stability)} vs the baseline is below "
            f"{stable:g}"
        )
    return out


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4g}"
