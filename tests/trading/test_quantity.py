"""Quantities on the instrument's increment: cut down, never up, and sent exactly as stored."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading.core.quantity import FRACTIONAL_INCREMENT, QuantityRules, wire_qty

RULES = QuantityRules(["aapl"])
QTYS = st.decimals(min_value=Decimal(0), max_value=Decimal(100_000), places=28, allow_nan=False)


def test_whole_shares_unless_the_symbol_is_fractional() -> None:
    assert RULES.increment("AAPL") == FRACTIONAL_INCREMENT
    assert RULES.increment("MSFT") == Decimal(1)
    third = Decimal("0.3333333333333333333333333333")
    assert RULES.round_down("AAPL", third) == Decimal("0.333333333")
    assert RULES.round_down("MSFT", third) == 0
    assert RULES.round_down("MSFT", Decimal("2.9999")) == 2
    assert RULES.round_down("MSFT", Decimal(-3)) == 0
    with pytest.raises(ValueError, match="finite"):
        RULES.round_down("MSFT", Decimal("NaN"))


@given(symbol=st.sampled_from(["AAPL", "MSFT"]), qty=QTYS)
def test_rounding_never_enlarges_and_lands_on_the_increment(symbol: str, qty: Decimal) -> None:
    cut = RULES.round_down(symbol, qty)
    assert Decimal(0) <= cut <= qty
    assert qty - cut < RULES.increment(symbol)
    assert RULES.on_increment(symbol, cut)
    assert RULES.round_down(symbol, cut) == cut


@given(symbol=st.sampled_from(["AAPL", "MSFT"]), qty=QTYS)
def test_a_quantity_on_its_increment_reaches_the_wire_unchanged(symbol: str, qty: Decimal) -> None:
    cut = RULES.round_down(symbol, qty)
    # alpaca-py carries qty as a float and serialises it with json.dumps
    assert Decimal(json.dumps(wire_qty(cut))) == cut


@pytest.mark.parametrize(
    "qty", ["0.3333333333333333333333333333", "1234567.123456789", "0.1000000000000000055"]
)
def test_a_quantity_a_float_would_change_is_refused(qty: str) -> None:
    with pytest.raises(ValueError, match=r"cannot be sent exactly|would be sent as"):
        wire_qty(Decimal(qty))
