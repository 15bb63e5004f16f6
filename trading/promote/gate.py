"""The live gate: a live process may only trade a subject that passed the promotion check.

Why at the composition root and as a risk rule: the verdict is looked up once, when the flow
opens its store (a verdict recorded later takes a restart, like any change of what may trade),
and the answer travels in :class:`trading.core.risk.RiskLimits` (``not_promoted``), so the risk
engine — the last gate before money moves — rejects every live decision with reason
``not_promoted`` while it is set. Paper mode never asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from torghut.config import Settings
from trading.adapters.store import TradingStore
from trading.core.llm import PROMPT_VERSION
from trading.core.strategies import Strategy, build_strategies
from trading.promote.records import latest_passing
from trading.promote.subject import subject_hash, subject_of_strategies

__all__ = ["not_promoted_reason", "store_promotion"]


def store_promotion(store: TradingStore, settings: Settings) -> str | None:
    """:func:`not_promoted_reason` for the strategies and prompt ``settings`` run."""
    prompt = PROMPT_VERSION if settings.llm.enabled else None
    with sessionmaker(store.engine)() as session:
        return not_promoted_reason(session, build_strategies(settings.trading), prompt)


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
