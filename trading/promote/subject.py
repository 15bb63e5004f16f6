"""What a promotion is about: the exact strategy versions and parameters, and the prompt version.

Why a hash of these and nothing else: a verdict or a sign-off must stop applying the moment any
of them changes (a new strategy version, one changed parameter, a new prompt), and must keep
applying across restarts and unrelated configuration. The subject is canonical JSON
(:func:`trading.core.domain.canonical_json`), so the same strategies hash the same in the backtest,
in the promotion check and in the live flow's gate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from trading.core.domain import canonical_json
from trading.core.strategies import Strategy

__all__ = ["Subject", "subject_hash", "subject_of", "subject_of_strategies"]

Subject = dict[str, Any]


def subject_of(strategies: Mapping[str, Mapping[str, Any]], prompt_version: str | None) -> Subject:
    """``strategies``: id → ``{"version": …, "params": {…}}``."""
    return {
        "strategies": {
            sid: {"version": str(s["version"]), "params": dict(s["params"])}
            for sid, s in sorted(strategies.items())
        },
        "prompt_version": prompt_version,
    }


def subject_of_strategies(
    strategies: Mapping[str, Strategy[Any]], prompt_version: str | None
) -> Subject:
    return subject_of(
        {sid: {"version": s.version, "params": dict(s.params)} for sid, s in strategies.items()},
        prompt_version,
    )


def subject_hash(subject: Subject) -> str:
    return hashlib.sha256(canonical_json(subject).encode("ascii")).hexdigest()
