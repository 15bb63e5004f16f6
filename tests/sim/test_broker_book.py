"""The paper broker's engine on its own: fills, partial fills, funds, sessions, determinism."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from torghut.sim.broker.book import AccountConfig, OrderRequest, PaperBook
from torghut.sim.broker.clock import NEW_YORK, AlwaysOpen, NyseSchedule, VirtualClock
from torghut.sim.broker.errors import BrokerError
from torghut.sim.quotes import StaticQuotes, Touch

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York


def touch(bid: float, ask: float, size: float = 1_000, at: datetime = T0) -> Touch:
    return Touch(bid_price=bid, bid_size=size, ask_price=ask, ask_size=size, ts=at)


def make_book(
    quotes: StaticQuotes,
    *,
    clock: VirtualClock | None = None,
    account: AccountConfig | None = None,
    nyse: bool = False,
    seed: int = 0,
) -> PaperBook:
    return PaperBook(
        quotes,
        now=clock or VirtualClock(T0),
        schedule=NyseSchedule() if nyse else AlwaysOpen(),
        account=account,
        seed=seed,
    )


def buy(qty: str, symbol: str = "AAPL", **kwargs: object) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side="buy",
        type=kwargs.pop("type", "market"),  # type: ignore[arg-type]
        time_in_force=kwargs.pop("time_in_force", "day"),  # type: ignore[arg-type]
        qty=Decimal(qty),
        **kwargs,  # type: ignore[arg-type]
    )


def sell(qty: str, symbol: str = "AAPL", **kwargs: object) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side="sell",
        type=kwargs.pop("type", "market"),  # type: ignore[arg-type]
        time_in_force=kwargs.pop("time_in_force", "day"),  # type: ignore[arg-type]
        qty=Decimal(qty),
        **kwargs,  # type: ignore[arg-type]
    )


def test_market_orders_take_the_touch_and_move_cash_and_position() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)

    accepted = book.submit(buy("10", client_order_id="b1"))

    assert accepted.status == "pending_new"
    order = book.order(accepted.id)
    assert order.status == "filled"
    assert order.filled_avg_price == Decimal("100.5")
    assert [e.event for e in book.events()] == ["pending_new", "new", "fill"]
    account = book.account()
    assert account.cash == Decimal("100000") - Decimal("1005")
    [position] = book.positions()
    assert (position.qty, position.avg_entry_price) == (Decimal(10), Decimal("100.5"))
    assert position.current_price == Decimal("100.25")
    assert position.unrealized_pl == Decimal("-2.5")
    assert account.equity == account.cash + Decimal("1002.5")

    book.submit(sell("4"))
    assert book.fills()[-1].price == Decimal("100.0")
    assert book.fills()[-1].position_qty == Decimal(6)
    assert book.position("AAPL").avg_entry_price == Decimal("100.5")


def test_limit_order_rests_until_the_quote_crosses_and_fills_at_the_touch() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    order = book.submit(buy("5", type="limit", limit_price=Decimal("99.8"), time_in_force="gtc"))

    book.on_quote("AAPL")
    assert book.order(order.id).status == "new"

    quotes.set("AAPL", touch(99.5, 99.7))
    book.on_quote("AAPL")

    filled = book.order(order.id)
    assert filled.status == "filled"
    assert filled.filled_avg_price == Decimal("99.7")


def test_large_order_fills_at_most_the_displayed_size_per_quote() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5, size=100)})
    book = make_book(quotes)
    order = book.submit(buy("250"))

    assert book.order(order.id).filled_qty == Decimal(100)
    book.tick()  # the same quote again: its size is used up
    assert book.order(order.id).filled_qty == Decimal(100)

    quotes.set("AAPL", touch(100.0, 100.6, size=100, at=T0 + timedelta(seconds=1)))
    book.on_quote("AAPL")
    quotes.set("AAPL", touch(100.0, 100.7, size=100, at=T0 + timedelta(seconds=2)))
    book.on_quote("AAPL")

    done = book.order(order.id)
    assert done.status == "filled"
    assert [f.qty for f in book.fills()] == [Decimal(100), Decimal(100), Decimal(50)]
    assert [f.position_qty for f in book.fills()] == [Decimal(100), Decimal(200), Decimal(250)]
    expected_avg = (100 * Decimal("100.5") + 100 * Decimal("100.6") + 50 * Decimal("100.7")) / 250
    assert done.filled_avg_price == expected_avg
    events = [e.event for e in book.events()]
    assert events == ["pending_new", "new", "partial_fill", "partial_fill", "fill"]


def test_orders_of_one_symbol_share_a_quotes_size_in_submission_order() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5, size=100)})
    book = make_book(quotes)
    first = book.submit(buy("80", type="limit", limit_price=Decimal(101), time_in_force="gtc"))
    second = book.submit(buy("80", type="limit", limit_price=Decimal(101), time_in_force="gtc"))

    assert book.order(first.id).filled_qty == Decimal(80)
    assert book.order(second.id).filled_qty == Decimal(20)
    assert book.order(second.id).status == "partially_filled"


def test_insufficient_buying_power_is_refused_with_alpacas_body() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.0)})
    book = make_book(quotes, account=AccountConfig(cash=Decimal(1_000)))

    with pytest.raises(BrokerError) as refused:
        book.submit(buy("11"))

    assert refused.value.status == 403
    assert refused.value.body() == {
        "code": 40310000,
        "message": "insufficient buying power",
        "buying_power": "1000",
        "cost_basis": "1100",
    }
    assert book.orders() == []


def test_open_orders_reserve_buying_power() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.0)})
    book = make_book(quotes, account=AccountConfig(cash=Decimal(1_000)))
    book.submit(buy("6", type="limit", limit_price=Decimal(90), time_in_force="gtc"))

    assert book.account().buying_power == Decimal(1000 - 540)
    with pytest.raises(BrokerError):
        book.submit(buy("5"))


def test_a_fill_the_account_can_no_longer_afford_rejects_the_order() -> None:
    quotes = StaticQuotes({"AAPL": touch(0, 0, size=0)})
    book = make_book(quotes, account=AccountConfig(cash=Decimal(1_000)))
    order = book.submit(buy("5", type="stop", stop_price=Decimal(150), time_in_force="gtc"))
    quotes.set("AAPL", touch(299.0, 300.0))

    book.on_quote("AAPL")

    rejected = book.order(order.id)
    assert rejected.status == "rejected"
    assert rejected.failed_at == T0
    assert book.fills() == []


def test_client_order_id_is_unique_forever() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    first = book.submit(buy("1", type="limit", limit_price=Decimal(90), client_order_id="x"))
    book.cancel(first.id)

    with pytest.raises(BrokerError) as duplicate:
        book.submit(buy("1", client_order_id="x"))

    assert duplicate.value.status == 422
    assert duplicate.value.body() == {
        "code": 40010001,
        "message": "client_order_id must be unique",
    }
    assert book.order_by_client_id("x").id == first.id
    assert book.order_by_client_id("x").status == "canceled"


def test_cancel_of_a_finished_order_is_refused() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    order = book.submit(buy("1"))

    with pytest.raises(BrokerError) as refused:
        book.cancel(order.id)

    assert (refused.value.status, refused.value.code) == (422, 42210000)
    assert refused.value.message == 'order is already in "filled" state'


def test_selling_what_is_not_held_needs_shorting() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    long_only = make_book(quotes)
    with pytest.raises(BrokerError) as refused:
        long_only.submit(sell("3"))
    assert refused.value.status == 403
    assert refused.value.message == (
        "insufficient qty available for order (requested: 3, available: 0)"
    )
    assert refused.value.extra["symbol"] == "AAPL"

    margin = make_book(quotes, account=AccountConfig(multiplier=2, shorting_enabled=True))
    margin.submit(sell("3"))
    [position] = margin.positions()
    assert position.side == "short"
    assert position.qty == Decimal(-3)
    account = margin.account()
    assert account.short_market_value == Decimal("-300.75")  # 3 x mid 100.25
    assert account.cash == Decimal("100300")


def test_ioc_cancels_the_unfilled_rest_and_fok_fills_all_or_nothing() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5, size=100)})
    book = make_book(quotes)

    ioc = book.submit(buy("150", time_in_force="ioc"))
    assert book.order(ioc.id).status == "canceled"
    assert book.order(ioc.id).filled_qty == Decimal(100)

    quotes.set("AAPL", touch(100.0, 100.5, size=100, at=T0 + timedelta(seconds=1)))
    fok = book.submit(buy("150", time_in_force="fok"))
    assert book.order(fok.id).status == "canceled"
    assert book.order(fok.id).filled_qty == 0

    fok_ok = book.submit(buy("100", time_in_force="fok"))
    assert book.order(fok_ok.id).status == "filled"


def test_stop_order_triggers_when_the_touch_reaches_the_stop() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    book.submit(buy("10"))
    stop = book.submit(sell("10", type="stop", stop_price=Decimal(95), time_in_force="gtc"))

    quotes.set("AAPL", touch(96.0, 96.2, at=T0 + timedelta(seconds=1)))
    book.on_quote("AAPL")
    assert book.order(stop.id).status == "new"

    quotes.set("AAPL", touch(94.9, 95.1, at=T0 + timedelta(seconds=2)))
    book.on_quote("AAPL")
    assert book.order(stop.id).filled_avg_price == Decimal("94.9")
    assert book.positions() == []


def test_replace_supersedes_the_working_order() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    old = book.submit(buy("5", type="limit", limit_price=Decimal(99), time_in_force="gtc"))

    new = book.replace(old.id, limit_price=Decimal(101), client_order_id="replacement")

    assert book.order(old.id).status == "replaced"
    assert book.order(old.id).replaced_by == new.id
    assert book.order(new.id).replaces == old.id
    assert book.order(new.id).status == "filled"
    assert book.order_by_client_id("replacement").id == new.id


def test_venue_rejection_is_asynchronous() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    book.reject_next_orders(1)

    accepted = book.submit(buy("1"))

    assert accepted.status == "pending_new"
    assert book.order(accepted.id).status == "rejected"
    assert [e.event for e in book.events()] == ["pending_new", "rejected"]
    assert book.submit(buy("1")).id != accepted.id
    assert book.fills()[0].qty == Decimal(1)


def test_orders_wait_for_the_open_and_day_orders_expire_at_the_close() -> None:
    saturday = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    clock = VirtualClock(saturday)
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes, clock=clock, nyse=True)

    market = book.submit(buy("1"))
    resting = book.submit(buy("1", type="limit", limit_price=Decimal(50)))
    assert book.order(market.id).status == "accepted"
    book.tick()
    assert book.order(market.id).status == "accepted"
    assert not book.clock().is_open

    clock.set(datetime(2026, 11, 23, 9, 30, tzinfo=NEW_YORK))
    book.tick()
    assert book.order(market.id).status == "filled"
    assert book.order(resting.id).status == "new"

    clock.set(datetime(2026, 11, 23, 16, 0, tzinfo=NEW_YORK))
    book.tick()
    expired = book.order(resting.id)
    assert expired.status == "expired"
    assert expired.expired_at == datetime(2026, 11, 23, 16, 0, tzinfo=NEW_YORK)
    assert [e.event for e in book.events() if e.order.id == resting.id] == [
        "accepted",
        "new",
        "expired",
    ]


def test_nyse_schedule_knows_weekends_holidays_and_early_closes() -> None:
    nyse = NyseSchedule()
    wednesday_evening = datetime(2026, 11, 25, 17, 0, tzinfo=NEW_YORK)

    assert not nyse.is_open(wednesday_evening)
    assert nyse.next_open(wednesday_evening) == datetime(2026, 11, 27, 9, 30, tzinfo=NEW_YORK)
    assert nyse.next_close(wednesday_evening) == datetime(2026, 11, 27, 13, 0, tzinfo=NEW_YORK)
    assert nyse.session(date(2026, 11, 26)) is None
    during = datetime(2026, 11, 24, 15, 59, tzinfo=NEW_YORK)
    assert nyse.is_open(during)
    assert nyse.next_close(during) == datetime(2026, 11, 24, 16, 0, tzinfo=NEW_YORK)
    assert nyse.next_open(during) == datetime(2026, 11, 25, 9, 30, tzinfo=NEW_YORK)


def test_same_inputs_same_ids_and_events() -> None:
    def run() -> list[tuple[str, str, str]]:
        quotes = StaticQuotes({"AAPL": touch(100.0, 100.5, size=30)})
        book = make_book(quotes, seed=7)
        book.submit(buy("50"))
        quotes.set("AAPL", touch(100.0, 100.6, size=30, at=T0 + timedelta(seconds=1)))
        book.tick()
        return [
            (e.event, str(e.order.id), str(e.fill and e.fill.execution_id)) for e in book.events()
        ]

    assert run() == run()


def test_drain_hands_each_event_out_once() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    book.submit(buy("1"))

    assert [e.event for e in book.drain_events()] == ["pending_new", "new", "fill"]
    assert book.drain_events() == []
    assert len(book.events()) == 3


def test_exported_state_continues_the_same_account_in_a_new_book() -> None:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    book = make_book(quotes)
    filled = book.submit(buy("10", client_order_id="b1"))
    resting = book.submit(buy("1", client_order_id="b2", type="limit", limit_price=Decimal(90)))
    blob = book.export_state()

    again = make_book(quotes, seed=99)  # a restarted simulator: another seed, empty book
    again.import_state(blob)

    assert again.account() == book.account()
    assert again.positions() == book.positions()
    assert again.order_by_client_id("b1").id == filled.id
    assert again.order(resting.id).status == "new"
    assert [o.id for o in again.orders(status="open")] == [resting.id]
    assert len(again.fills()) == 1
    again.submit(sell("10"))  # the restored position can be sold
    assert not [p for p in again.positions() if p.qty]
    with pytest.raises(ValueError, match="version"):
        again.import_state(pickle.dumps((0, {})))
