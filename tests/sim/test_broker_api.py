"""The paper broker through alpaca-py, unchanged: TradingClient over REST, TradingStream over ws."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import httpx
import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)
from alpaca.trading.stream import TradingStream
from prometheus_client import REGISTRY
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers import wait_until
from torghut.sim.broker import AccountConfig, BrokerSimulator
from torghut.sim.quotes import StaticQuotes, Touch

KEY = "PKTEST"
SECRET = "test-secret"
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def touch(bid: float, ask: float, size: float = 1_000, seq: int = 0) -> Touch:
    return Touch(bid, size, ask, size, T0 + timedelta(milliseconds=seq))


@dataclass
class Broker:
    sim: BrokerSimulator
    quotes: StaticQuotes
    client: TradingClient


@pytest.fixture
def broker() -> Iterator[Broker]:
    quotes = StaticQuotes({"AAPL": touch(100.0, 100.5)})
    sim = BrokerSimulator(
        quotes, key_id=KEY, secret_key=SECRET, account=AccountConfig(cash=Decimal(50_000))
    )
    with sim.run_in_thread() as base_url:
        client = TradingClient(KEY, SECRET, paper=True, url_override=base_url)
        yield Broker(sim, quotes, client)


def market(
    qty: float, side: OrderSide = OrderSide.BUY, cid: str | None = None
) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol="AAPL", qty=qty, side=side, time_in_force=TimeInForce.DAY, client_order_id=cid
    )


def limit(qty: float, price: float, cid: str | None = None) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol="AAPL",
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.GTC,
        limit_price=price,
        client_order_id=cid,
    )


def order_status(client: TradingClient, order: Order, status: OrderStatus) -> Order | None:
    current = client.get_order_by_id(order.id)
    assert isinstance(current, Order)
    return current if current.status == status else None


def test_account_clock_positions_and_asset_parse(broker: Broker) -> None:
    account = broker.client.get_account()
    clock = broker.client.get_clock()
    asset = broker.client.get_asset("AAPL")

    assert account.cash == "50000"
    assert account.buying_power == "50000"
    assert account.status == "ACTIVE"
    assert clock.is_open
    assert clock.timestamp.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
    assert broker.client.get_all_positions() == []
    assert asset.symbol == "AAPL"
    assert asset.tradable


def test_responses_on_a_kept_alive_connection_are_not_held_back_by_nagle(
    broker: Broker,
) -> None:
    """With Nagle on, each response's body waited for the client's delayed ACK: every REST call
    on a reused connection took at least 40 ms (Linux's minimum delayed-ACK time), three per
    trading batch. The fastest of five calls is far below that when the body is sent at once."""
    broker.client.get_account()  # opens the connection alpaca-py's session then reuses
    took = []
    for _ in range(5):
        started = time.perf_counter()
        broker.client.get_account()
        took.append(time.perf_counter() - started)
    assert min(took) < 0.030, took


def test_market_buy_fills_at_the_ask(broker: Broker) -> None:
    submitted = broker.client.submit_order(market(10, cid="buy-1"))
    assert isinstance(submitted, Order)
    assert submitted.client_order_id == "buy-1"

    filled = wait_until(
        lambda: order_status(broker.client, submitted, OrderStatus.FILLED), timeout=5
    )
    assert filled.filled_avg_price == "100.5"
    assert filled.filled_qty == "10"
    position = broker.client.get_open_position("AAPL")
    assert (position.qty, position.avg_entry_price, position.current_price) == (
        "10",
        "100.5",
        "100.25",
    )
    assert broker.client.get_account().cash == "48995"


def test_limit_order_fills_when_the_quote_crosses(broker: Broker) -> None:
    resting = broker.client.submit_order(limit(5, 99.0))
    assert isinstance(resting, Order)
    assert wait_until(lambda: order_status(broker.client, resting, OrderStatus.NEW), timeout=5)

    broker.quotes.set("AAPL", touch(98.8, 98.9, seq=1))

    filled = wait_until(lambda: order_status(broker.client, resting, OrderStatus.FILLED), timeout=5)
    assert filled.filled_avg_price == "98.9"


def test_large_order_fills_partially_quote_by_quote(broker: Broker) -> None:
    broker.quotes.set("AAPL", touch(100.0, 100.5, size=100, seq=1))
    order = broker.client.submit_order(market(250))
    assert isinstance(order, Order)

    partial = wait_until(
        lambda: order_status(broker.client, order, OrderStatus.PARTIALLY_FILLED), timeout=5
    )
    assert partial.filled_qty == "100"
    broker.sim.tick()
    assert broker.client.get_order_by_id(order.id).filled_qty == "100"

    broker.quotes.set("AAPL", touch(100.0, 100.7, size=200, seq=2))
    broker.sim.on_quote("AAPL")

    filled = wait_until(lambda: order_status(broker.client, order, OrderStatus.FILLED), timeout=5)
    assert filled.filled_avg_price == str((100 * Decimal("100.5") + 150 * Decimal("100.7")) / 250)
    assert [f.qty for f in broker.sim.fills()] == [Decimal(100), Decimal(150)]


def test_insufficient_buying_power_is_403(broker: Broker) -> None:
    with pytest.raises(APIError) as refused:
        broker.client.submit_order(market(600))

    assert refused.value.status_code == 403
    assert refused.value.code == 40310000
    assert refused.value.message == "insufficient buying power"
    assert broker.sim.orders() == []


def test_duplicate_client_order_id_is_422_and_the_original_is_found(broker: Broker) -> None:
    first = broker.client.submit_order(limit(1, 90.0, cid="decision-abc"))
    assert isinstance(first, Order)

    with pytest.raises(APIError) as duplicate:
        broker.client.submit_order(limit(1, 90.0, cid="decision-abc"))

    assert duplicate.value.status_code == 422
    assert duplicate.value.code == 40010001
    assert duplicate.value.message == "client_order_id must be unique"
    existing = broker.client.get_order_by_client_id("decision-abc")
    assert isinstance(existing, Order)
    assert existing.id == first.id
    assert len(broker.sim.orders()) == 1


def test_cancel_and_cancel_again(broker: Broker) -> None:
    order = broker.client.submit_order(limit(1, 90.0))
    assert isinstance(order, Order)

    assert broker.client.cancel_order_by_id(order.id) is None
    canceled = broker.client.get_order_by_id(order.id)
    assert canceled.status == OrderStatus.CANCELED
    assert canceled.canceled_at is not None

    with pytest.raises(APIError) as again:
        broker.client.cancel_order_by_id(order.id)
    assert (again.value.status_code, again.value.code) == (422, 42210000)


def test_unknown_order_and_position_are_404(broker: Broker) -> None:
    with pytest.raises(APIError) as order:
        broker.client.get_order_by_id(uuid4())
    with pytest.raises(APIError) as position:
        broker.client.get_open_position("MSFT")

    assert (order.value.status_code, order.value.code) == (404, 40410000)
    assert position.value.message == "position does not exist"


def test_wrong_keys_are_401(broker: Broker) -> None:
    stranger = TradingClient(KEY, "wrong", paper=True, url_override=broker.sim.base_url)

    with pytest.raises(APIError) as refused:
        stranger.get_account()

    assert refused.value.status_code == 401
    assert refused.value.code == 40110000


def test_close_position_and_listing_filters(broker: Broker) -> None:
    bought = broker.client.submit_order(market(4))
    assert isinstance(bought, Order)
    wait_until(lambda: broker.client.get_all_positions(), timeout=5)

    closing = broker.client.close_position("AAPL")
    assert isinstance(closing, Order)
    assert closing.side == OrderSide.SELL
    wait_until(lambda: not broker.client.get_all_positions(), timeout=5)
    closed = broker.client.get_orders()
    assert closed == []
    assert broker.sim.account().cash == Decimal(50_000) - 4 * Decimal("0.5")


def test_error_after_accept_leaves_the_order_at_the_broker(broker: Broker) -> None:
    broker.sim.faults.fail_next_submits(status=500)

    with pytest.raises(APIError) as failed:
        broker.client.submit_order(limit(1, 90.0, cid="lost-response"))

    assert failed.value.status_code == 500
    found = broker.client.get_order_by_client_id("lost-response")
    assert isinstance(found, Order)
    assert found.status == OrderStatus.NEW


def test_held_response_arrives_after_release_with_the_order_already_live(broker: Broker) -> None:
    broker.sim.faults.hold_next_submits()
    accepted: list[str] = []
    broker.sim.faults.on_accept(lambda order: accepted.append(order.client_order_id))
    responses: list[object] = []
    submitter = threading.Thread(
        target=lambda: responses.append(broker.client.submit_order(limit(1, 90.0, cid="held")))
    )
    submitter.start()

    wait_until(lambda: accepted == ["held"], timeout=5)
    assert responses == []
    assert broker.sim.order_by_client_id("held").status == "new"

    broker.sim.faults.release_held()
    submitter.join(timeout=5)
    assert not submitter.is_alive()
    [response] = responses
    assert isinstance(response, Order)
    assert response.client_order_id == "held"


def test_throttled_request_gets_alpacas_429_body(broker: Broker) -> None:
    broker.sim.faults.throttle_next_requests(1)
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}

    throttled = httpx.get(f"{broker.sim.base_url}/v2/account", headers=headers)
    normal = httpx.get(f"{broker.sim.base_url}/v2/account", headers=headers)

    assert throttled.status_code == 429
    assert throttled.json() == {"code": 42910000, "message": "rate limit exceeded"}
    assert normal.status_code == 200


class StreamRecorder:
    """Runs alpaca-py's TradingStream on a thread and keeps what it receives."""

    def __init__(self, sim: BrokerSimulator) -> None:
        self.sim = sim
        self.updates: list[TradeUpdate] = []
        self.stream = TradingStream(KEY, SECRET, paper=True, url_override=sim.stream_url)
        self.stream.subscribe_trade_updates(self._on_update)
        self.thread = threading.Thread(target=self.stream.run, name="trading-stream")

    async def _on_update(self, update: TradeUpdate) -> None:
        self.updates.append(update)
        await asyncio.sleep(0)

    def __enter__(self) -> StreamRecorder:
        self.thread.start()
        wait_until(lambda: self.sim.stream_clients() == 1, timeout=10, message="no listener")
        return self

    def __exit__(self, *_: object) -> None:
        self.stream.stop()
        self.sim.disconnect_streams()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "TradingStream did not stop"

    def events_for(self, order_id: object) -> list[str]:
        return [str(u.event) for u in list(self.updates) if u.order.id == order_id]


def test_trading_stream_receives_new_and_fill(broker: Broker) -> None:
    with StreamRecorder(broker.sim) as recorder:
        order = broker.client.submit_order(market(3))
        assert isinstance(order, Order)

        wait_until(lambda: "fill" in recorder.events_for(order.id), timeout=10)

    assert recorder.events_for(order.id) == ["pending_new", "new", "fill"]
    fill = recorder.updates[-1]
    assert fill.price == 100.5
    assert fill.qty == 3
    assert fill.position_qty == 3
    assert fill.execution_id is not None
    assert fill.order.status == OrderStatus.FILLED
    assert fill.timestamp.tzinfo is not None


def test_trading_stream_receives_partial_fill_cancel_and_reject(broker: Broker) -> None:
    broker.quotes.set("AAPL", touch(100.0, 100.5, size=2, seq=1))
    with StreamRecorder(broker.sim) as recorder:
        partial = broker.client.submit_order(market(5))
        assert isinstance(partial, Order)
        wait_until(lambda: "partial_fill" in recorder.events_for(partial.id), timeout=10)
        broker.client.cancel_order_by_id(partial.id)
        broker.sim.reject_next_orders(1)
        rejected = broker.client.submit_order(market(1))
        assert isinstance(rejected, Order)

        wait_until(lambda: "rejected" in recorder.events_for(rejected.id), timeout=10)

    assert recorder.events_for(partial.id) == ["pending_new", "new", "partial_fill", "canceled"]
    assert recorder.events_for(rejected.id) == ["pending_new", "rejected"]


def test_stream_protocol_refuses_listen_before_auth_and_wrong_keys(broker: Broker) -> None:
    with connect(broker.sim.stream_url, open_timeout=5) as socket:
        socket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        early = json.loads(socket.recv(timeout=5))
        socket.send(
            json.dumps({"action": "authenticate", "data": {"key_id": KEY, "secret_key": "x"}})
        )
        refused = json.loads(socket.recv(timeout=5))
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=5)

    assert early == {
        "stream": "authorization",
        "data": {"action": "listen", "status": "unauthorized"},
    }
    assert refused["data"]["status"] == "unauthorized"
    assert broker.sim.stream_clients() == 0


