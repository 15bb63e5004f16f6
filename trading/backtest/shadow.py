"""LLM shadow evaluation: the model's verdicts against what the price did afterwards.

Why a deterministic outcome per decision: whether the model was *right* to veto can only be
judged against something that does not depend on the model. Every reviewed decision is scored
by what its order would have made over a fixed horizon of event time: (close at the first row
of the symbol at or after ``event_ts + horizon`` − the decision's reference price) × qty, signed
by side (the last close when the window ends first). A decision is *losing* when that is below
zero. Then:

* veto precision = losing ∩ vetoed / vetoed; veto recall = losing ∩ vetoed / losing;
* approve, veto, adjust rates = the model's own answers (``verdict``, also in shadow mode where
  the effect is always "approve") over reviewed decisions; ``failed`` = no valid answer;
* verdict stability between two runs (:func:`verdict_stability`) = the share of the decisions
  both reviewed on which the model gave the same answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import msgspec

from trading.core.domain import Action, Decision

__all__ = ["ShadowBook", "ShadowSummary", "verdict_stability"]


class ShadowSummary(msgspec.Struct, frozen=True):
    reviewed: int
    approve_rate: float | None
    veto_rate: float | None
    adjust_rate: float | None
    failed_rate: float | None
    losing: int
    veto_precision: float | None
    veto_recall: float | None


class _Pending(msgspec.Struct, frozen=True):
    due: datetime
    decision_hash: str
    sign: int
    qty: Decimal
    reference: Decimal
    verdict: str | None


class ShadowBook:
    def __init__(self, horizon: timedelta) -> None:
        self._horizon = horizon
        self._pending: dict[str, deque[_Pending]] = {}
        self._close: dict[str, float] = {}
        self.verdicts: dict[str, str | None] = {}
        self.outcomes: dict[str, Decimal] = {}

    def add(self, decision: Decision, verdict: str | None) -> None:
        ref = decision.reference_price
        if ref is None:
            return
        sign = 1 if decision.action is Action.BUY else -1
        self.verdicts[decision.decision_hash] = verdict
        item = _Pending(
            decision.event_ts + self._horizon,
            decision.decision_hash,
            sign,
            decision.qty,
            ref,
            verdict,
        )
        self._pending.setdefault(decision.symbol, deque()).append(item)

    def observe(self, symbol: str, ts: datetime, close: float) -> None:
        queue = self._pending.get(symbol)
        if not queue:
            return
        self._close[symbol] = close
        while queue and queue[0].due <= ts:
            self._resolve(queue.popleft(), Decimal(repr(close)))

    def finish(self) -> None:
        for symbol, queue in self._pending.items():
            close = self._close.get(symbol)
            while queue:
                item = queue.popleft()
                self._resolve(item, Decimal(repr(close)) if close is not None else item.reference)

    def _resolve(self, item: _Pending, close: Decimal) -> None:
        self.outcomes[item.decision_hash] = (close - item.reference) * item.qty * item.sign

    def summary(self) -> ShadowSummary:
        n = len(self.verdicts)
        counts = {"approve": 0, "veto": 0, "adjust": 0, None: 0}
        losing: set[str] = set()
        vetoed: set[str] = set()
        for h, verdict in self.verdicts.items():
            counts[verdict if verdict in counts else None] += 1
            if verdict == "veto":
                vetoed.add(h)
            if self.outcomes.get(h, Decimal(0)) < 0:
                losing.add(h)
        hits = len(losing & vetoed)
        return ShadowSummary(
            reviewed=n,
            approve_rate=_ratio(counts["approve"], n),
            veto_rate=_ratio(counts["veto"], n),
            adjust_rate=_ratio(counts["adjust"], n),
            failed_rate=_ratio(counts[None], n),
            losing=len(losing),
            veto_precision=_ratio(hits, len(vetoed)),
            veto_recall=_ratio(hits, len(losing)),
        )


def verdict_stability(a: Mapping[str, str | None], b: Mapping[str, str | None]) -> float | None:
    """Share of decisions reviewed in both runs with the same model answer (``None`` if none)."""
    common = a.keys() & b.keys()
    return _ratio(sum(1 for h in common if a[h] == b[h]), len(common))


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
