"""The paper broker's operational faults through alpaca-py: a key rotation (401 on every REST
request until the keys are rotated back) and a paper-account reset that forgets an order (404
for it by id and by client order id, and it is no longer open)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest

from torghut.sim.broker import BrokerSimulator
from torghut.sim.quotes import StaticQuotes, Touch

KEY, SECRET = "PKTEST", "test-secret"


@pytest.fixture
def sim() -> Iterator[BrokerSimulator]:
    quotes = StaticQuotes({"AAPL": Touch(100.0, 500, 100.5, 500, datetime.now(UTC))})
    broker = BrokerSimulator(quotes, key_id=KEY, secret_key=SECRET)
    with broker.run_in_thread():
        yield broker


def _client(sim: BrokerSimulator) -> TradingClient:
    return TradingClient(KEY, SECRET, paper=True, url_override=sim.base_url)


def test_rotated_keys_answer_401_until_rotated_back(sim: BrokerSimulator) -> None:
    client = _client(sim)
    assert client.get_account() is not None
    sim.set_credentials("PKNEW", "new-secret")
    with pytest.raises(APIError) as refused:
        client.get_all_positions()
    assert refused.value.status_code == 401
    assert TradingClient("PKNEW", "new-secret", paper=True, url_override=sim.base_url).get_clock()
    sim.set_credentials(KEY, SECRET)
    assert client.get_all_positions() == []


def test_a_forgotten_order_is_404_by_id_and_by_client_id_and_not_open(
    sim: BrokerSimulator,
) -> None:
    client = _client(sim)
    power_before = client.get_account().buying_power  # type: ignore[union-attr]
    resting = client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=50.0,
            client_order_id="resting-1",
        )
    )
    open_before = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert [str(o.id) for o in open_before] == [str(resting.id)]  # type: ignore[union-attr]
    forgotten = sim.forget_order(str(resting.id))
    assert forgotten.client_order_id == "resting-1"
    for lookup in (
        lambda: client.get_order_by_id(resting.id),  # type: ignore[union-attr]
        lambda: client.get_order_by_client_id("resting-1"),
    ):
        with pytest.raises(APIError) as missing:
            lookup()
        assert missing.value.status_code == 404
    assert client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []
    assert sim.orders() == []
    # The reset released what the order had reserved.
    power_after = client.get_account().buying_power  # type: ignore[union-attr]
    assert Decimal(str(power_after)) == Decimal(str(power_before))
