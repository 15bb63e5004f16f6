"""The replay's remembered values equal what they stand for, over random sequences.

* a replayed symbol's touch, kept until its next usable row, against a touch built afresh from
  that symbol's last usable row;
* the recent orders' listing, kept until an order is added or leaves the window, against a
  filter over every order made (and the pace answers against :class:`OrderPace`);
* a ledger mark remembered per close against ``Decimal(repr(close))``;
* a paper-book order's copy against ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.backtest.helpers import T0
from torghut.events import Signal
from torghut.sim.broker.book import Order
from trading.backtest.config import FillConfig
from trading.backtest.ledger import _decimal
from trading.backtest.market import ReplayQuotes
from trading.backtest.pace import RecentOrders
from trading.core.domain import SignalRow
from trading.core.risk import OrderPace, RecentOrder

SYMBOLS = ("AAA", "BBB", "CCC")
symbols = st.sampled_from(SYMBOLS)
prices = st.one_of(
    st.none(),
    st.integers(min_value=-100, max_value=50_000).map(lambda c: c / 100),
)
row_ops = st.tuples(st.just("row"), symbols, prices, prices, prices)
ask_ops = st.tuples(st.just("ask"), symbols)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(row_ops, ask_ops), max_size=60),
    st.sampled_from(("touch", "next_bar")),
    st.sampled_from((Decimal(0), Decimal(1), Decimal("2.5"))),
)
def test_a_kept_touch_equals_one_built_afresh(
    ops: list[tuple], model: str, slippage: Decimal
) -> None:
    fill = FillConfig(model=model, slippage_bps=slippage)  # type: ignore[arg-type]
    quotes = ReplayQuotes(fill)
    last: dict[str, SignalRow] = {}
    for n, op in enumerate(ops):
        if op[0] == "row":
            _, symbol, close, bid, ask = op
            row = SignalRow(
                symbol,
                T0 + timedelta(seconds=n),
                n,
                "PT1S",
                1,
                Signal(close=close, imbalance_bid_px=bid, imbalance_ask_px=ask),
            )
            taken = quotes.update(row)
            usable = close is not None and close > 0
            assert taken == (close if usable else None)
            if usable:
                last[symbol] = row
            continue
        symbol = op[1]
        touch = quotes.latest_quote(symbol)
        if symbol not in last:
            assert touch is None
            continue
        fresh = ReplayQuotes(fill)
        fresh.update(last[symbol])
        assert touch == fresh.latest_quote(symbol)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("order", "view")),
            symbols,
            st.integers(min_value=0, max_value=40),
        ),
        max_size=80,
    ),
    st.integers(min_value=1, max_value=90),
)
def test_listed_recent_orders_equal_a_filter_over_every_order(
    ops: list[tuple[str, str, int]], lookback_s: int
) -> None:
    lookback = timedelta(seconds=lookback_s)
    recent = RecentOrders(lookback)
    made: list[RecentOrder] = []
    now = T0
    for kind, symbol, step in ops:
        now += timedelta(seconds=step)  # event time never goes back
        if kind == "order":
            order = RecentOrder(symbol, now)
            recent.add(order)
            made.append(order)
            continue
        view = recent.view(now)
        expected = tuple(o for o in made if o.submitted_at > now - lookback)
        assert view.orders == expected
        oracle = OrderPace(expected)
        for at in (now - timedelta(minutes=1), now - lookback, now):
            assert view.count_after(at) == oracle.count_after(at)
        for s in SYMBOLS:
            assert view.last(s) == oracle.last(s)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(min_value=1, max_value=10**9).map(lambda c: c / 100),
            st.floats(min_value=1e-9, max_value=1e12, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_a_remembered_mark_equals_the_printed_close(closes: list[float]) -> None:
    for close in (*closes, *closes):
        value = _decimal(close)
        expected = Decimal(repr(close))
        assert value == expected
        assert str(value) == str(expected)  # the same digits and exponent, not only the value


orders = st.builds(
    Order,
    id=st.uuids(),
    client_order_id=st.text(max_size=8),
    symbol=symbols,
    side=st.sampled_from(("buy", "sell")),
    type=st.sampled_from(("market", "limit")),
    time_in_force=st.sampled_from(("day", "gtc", "ioc")),
    qty=st.decimals(min_value=1, max_value=1000, places=2),
    limit_price=st.none() | st.decimals(min_value=1, max_value=1000, places=2),
    stop_price=st.none() | st.decimals(min_value=1, max_value=1000, places=2),
    extended_hours=st.booleans(),
    status=st.sampled_from(("new", "filled", "canceled")),
    created_at=st.just(T0),
    updated_at=st.just(T0 + timedelta(seconds=1)),
    submitted_at=st.just(T0),
    reference_price=st.decimals(min_value=1, max_value=1000, places=2),
    filled_qty=st.decimals(min_value=0, max_value=1000, places=2),
    filled_at=st.none() | st.just(T0),
    replaced_by=st.none() | st.just(uuid.UUID(int=7)),
    stop_triggered=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(orders)
def test_an_order_copy_equals_a_replace(order: Order) -> None:
    copy = order.snapshot()
    assert copy == dataclasses.replace(order)
    assert copy is not order
    status = order.status
    copy.status = "expired"  # a copy is the caller's: the book's order does not change
    assert order.status == status
