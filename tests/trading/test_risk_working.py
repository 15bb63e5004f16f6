"""Risk counts the orders that may still fill: a limit holds even if every working order and
every approved one fills.

The property's oracle sums every order the run approved, with those already working, per
symbol — the incremental rule never sees that sum, only one decision at a time."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tests.trading.conftest import decision
from tests.trading.test_risk import CTX, LIMITS, acct
from trading.core.domain import Action
from trading.core.ports import PositionSnapshot, Side, WorkingOrder
from trading.core.risk import RiskCheck, RiskContext, evaluate

PRICES = {"AAPL": Decimal(100), "MSFT": Decimal(50), "NVDA": Decimal(20)}
LIMITS3 = dataclasses.replace(
    LIMITS,
    symbol_allowlist=frozenset(PRICES),
    max_notional_per_order=Decimal(10**9),
    max_position_per_symbol=Decimal(5_000),
    max_gross_exposure=Decimal(9_000),
    max_orders_per_minute=10**6,
)


def held(symbol: str, qty: int) -> PositionSnapshot:
    return PositionSnapshot(symbol, Decimal(qty), Decimal(qty) * PRICES[symbol])


def order(symbol: str, side: Side, qty: int, *, unsent: bool = False) -> WorkingOrder:
    return WorkingOrder(symbol, side, Decimal(qty), PRICES[symbol], unsent=unsent)


def check(
    symbol: str,
    action: Action,
    qty: int,
    *,
    positions: tuple[PositionSnapshot, ...] = (),
    working: tuple[WorkingOrder, ...] = (),
    buying_power: int = 10**9,
) -> frozenset[RiskCheck]:
    ctx = dataclasses.replace(
        CTX, positions=positions, working=working, account=acct(buying_power=Decimal(buying_power))
    )
    d = decision(symbol=symbol, action=action, qty=Decimal(qty), reference_price=PRICES[symbol])
    return evaluate(d, LIMITS3, ctx).codes


def test_working_buys_of_the_symbol_count_toward_its_position_limit() -> None:
    assert check("AAPL", Action.BUY, 20) == frozenset()
    assert check("AAPL", Action.BUY, 20, working=(order("AAPL", "buy", 40),)) == {
        RiskCheck.MAX_POSITION_PER_SYMBOL
    }
    # working sells of the symbol do not make room for a buy (they may never fill)
    working = (order("AAPL", "buy", 40), order("AAPL", "sell", 40))
    assert check("AAPL", Action.BUY, 20, working=working) == {RiskCheck.MAX_POSITION_PER_SYMBOL}


def test_working_sells_count_toward_going_short() -> None:
    positions = (held("AAPL", 10),)
    assert check("AAPL", Action.SELL, 10, positions=positions) == frozenset()
    assert check(
        "AAPL", Action.SELL, 5, positions=positions, working=(order("AAPL", "sell", 6),)
    ) == {RiskCheck.SHORTING_DISABLED}


def test_working_orders_of_other_symbols_count_toward_gross_exposure() -> None:
    # 4,000 of MSFT and 4,000 of NVDA may fill; 2,000 of AAPL would take gross past 9,000
    working = (order("MSFT", "buy", 80), order("NVDA", "buy", 200))
    assert check("AAPL", Action.BUY, 20, working=working) == {RiskCheck.MAX_GROSS_EXPOSURE}
    assert check("AAPL", Action.BUY, 10, working=working) == frozenset()
    # a working sell that closes a held long adds nothing
    closing = (held("MSFT", 80),), (order("MSFT", "sell", 80),)
    assert check("AAPL", Action.BUY, 20, positions=closing[0], working=closing[1]) == frozenset()


def test_buying_power_is_reduced_by_approved_buys_not_yet_sent_only() -> None:
    unsent = (order("MSFT", "buy", 20, unsent=True),)  # 1,000 not reserved by the broker yet
    assert check("AAPL", Action.BUY, 10, working=unsent, buying_power=1_500) == {
        RiskCheck.BUYING_POWER
    }
    sent = (order("MSFT", "buy", 20),)  # the broker's buying power already reserves it
    assert check("AAPL", Action.BUY, 10, working=sent, buying_power=1_500) == frozenset()


_SYMBOL = st.sampled_from(sorted(PRICES))
_SIDE = st.sampled_from(["buy", "sell"])


@given(
    start=st.dictionaries(_SYMBOL, st.integers(0, 40), max_size=3),
    sent=st.lists(st.tuples(_SYMBOL, _SIDE, st.integers(1, 30)), max_size=6),
    decisions=st.lists(st.tuples(_SYMBOL, _SIDE, st.integers(1, 60)), max_size=25),
    buying_power=st.integers(0, 20_000),
)
def test_no_limit_is_broken_if_every_working_and_approved_order_fills(
    start: dict[str, int],
    sent: list[tuple[str, Side, int]],
    decisions: list[tuple[str, Side, int]],
    buying_power: int,
) -> None:
    """Decisions one at a time, as a batch runs them: each approved one is added to the working
    orders (unsent). Whatever fills, no limit the start respected is broken."""
    positions = tuple(held(s, q) for s, q in sorted(start.items()))
    working = [order(s, side, q) for s, side, q in sent]
    if not _within_limits(start, working):
        return
    approved: list[WorkingOrder] = []
    for symbol, side, qty in decisions:
        ctx: RiskContext = dataclasses.replace(
            CTX,
            positions=positions,
            working=(*working, *approved),
            account=acct(buying_power=Decimal(buying_power)),
        )
        action = Action.BUY if side == "buy" else Action.SELL
        d = decision(symbol=symbol, action=action, qty=Decimal(qty), reference_price=PRICES[symbol])
        if evaluate(d, LIMITS3, ctx).approved:
            approved.append(order(symbol, side, qty, unsent=True))
    assert _within_limits(start, [*working, *approved])
    spent = sum((o.qty * o.price for o in approved if o.side == "buy"), Decimal(0))
    assert spent <= buying_power


def _within_limits(start: dict[str, int], orders: list[WorkingOrder]) -> bool:
    """Every symbol's position if all its buys fill, or all its sells: never short, within the
    position limit, and the worst case of every symbol together within the gross limit."""
    gross = Decimal(0)
    for symbol, price in PRICES.items():
        h = Decimal(start.get(symbol, 0))
        buys = sum((o.qty for o in orders if o.symbol == symbol and o.side == "buy"), Decimal(0))
        sells = sum((o.qty for o in orders if o.symbol == symbol and o.side == "sell"), Decimal(0))
        if h - sells < 0 or (h + buys) * price > LIMITS3.max_position_per_symbol:
            return False
        gross += max(h + buys, h - sells) * price
    return gross <= LIMITS3.max_gross_exposure