def test_stream_listen_replaces_the_stream_set_and_frames_are_binary_json(broker: Broker) -> None:
    with connect(broker.sim.stream_url, open_timeout=5) as socket:
        socket.send(
            json.dumps({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}})
        )
        authorized = socket.recv(timeout=5)
        socket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "x"]}}))
        listening = json.loads(socket.recv(timeout=5))
        wait_until(lambda: broker.sim.stream_clients() == 1, timeout=5)
        broker.client.submit_order(market(1))
        first = socket.recv(timeout=5)
        socket.send(json.dumps({"action": "listen", "data": {"streams": []}}))

    assert isinstance(authorized, bytes)
    assert json.loads(authorized)["data"] == {"action": "authenticate", "status": "authorized"}
    assert listening == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    assert isinstance(first, bytes)
    assert json.loads(first)["data"]["event"] == "pending_new"


def test_a_504_after_accept_makes_alpaca_py_retry_into_the_duplicate_guard(broker: Broker) -> None:
    broker.sim.faults.fail_next_submits(status=504)

    with pytest.raises(APIError) as retried:
        broker.client.submit_order(limit(1, 90.0, cid="retried"))

    assert retried.value.status_code == 422
    assert retried.value.message == "client_order_id must be unique"
    assert [o.client_order_id for o in broker.sim.orders()] == ["retried"]


