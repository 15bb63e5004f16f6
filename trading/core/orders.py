"""The order lifecycle as an explicit finite-state machine over Alpaca's order statuses.

Why a table: the broker reports statuses through two channels (the ``trade_updates`` stream and
periodic polls) that can skip steps or arrive twice. Every observed status change is checked
against :data:`TRANSITIONS`; an observation that the table does not allow is an
:class:`InvalidOrderTransition`, logged and counted, never silently applied or ignored (as in
NautilusTrader's order FSM). Re-observing the current status is not a transition
(``Transition.SAME``), except ``partially_filled`` whose filled quantity grew.

An observation older than the recorded state is not checked against the table at all: it is
``Transition.STALE`` (:func:`check_observation`), ignored quietly. The two channels race (the
submit response, the stream and the poll are recorded by different threads), and the store
decides staleness against the row it holds locked, so an earlier state that arrives last is
never mistaken for a move backwards.

Polling can skip intermediate states (``pending_new`` → ``filled`` without ``new``), so the table
allows every forward jump the broker can produce, and nothing out of a terminal state.
``intent`` is our own state: recorded in the store, not yet acknowledged by the broker.
``unknown_at_broker`` is ours too: the broker answered 404 for an order we hold as open (a paper
account reset, an order placed on another account). It is terminal — nothing the broker says
can revive it — and reachable from every non-terminal state.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from prometheus_client import Counter

from torghut.logs import get_logger

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "TRANSITIONS",
    "InvalidOrderTransition",
    "OrderStatus",
    "Transition",
    "check_observation",
    "check_transition",
]

_log = get_logger("trading.core.orders")

INVALID_TRANSITIONS = Counter(
    "torghut_order_invalid_transitions_total",
    "Order status changes refused by the order state machine",
    ["status_from", "status_to"],
)


class OrderStatus(StrEnum):
    INTENT = "intent"
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    ACCEPTED_FOR_BIDDING = "accepted_for_bidding"
    PENDING_REVIEW = "pending_review"
    HELD = "held"
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    DONE_FOR_DAY = "done_for_day"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    EXPIRED = "expired"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    STOPPED = "stopped"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    CALCULATED = "calculated"
    UNKNOWN_AT_BROKER = "unknown_at_broker"


class Transition(StrEnum):
    ADVANCE = "advance"
    SAME = "same"
    STALE = "stale"
    """Older than the recorded state (:func:`check_observation`): nothing to record."""


S = OrderStatus

TERMINAL: frozenset[OrderStatus] = frozenset(
    {S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED, S.REPLACED, S.UNKNOWN_AT_BROKER}
)
"""No status follows these (``replaced`` is terminal for the old order; the new one has its own)."""

ACTIVE: frozenset[OrderStatus] = frozenset(s for s in S if s not in TERMINAL)

_ENDINGS = frozenset({S.FILLED, S.CANCELED, S.EXPIRED, S.UNKNOWN_AT_BROKER})
_WORKING = frozenset({S.NEW, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.PENDING_REPLACE})

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.INTENT: frozenset(S) - {S.INTENT},
    S.PENDING_REVIEW: frozenset(
        {S.ACCEPTED, S.PENDING_NEW, S.NEW, S.REJECTED, S.CANCELED, S.UNKNOWN_AT_BROKER}
    ),
    S.ACCEPTED: frozenset(
        {S.PENDING_NEW, S.ACCEPTED_FOR_BIDDING, S.HELD, S.SUSPENDED, S.DONE_FOR_DAY, S.REJECTED}
    )
    | _WORKING
    | _ENDINGS,
    S.PENDING_NEW: frozenset({S.ACCEPTED_FOR_BIDDING, S.SUSPENDED, S.DONE_FOR_DAY, S.REJECTED})
    | _WORKING
    | _ENDINGS,
    S.ACCEPTED_FOR_BIDDING: frozenset({S.PENDING_NEW, S.REJECTED}) | _WORKING | _ENDINGS,
    S.HELD: frozenset({S.ACCEPTED, S.PENDING_NEW, S.REJECTED}) | _WORKING | _ENDINGS,
    S.NEW: frozenset({S.DONE_FOR_DAY, S.STOPPED, S.SUSPENDED, S.CALCULATED, S.REPLACED, S.REJECTED})
    | (_WORKING - {S.NEW})
    | _ENDINGS,
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.DONE_FOR_DAY, S.STOPPED, S.CALCULATED, S.REPLACED}
    )
    | _WORKING
    | _ENDINGS,
    # A cancel request can lose the race against a fill, or be refused (back to working).
    S.PENDING_CANCEL: frozenset({S.NEW, S.PARTIALLY_FILLED}) | _ENDINGS,
    S.PENDING_REPLACE: frozenset({S.NEW, S.PARTIALLY_FILLED, S.REPLACED}) | _ENDINGS,
    S.DONE_FOR_DAY: frozenset({S.NEW, S.PARTIALLY_FILLED, S.CALCULATED, S.PENDING_CANCEL})
    | _ENDINGS,
    S.STOPPED: frozenset({S.PARTIALLY_FILLED}) | _ENDINGS,
    S.SUSPENDED: frozenset({S.ACCEPTED, S.NEW, S.REJECTED}) | _ENDINGS,
    S.CALCULATED: frozenset({S.DONE_FOR_DAY}) | _ENDINGS,
    **{t: frozenset() for t in TERMINAL},
}
"""Allowed ``status_from → status_to`` changes; anything else is invalid."""


class InvalidOrderTransition(ValueError):
    """The broker reported a status change the lifecycle does not allow."""

    def __init__(
        self, order_id: str, status_from: OrderStatus, status_to: OrderStatus, why: str
    ) -> None:
        super().__init__(f"order {order_id}: {status_from} -> {status_to} refused: {why}")
        self.order_id = order_id
        self.status_from = status_from
        self.status_to = status_to


def check_transition(
    order_id: str,
    status_from: OrderStatus,
    status_to: OrderStatus,
    *,
    filled_from: Decimal = Decimal(0),
    filled_to: Decimal = Decimal(0),
) -> Transition:
    """Classify an observed status change, or raise :class:`InvalidOrderTransition`.

    Filled quantity never decreases; a repeat of ``partially_filled`` is a transition only when
    it grew, and any other repeat of the current status is ``SAME`` (nothing to record).
    """
    if filled_to < filled_from:
        _refuse(order_id, status_from, status_to, f"filled qty fell {filled_from}->{filled_to}")
    if status_to == status_from and not (
        status_to == S.PARTIALLY_FILLED and filled_to > filled_from
    ):
        return Transition.SAME
    if status_to not in TRANSITIONS[status_from]:
        why = "terminal state" if status_from in TERMINAL else "not in the transition table"
        _refuse(order_id, status_from, status_to, why)
    return Transition.ADVANCE


def check_observation(
    order_id: str,
    *,
    status_from: OrderStatus,
    updated_from: datetime,
    filled_from: Decimal,
    status_to: OrderStatus,
    updated_to: datetime,
    filled_to: Decimal,
) -> Transition:
    """An observed order state (``*_to``) against the recorded one (``*_from``): ``STALE`` if
    it is older, else :func:`check_transition`'s answer (which may raise).

    Older: an earlier ``updated_at``; or the same instant with less filled, or with a status
    the recorded one cannot move to — two states of one instant, this the earlier (the broker
    moves an order ``pending_new`` -> ``new`` within one timestamp, and its submit response can
    be recorded after the stream's ``new``). A newer observation is never stale: if the table
    refuses it, that is an anomaly to report."""
    if updated_to != updated_from:
        stale = updated_to < updated_from
    elif filled_to < filled_from:
        stale = True
    else:
        stale = status_to is not status_from and status_to not in TRANSITIONS[status_from]
    if stale:
        return Transition.STALE
    return check_transition(
        order_id, status_from, status_to, filled_from=filled_from, filled_to=filled_to
    )


def _refuse(order_id: str, status_from: OrderStatus, status_to: OrderStatus, why: str) -> None:
    INVALID_TRANSITIONS.labels(status_from=status_from.value, status_to=status_to.value).inc()
    _log.error(
        "order_transition_invalid",
        order_id=order_id,
        status_from=status_from.value,
        status_to=status_to.value,
        why=why,
    )
    raise InvalidOrderTransition(order_id, status_from, status_to, why)
