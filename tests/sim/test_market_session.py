"""The stream's protocol state machine, without sockets: replies and error codes."""

from __future__ import annotations

from typing import Any

import pytest

from torghut.sim.market.session import ERRORS, Session, SessionState

CREDS = {"sim-key": "sim-secret"}
AUTH = {"action": "auth", "key": "sim-key", "secret": "sim-secret"}


def _session(*, allow: bool = True, symbol_limit: int | None = None) -> Session:
    return Session(CREDS, lambda key: allow, symbol_limit)


def _err(code: int) -> dict[str, Any]:
    return {"T": "error", "code": code, "msg": ERRORS[code]}


def _authed(**kwargs: Any) -> Session:
    s = _session(**kwargs)
    assert s.handle(AUTH) == {"T": "success", "msg": "authenticated"}
    return s


def test_error_messages_are_alpacas_exact_strings() -> None:
    assert ERRORS[401] == "not authenticated"
    assert ERRORS[402] == "auth failed"
    assert ERRORS[403] == "already authenticated"
    assert ERRORS[404] == "auth timeout"
    assert ERRORS[406] == "connection limit exceeded"
    assert ERRORS[407] == "slow client"
    assert ERRORS[400] == "invalid syntax"
    assert ERRORS[405] == "symbol limit exceeded"
    assert ERRORS[410] == "invalid subscribe action for this feed"


def test_subscribe_before_auth_is_401() -> None:
    s = _session()
    assert s.handle({"action": "subscribe", "trades": ["AAPL"]}) == _err(401)
    assert s.handle({"action": "unsubscribe", "trades": ["AAPL"]}) == _err(401)
    assert s.state is SessionState.UNAUTHENTICATED


@pytest.mark.parametrize(
    "message",
    [
        {"action": "auth", "key": "sim-key", "secret": "wrong"},
        {"action": "auth", "key": "other", "secret": "sim-secret"},
        {"action": "auth", "key": "sim-key"},
        {"action": "auth", "key": 1, "secret": 2},
    ],
)
def test_bad_credentials_are_402(message: dict[str, Any]) -> None:
    s = _session()
    assert s.handle(message) == _err(402)
    assert s.state is SessionState.UNAUTHENTICATED
    assert s.handle(AUTH)["msg"] == "authenticated"


def test_second_auth_is_403() -> None:
    assert _authed().handle(AUTH) == _err(403)


def test_connection_limit_is_406_and_a_later_auth_may_succeed() -> None:
    allowed = [False]
    s = Session(CREDS, lambda key: allowed[0])
    assert s.handle(AUTH) == _err(406)
    assert s.state is SessionState.UNAUTHENTICATED
    allowed[0] = True
    assert s.handle(AUTH)["msg"] == "authenticated"
    assert s.key == "sim-key"


@pytest.mark.parametrize("message", [[], "auth", {"action": "dance"}, {"no": "action"}])
def test_unknown_or_malformed_messages_are_400(message: Any) -> None:
    assert _authed().handle(message) == _err(400)


def test_subscriptions_add_subtract_and_echo_the_full_state() -> None:
    s = _authed()
    reply = s.handle({"action": "subscribe", "trades": ["AAPL"], "bars": ["*"]})
    assert reply == {
        "T": "subscription",
        "trades": ["AAPL"],
        "quotes": [],
        "bars": ["*"],
        "updatedBars": [],
        "dailyBars": [],
        "statuses": [],
        "lulds": [],
        "imbalances": [],
        "corrections": ["AAPL"],
        "cancelErrors": ["AAPL"],
    }
    reply = s.handle({"trades": ["MSFT", "AAPL"], "quotes": None, "action": "subscribe"})
    assert reply["trades"] == ["AAPL", "MSFT"]
    assert reply["corrections"] == ["AAPL", "MSFT"]
    reply = s.handle({"action": "unsubscribe", "bars": ["*"], "trades": ["AAPL", "ZZZ"]})
    assert reply["bars"] == []
    assert reply["trades"] == ["MSFT"]
    assert s.wants("t", "MSFT")
    assert s.wants("c", "MSFT")
    assert s.wants("x", "MSFT")
    assert not s.wants("t", "AAPL")
    assert not s.wants("b", "AAPL")
    assert not s.wants("?", "MSFT")


def test_wildcard_matches_every_symbol_of_its_channel_only() -> None:
    s = _authed()
    s.handle({"action": "subscribe", "quotes": ["*"], "statuses": ["SPY"]})
    assert s.wants("q", "ANYTHING")
    assert s.wants("s", "SPY")
    assert not s.wants("s", "QQQ")
    assert not s.wants("t", "SPY")
    assert s.subscribed
    s.handle({"action": "unsubscribe", "quotes": ["*"], "statuses": ["SPY"]})
    assert not s.subscribed


def test_symbol_limit_is_405_and_keeps_the_previous_state() -> None:
    s = _authed(symbol_limit=2)
    s.handle({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL", "MSFT"]})
    assert s.handle({"action": "subscribe", "trades": ["NVDA"]}) == _err(405)
    assert s.subscription()["trades"] == ["AAPL"]
    assert s.handle({"action": "subscribe", "bars": ["NVDA", "TSLA", "SPY"]})["bars"] == [
        "NVDA",
        "TSLA",
        "SPY",
    ]


def test_channels_the_feed_lacks_are_410_and_bad_lists_400() -> None:
    s = _authed()
    assert s.handle({"action": "subscribe", "orderbooks": ["BTC/USD"]}) == _err(410)
    assert s.handle({"action": "subscribe", "trades": "AAPL"}) == _err(400)
    assert s.handle({"action": "subscribe", "trades": [1]}) == _err(400)
    assert not s.subscribed