def test_delayed_response_still_returns_the_order(broker: Broker) -> None:
    broker.sim.faults.delay_next_submits(0.2)

    order = broker.client.submit_order(market(1, cid="slow"))

    assert isinstance(order, Order)
    assert order.client_order_id == "slow"
    assert broker.sim.fills()[0].client_order_id == "slow"


def test_replace_cancel_all_close_all_and_order_filters(broker: Broker) -> None:
    resting = broker.client.submit_order(limit(2, 95.0, cid="rest"))
    other = broker.client.submit_order(limit(1, 94.0))
    assert isinstance(resting, Order)
    assert isinstance(other, Order)
    wait_until(lambda: order_status(broker.client, other, OrderStatus.NEW), timeout=5)

    replacement = broker.client.replace_order_by_id(
        resting.id, ReplaceOrderRequest(limit_price=101.0, client_order_id="rest-2")
    )
    assert isinstance(replacement, Order)
    assert replacement.replaces == resting.id
    wait_until(lambda: order_status(broker.client, replacement, OrderStatus.FILLED), timeout=5)
    assert broker.client.get_order_by_id(resting.id).status == OrderStatus.REPLACED

    canceled = broker.client.cancel_orders()
    assert [(c.id, c.status) for c in canceled] == [(other.id, 200)]

    closed = broker.client.close_all_positions(cancel_orders=True)
    assert [(c.symbol, c.status) for c in closed] == [("AAPL", 200)]
    wait_until(lambda: not broker.client.get_all_positions(), timeout=5)

    everything = broker.client.get_orders(
        GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=["AAPL"], direction="asc")
    )
    assert [o.id for o in everything][:3] == [resting.id, other.id, replacement.id]
    assert len(everything) == 4
    assert broker.client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []
    later = broker.client.get_orders(
        GetOrdersRequest(status=QueryOrderStatus.ALL, after=datetime.now(UTC) + timedelta(hours=1))
    )
    assert later == []


