"""The decision lifecycle as an explicit finite-state machine, owned by the domain.

Why a table (as for orders, :mod:`trading.core.orders`): a decision's status was derived in
the store from whatever arguments it was given, and the review was applied a second time there.
Now adjudication decides the first status once (:func:`initial_status`) and every later change
is checked against :data:`TRANSITIONS`; a change the table does not allow raises
:class:`InvalidDecisionTransition` (logged and counted), so no store can invent one.

::

    adjudicated ─┬─ vetoed          (the review vetoed it; nothing is sent)
                 ├─ rejected        (a risk rule failed; reasons kept)
                 └─ pending_submit  (the order intent) ─┬─ submitted      (broker acknowledged)
                                                        └─ submit_failed  (refused, blocked,
                                                                           or expired unsent)
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from prometheus_client import Counter

from torghut.logs import get_logger

if TYPE_CHECKING:
    from trading.core.adjudicate import Adjudication

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "DecisionStatus",
    "InvalidDecisionTransition",
    "check_transition",
    "initial_status",
]

_log = get_logger("trading.core.decisions")

INVALID_TRANSITIONS = Counter(
    "torghut_decision_invalid_transitions_total",
    "Decision status changes refused by the decision state machine",
    ["status_from", "status_to"],
)


class DecisionStatus(StrEnum):
    VETOED = "vetoed"
    REJECTED = "rejected"
    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    SUBMIT_FAILED = "submit_failed"


S = DecisionStatus

TRANSITIONS: dict[DecisionStatus, frozenset[DecisionStatus]] = {
    S.PENDING_SUBMIT: frozenset({S.SUBMITTED, S.SUBMIT_FAILED}),
    S.VETOED: frozenset(),
    S.REJECTED: frozenset(),
    S.SUBMITTED: frozenset(),
    S.SUBMIT_FAILED: frozenset(),
}
"""Allowed ``status_from → status_to`` changes after a decision is recorded."""

TERMINAL: frozenset[DecisionStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class InvalidDecisionTransition(ValueError):
    """A status change of a recorded decision that the lifecycle does not allow."""

    def __init__(
        self, decision_hash: str, status_from: DecisionStatus, status_to: DecisionStatus
    ) -> None:
        super().__init__(f"decision {decision_hash}: {status_from} -> {status_to} refused")
        self.decision_hash = decision_hash
        self.status_from = status_from
        self.status_to = status_to


def initial_status(adjudication: Adjudication) -> DecisionStatus:
    """The status a decision is recorded with, from its adjudication alone.

    ``vetoed`` when the review vetoed it (risk did not run again), ``rejected`` when a risk rule
    failed, else ``pending_submit``: the order intent.
    """
    if adjudication.review is not None and adjudication.review.vetoed:
        return S.VETOED
    if adjudication.risk is None:
        raise ValueError(
            f"decision {adjudication.decision.decision_hash}: risk must be evaluated for every "
            "decision that was not vetoed"
        )
    return S.PENDING_SUBMIT if adjudication.risk.approved else S.REJECTED


def check_transition(
    decision_hash: str, status_from: DecisionStatus, status_to: DecisionStatus
) -> None:
    """Allow ``status_from → status_to`` or raise :class:`InvalidDecisionTransition`."""
    if status_to in TRANSITIONS[status_from]:
        return
    INVALID_TRANSITIONS.labels(status_from=status_from.value, status_to=status_to.value).inc()
    _log.error(
        "decision_transition_invalid",
        decision_hash=decision_hash,
        status_from=status_from.value,
        status_to=status_to.value,
    )
    raise InvalidDecisionTransition(decision_hash, status_from, status_to)
