"""The order state machine: the table covers every status, normal lifecycles advance, repeats
are SAME, and anything else is refused, logged and counted."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from trading.core.orders import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    InvalidOrderTransition,
    OrderStatus,
    Transition,
    check_transition,
)

S = OrderStatus


def invalid_count(status_from: OrderStatus, status_to: OrderStatus) -> float:
    value = REGISTRY.get_sample_value(
        "torghut_order_invalid_transitions_total",
        {"status_from": status_from.value, "status_to": status_to.value},
    )
    return value or 0.0


def walk(path: list[OrderStatus], filled: list[int] | None = None) -> list[Transition]:
    qty = filled or [0] * len(path)
    return [
        check_transition(
            "o", path[i], path[i + 1], filled_from=Decimal(qty[i]), filled_to=Decimal(qty[i + 1])
        )
        for i in range(len(path) - 1)
    ]


def test_table_covers_every_alpaca_status_and_terminals_are_final() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert {
        S.FILLED,
        S.CANCELED,
        S.EXPIRED,
        S.REJECTED,
        S.REPLACED,
        S.UNKNOWN_AT_BROKER,
    } == TERMINAL
    assert set(OrderStatus) == ACTIVE | TERMINAL
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    # Any order we hold as open may turn out unknown to the broker (a paper-account reset).
    for status in ACTIVE:
        assert S.UNKNOWN_AT_BROKER in TRANSITIONS[status], status
    for status, targets in TRANSITIONS.items():
        assert S.INTENT not in targets, f"{status} may not go back to intent"


@pytest.mark.parametrize(
    ("path", "filled"),
    [
        (
            [S.INTENT, S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.FILLED],
            [0, 0, 0, 4, 7, 10],
        ),
        ([S.INTENT, S.ACCEPTED, S.NEW, S.PENDING_CANCEL, S.CANCELED], None),
        ([S.INTENT, S.PENDING_NEW, S.REJECTED], None),
        ([S.INTENT, S.NEW, S.PENDING_REPLACE, S.REPLACED], None),
        ([S.INTENT, S.NEW, S.DONE_FOR_DAY, S.NEW, S.EXPIRED], None),
        ([S.INTENT, S.PENDING_NEW, S.FILLED], [0, 0, 10]),
        ([S.INTENT, S.HELD, S.NEW, S.FILLED], [0, 0, 0, 5]),
        ([S.INTENT, S.NEW, S.PENDING_CANCEL, S.PARTIALLY_FILLED, S.CANCELED], [0, 0, 0, 3, 3]),
        ([S.INTENT, S.NEW, S.PARTIALLY_FILLED, S.UNKNOWN_AT_BROKER], [0, 0, 2, 2]),
    ],
)
def test_lifecycles_advance(path: list[OrderStatus], filled: list[int] | None) -> None:
    assert walk(path, filled) == [Transition.ADVANCE] * (len(path) - 1)


def test_repeated_observations_are_not_transitions() -> None:
    assert check_transition("o", S.NEW, S.NEW) is Transition.SAME
    assert (
        check_transition(
            "o",
            S.PARTIALLY_FILLED,
            S.PARTIALLY_FILLED,
            filled_from=Decimal(3),
            filled_to=Decimal(3),
        )
        is Transition.SAME
    )
    assert check_transition("o", S.FILLED, S.FILLED) is Transition.SAME


@pytest.mark.parametrize(
    ("status_from", "status_to"),
    [
        (S.FILLED, S.CANCELED),
        (S.CANCELED, S.NEW),
        (S.REJECTED, S.FILLED),
        (S.EXPIRED, S.PARTIALLY_FILLED),
        (S.REPLACED, S.NEW),
        (S.NEW, S.PENDING_NEW),
        (S.PARTIALLY_FILLED, S.ACCEPTED),
        (S.PENDING_CANCEL, S.PENDING_NEW),
    ],
)
def test_invalid_transitions_raise_and_are_counted(
    status_from: OrderStatus, status_to: OrderStatus
) -> None:
    before = invalid_count(status_from, status_to)
    with pytest.raises(InvalidOrderTransition) as info:
        check_transition("ord-9", status_from, status_to)
    assert info.value.order_id == "ord-9"
    assert (info.value.status_from, info.value.status_to) == (status_from, status_to)
    assert invalid_count(status_from, status_to) == before + 1


def test_filled_quantity_never_decreases() -> None:
    before = invalid_count(S.PARTIALLY_FILLED, S.PARTIALLY_FILLED)
    with pytest.raises(InvalidOrderTransition, match="filled qty fell"):
        check_transition(
            "o",
            S.PARTIALLY_FILLED,
            S.PARTIALLY_FILLED,
            filled_from=Decimal(5),
            filled_to=Decimal(4),
        )
    assert invalid_count(S.PARTIALLY_FILLED, S.PARTIALLY_FILLED) == before + 1