class FlakyQuotes:
    """A quote source that fails while ``broken`` is set (a market feed outage)."""

    def __init__(self, touch: Touch) -> None:
        self.touch = touch
        self.broken = False

    def latest_quote(self, symbol: str) -> Touch | None:
        if self.broken:
            raise ConnectionError("market feed down")
        return self.touch


def test_matcher_survives_a_failing_quote_source() -> None:
    quotes = FlakyQuotes(touch(100.0, 100.5))
    sim = BrokerSimulator(quotes, key_id=KEY, secret_key=SECRET)
    failures = REGISTRY.get_sample_value("torghut_broker_sim_matcher_errors_total") or 0.0
    with sim.run_in_thread() as base_url:
        client = TradingClient(KEY, SECRET, paper=True, url_override=base_url)
        order = client.submit_order(limit(1, 99.0))
        assert isinstance(order, Order)
        quotes.broken = True
        wait_until(
            lambda: (
                (REGISTRY.get_sample_value("torghut_broker_sim_matcher_errors_total") or 0)
                > failures
            ),
            timeout=5,
        )
        with pytest.raises(APIError) as down:
            client.submit_order(market(1))
        assert (down.value.status_code, down.value.code) == (500, 50010000)

        quotes.touch = touch(98.0, 98.5, seq=1)
        quotes.broken = False

        filled = wait_until(lambda: order_status(client, order, OrderStatus.FILLED), timeout=5)
        assert filled.filled_avg_price == "98.5"


def test_stream_connections_past_the_limit_get_http_429() -> None:
    sim = BrokerSimulator(StaticQuotes({}), key_id=KEY, secret_key=SECRET, max_stream_connections=1)
    with sim.run_in_thread(), StreamRecorder(sim):
        with pytest.raises(InvalidStatus) as refused:
            connect(sim.stream_url, open_timeout=5).close()

        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body or b"{}")["code"] == 42910000
        assert sim.stream_clients() == 1
