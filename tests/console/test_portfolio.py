"""Average-cost accounting of :mod:`api.portfolio` (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from api.portfolio import Fill, ledger

T = datetime(2026, 3, 2, 15, tzinfo=UTC)


def fill(side: str, qty: str, price: str, s: int, symbol: str = "AAPL") -> Fill:
    return Fill(symbol, side, D(qty), D(price), T + timedelta(seconds=s))


def test_adds_move_the_average_and_reductions_realise() -> None:
    book = ledger(
        [fill("buy", "10", "100", 0), fill("buy", "10", "110", 1), fill("sell", "5", "120", 2)]
    )
    h = book.holdings["AAPL"]
    assert (h.qty, h.avg_price, h.realized) == (D(15), D(105), D(75))
    assert h.unrealized(D(100)) == D(-75)
    assert book.marked({"AAPL": D(100)}) == D(-75)


def test_crossing_zero_closes_at_the_average_and_opens_the_rest_at_the_price() -> None:
    book = ledger([fill("buy", "4", "50", 0), fill("sell", "10", "60", 1)])
    h = book.holdings["AAPL"]
    assert (h.qty, h.avg_price, h.realized) == (D(-6), D(60), D(40))
    # covering the short below its price is a gain
    book = ledger(
        [fill("buy", "4", "50", 0), fill("sell", "10", "60", 1), fill("buy", "6", "55", 2)]
    )
    h = book.holdings["AAPL"]
    assert (h.qty, h.avg_price, h.realized) == (D(0), D(0), D(70))


def test_pnl_is_booked_per_utc_day_and_symbol_in_time_order() -> None:
    day2 = 24 * 3600
    book = ledger(
        [
            fill("sell", "1", "12", day2, "MSFT"),  # given out of order: booked by time
            fill("buy", "1", "10", 0, "MSFT"),
            fill("buy", "2", "5", 10),
            fill("sell", "2", "4", day2 + 1),
        ]
    )
    assert book.daily == {
        (T.date(), "MSFT"): D(0),
        (T.date(), "AAPL"): D(0),
        ((T + timedelta(days=1)).date(), "MSFT"): D(2),
        ((T + timedelta(days=1)).date(), "AAPL"): D(-2),
    }
    assert book.realized() == D(0)
    assert book.marked({}) == D(0)
