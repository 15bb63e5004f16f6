"""Order quantities on the instrument's increment: whole shares unless fractional is allowed.

Why a module of its own: a quantity is only safe to send when the broker will hold exactly the
number we store. A model's "adjust" to 0.3333… (28 decimals) sent as a float was filled as
0.333333333 while the store kept 28 decimals, and the reconciler then saw drift on every
symbol. So a reviewed quantity is cut *down* (never up: a review may only shrink an order) to
the symbol's increment here, as a ``Decimal``, and the broker adapter converts it to the wire
with :func:`wire_qty`, which refuses any value that would not survive the conversion exactly.

The increment, kept deliberately simple:

* ``1`` (whole shares) for every symbol by default;
* :data:`FRACTIONAL_INCREMENT` (10⁻⁹, the finest quantity Alpaca accepts) for the symbols in
  ``TRADING_FRACTIONAL_SYMBOLS`` — the operator lists the symbols the account may trade in
  fractions (Alpaca: the asset's ``fractionable`` flag and a market order with ``day``).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_DOWN, Decimal

__all__ = ["FRACTIONAL_INCREMENT", "WHOLE_SHARE", "QuantityRules", "wire_qty"]

WHOLE_SHARE = Decimal(1)
FRACTIONAL_INCREMENT = Decimal("0.000000001")
_MAX_WIRE_DIGITS = 15
"""A float holds any decimal of up to 15 significant digits exactly enough that ``repr`` gives
it back (IEEE-754 double); beyond that the wire value could differ from the stored one."""


class QuantityRules:
    """The quantity increment of each symbol (pure; built once from settings)."""

    def __init__(self, fractional_symbols: Iterable[str] = ()) -> None:
        self._fractional = frozenset(s.upper() for s in fractional_symbols)

    def increment(self, symbol: str) -> Decimal:
        return FRACTIONAL_INCREMENT if symbol.upper() in self._fractional else WHOLE_SHARE

    def round_down(self, symbol: str, qty: Decimal) -> Decimal:
        """``qty`` cut down to the symbol's increment (``0`` when less than one increment).

        >>> QuantityRules().round_down("AAPL", Decimal("3.9"))
        Decimal('3')
        >>> QuantityRules(["AAPL"]).round_down("AAPL", Decimal("0.3333333333333333333333333333"))
        Decimal('0.333333333')
        """
        if not qty.is_finite():
            raise ValueError(f"quantity {qty} is not a finite number")
        if qty <= 0:
            return Decimal(0)
        return qty.quantize(self.increment(symbol), rounding=ROUND_DOWN)

    def on_increment(self, symbol: str, qty: Decimal) -> bool:
        return qty.is_finite() and qty == self.round_down(symbol, qty)


def wire_qty(qty: Decimal) -> float:
    """``qty`` as the float alpaca-py's order requests carry, only if it is sent exactly.

    alpaca-py types ``qty`` as ``float`` and serialises it with ``repr``; a quantity on its
    increment (at most 9 decimals, far fewer than 15 significant digits) round-trips. Anything
    else raises ``ValueError`` rather than letting the broker fill a different number.
    """
    value = float(qty)
    if not qty.is_finite() or len(qty.normalize().as_tuple().digits) > _MAX_WIRE_DIGITS:
        raise ValueError(f"quantity {qty} cannot be sent exactly")
    if Decimal(repr(value)) != qty:
        raise ValueError(f"quantity {qty} would be sent as {value!r}")
    return value
