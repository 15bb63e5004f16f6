"""The running aggregates the backtest keeps instead of re-summing positions per decision equal
the sums they replace, over random sequences of quotes, orders and fills.

* the ledger's positions, exposure and equity against a recomputation from its books;
* the paper book's market values and buying power over a change-reporting quote source
  (:class:`~trading.backtest.market.ReplayQuotes`) against the same book over a source that
  reports nothing (every position re-marked on every order), order for order;
* the paper book answering an order's buying-power check without re-marking (and its marks
  remembered per price pair) against a book that re-marks every position for every check and
  parses every mark afresh, order for order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.backtest.helpers import T0
from torghut.events import Signal
from torghut.sim.broker.book import AccountConfig, Fill, PaperBook
from torghut.sim.broker.book import OrderRequest as BookRequest
from torghut.sim.broker.clock import AlwaysOpen
from torghut.sim.broker.errors import BrokerError
from torghut.sim.quotes import ChangeTrackingQuotes, Touch
from trading.backtest.config import FillConfig
from trading.backtest.ledger import Ledger
from trading.backtest.market import ReplayQuotes
from trading.core.domain import SignalRow
from trading.core.ports import PositionSnapshot
from trading.core.risk import PositionExposure

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
symbols = st.sampled_from(SYMBOLS)
cents = st.integers(min_value=1, max_value=50_000).map(lambda c: c / 100)
quantities = st.integers(min_value=1, max_value=40).map(Decimal)

mark_ops = st.tuples(st.just("mark"), symbols, cents)
fill_ops = st.tuples(st.just("fill"), symbols, st.sampled_from(("buy", "sell")), quantities, cents)


def _fill(symbol: str, side: str, qty: Decimal, price: float, n: int) -> Fill:
    return Fill(
        execution_id=uuid.UUID(int=n),
        order_id=uuid.UUID(int=n),
        client_order_id=f"c{n}",
        symbol=symbol,
        side="buy" if side == "buy" else "sell",
        qty=qty,
        price=Decimal(repr(price)),
        timestamp=T0 + timedelta(seconds=n),
        position_qty=Decimal(0),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(mark_ops, fill_ops), max_size=60), st.integers(0, 5))
def test_ledger_aggregates_equal_a_resumming(ops: list[tuple], every: int) -> None:
    ledger = Ledger(Decimal(100_000), T0, timedelta(seconds=1), record_limit=10)
    flow = Decimal(0)
    for n, op in enumerate(ops):
        if op[0] == "mark":
            ledger.mark(op[1], op[2])
        else:
            _, symbol, side, qty, price = op
            fee = Decimal("0.01") * qty
            ledger.fill(_fill(symbol, side, qty, price, n), fee)
            signed = qty if side == "buy" else -qty
            flow -= signed * Decimal(repr(price)) + fee
        if every and n % every:
            continue  # the aggregates are also asked for after several changes at once
        expected = {
            s: PositionSnapshot(s, b.qty, b.qty * Decimal(repr(b.close)), b.avg)
            for s, b in ledger.books.items()
            if b.qty
        }
        positions, exposure, held = ledger.positions()
        assert {p.symbol: p for p in positions} == expected
        assert len(positions) == len(expected)
        assert held == sum((p.market_value for p in expected.values()), Decimal(0))
        assert exposure.gross == sum((abs(p.market_value) for p in expected.values()), Decimal(0))
        assert ledger.equity_now() == Decimal(100_000) + flow + held
        summed = PositionExposure(tuple(expected.values()))
        for symbol in SYMBOLS:
            assert exposure.held(symbol) == summed.held(symbol)
            assert exposure.others(symbol) == summed.others(symbol)


class _Untracked:
    """The same touches, without the change reports: the book re-marks every position."""

    def __init__(self, quotes: ReplayQuotes) -> None:
        self._quotes = quotes

    def latest_quote(self, symbol: str) -> Touch | None:
        return self._quotes.latest_quote(symbol)


quote_ops = st.tuples(st.just("quote"), symbols, cents, st.integers(0, 3))
order_ops = st.tuples(st.just("order"), symbols, st.sampled_from(("buy", "sell")), quantities)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(quote_ops, order_ops), max_size=60),
    st.sampled_from((Decimal(2_000), Decimal(20_000))),
    st.booleans(),
)
def test_book_buying_power_equals_full_remarking(
    ops: list[tuple], cash: Decimal, shorting: bool
) -> None:
    quotes = ReplayQuotes(FillConfig(slippage_bps=Decimal(3)))
    assert isinstance(quotes, ChangeTrackingQuotes)
    now = [T0]
    config = AccountConfig(cash=cash, shorting_enabled=shorting)
    tracked = PaperBook(quotes, now=lambda: now[0], schedule=AlwaysOpen(), account=config)
    full = PaperBook(_Untracked(quotes), now=lambda: now[0], schedule=AlwaysOpen(), account=config)

    def same_account() -> None:
        assert tracked.account() == full.account()

    _replay(ops, quotes, now, (tracked, full), after_order=same_account)
    assert tracked.account() == full.account()
    assert tracked.positions() == full.positions()


def _replay(
    ops: list[tuple],
    quotes: ReplayQuotes,
    now: list[datetime],
    books: tuple[PaperBook, PaperBook],
    *,
    before_order: Callable[[str, Decimal], None] = lambda symbol, qty: None,
    after_order: Callable[[], None] = lambda: None,
) -> None:
    """Quotes into ``quotes``; each order submitted to both books, with the same outcome."""
    for n, op in enumerate(ops):
        now[0] = T0 + timedelta(seconds=n)
        if op[0] == "quote":
            _, symbol, close, spread = op
            half = spread / 100
            signal = Signal(
                close=close, imbalance_bid_px=close - half, imbalance_ask_px=close + half
            )
            quotes.update(SignalRow(symbol, now[0], n, "PT1S", 1, signal))
            continue
        _, symbol, side, qty = op
        before_order(symbol, qty)
        outcomes = []
        for book in books:
            request = BookRequest(symbol, side, "market", "day", qty, client_order_id=f"o{n}")
            try:
                order = book.submit(request)
            except BrokerError as refusal:
                outcomes.append(refusal.body())
            else:
                outcomes.append(book.order(order.id).status)
        assert outcomes[0] == outcomes[1]
        after_order()


class _AlwaysMarking(PaperBook):
    """The paper book as it was: every buying-power check re-marks, every mark is parsed."""

    def _surely_covered(self, cost: Decimal, exclude: uuid.UUID | None) -> bool:
        return False

    def _touch_mark(self, bid: float, ask: float) -> Decimal | None:
        if bid > 0 and ask > 0:
            return (Decimal(repr(bid)) + Decimal(repr(ask))) / 2
        if bid > 0 or ask > 0:
            return Decimal(repr(max(bid, ask)))
        return None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(quote_ops, order_ops), max_size=80),
    st.sampled_from((Decimal(500), Decimal(2_000), Decimal(20_000))),
    st.booleans(),
    st.sampled_from((1, 2)),
)
def test_book_checks_without_remarking_equal_remarking(
    ops: list[tuple], cash: Decimal, shorting: bool, multiplier: int
) -> None:
    quotes = ReplayQuotes(FillConfig(slippage_bps=Decimal(3)))
    now = [T0]
    config = AccountConfig(cash=cash, shorting_enabled=shorting, multiplier=multiplier)
    lazy = PaperBook(quotes, now=lambda: now[0], schedule=AlwaysOpen(), account=config)
    books = (
        lazy,
        _AlwaysMarking(
            _Untracked(quotes), now=lambda: now[0], schedule=AlwaysOpen(), account=config
        ),
    )

    def covered_only_if_covered(symbol: str, qty: Decimal) -> None:
        touch = quotes.latest_quote(symbol)
        if touch is not None:
            cost = qty * Decimal(repr(touch.ask_price))
            assert not lazy._surely_covered(cost, None) or cost <= lazy._buying_power(None)

    def shorts_counted() -> None:
        assert lazy._shorts == sum(1 for p in lazy.positions() if p.qty < 0)

    _replay(
        ops, quotes, now, books, before_order=covered_only_if_covered, after_order=shorts_counted
    )
    assert lazy.account() == books[1].account()
    assert lazy.positions() == books[1].positions()
    assert lazy.fills() == books[1].fills()
