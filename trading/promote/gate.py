"""The live gate: a live process may only trade a subject that passed the promotion check.

Why at the composition root and as a risk rule: the verdict is looked up once, when the flow
opens its store (a verdict recorded later takes a restart, like any change of what may trade),
and the answer travels in :class:`trading.risk.RiskLimits` (``not_promoted``), so the risk
engine — the last gate before money moves — rejects every live decision with reason
``not_promoted`` while it is set. Paper mode never asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from trading.promote.records import latest_passing
from trading.promote.subject import subject_hash, subject_of_strategies
from trading.strategies import Strategy

__all__ = ["not_promoted_reason"]


def not_promoted_reason(
    session: Session, strategies: Mapping[str, Strategy[Any]], prompt_version: str | None
) -> str | None:
    """``None`` when a passing verdict exists for exactly these strategies and prompt."""
    digest = subject_hash(subject_of_strategies(strategies, prompt_version))
    if latest_passing(session, digest) is not None:
        return None
    return (
        f"no passing promotion verdict for subject {digest[:16]} (strategies "
        f"{', '.join(f'{s}@{v.version}' for s, v in sorted(strategies.items()))}, prompt "
        f"{prompt_version or 'none'}): run python -m trading.promote check"
    )
