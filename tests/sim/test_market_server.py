"""The websocket server over real sockets: protocol flow, codecs, batching, limits."""

from __future__ import annotations

import json
import socket
import struct

import httpx
import msgpack
import pytest
import websockets
from websockets.sync.client import connect

from tests.helpers import wait_until
from tests.sim.test_market_support import KEY, SECRET, Client, running
from torghut.sim.market import MarketSimulator, SyntheticMarket
from torghut.sim.market.session import ERRORS


def _err(code: int) -> list[dict[str, object]]:
    return [{"T": "error", "code": code, "msg": ERRORS[code]}]


AUTH = {"action": "auth", "key": KEY, "secret": SECRET}


def test_connect_auth_subscribe_and_error_codes() -> None:
    with running(rate=2000) as (_, url), Client(url) as c:
        assert c.recv() == [{"T": "success", "msg": "connected"}]
        c.send({"action": "subscribe", "trades": ["AAPL"]})
        assert c.recv() == _err(401)
        c.send({"action": "auth", "key": KEY, "secret": "nope"})
        assert c.recv() == _err(402)
        c.send("not json at all")  # type: ignore[arg-type]
        assert c.recv() == _err(400)
        c.send(AUTH)
        assert c.recv() == [{"T": "success", "msg": "authenticated"}]
        c.send(AUTH)
        assert c.recv() == _err(403)
        reply = c.subscribe(trades=["AAPL"], quotes=["MSFT"])
        assert reply["trades"] == ["AAPL"]
        assert reply["quotes"] == ["MSFT"]
        data = c.data(50)
        assert {(m["T"], m["S"]) for m in data} == {("t", "AAPL"), ("q", "MSFT")}


def test_auth_timeout_is_404_then_close() -> None:
    with running(auth_timeout_s=0.3) as (sim, url), Client(url) as c:
        assert c.recv()[0]["msg"] == "connected"
        assert c.recv(timeout=5) == _err(404)
        with pytest.raises(websockets.ConnectionClosedOK):
            c.recv(timeout=5)
        wait_until(lambda: sim.stats()["auth_timeouts"] == 1, 5)


def test_second_connection_gets_406_and_the_first_is_unaffected() -> None:
    with running(rate=2000, auth_timeout_s=30) as (sim, url), Client(url) as first:
        first.handshake()
        first.subscribe(trades=["AAPL"])
        before = first.data(5)
        with Client(url) as second:
            assert second.recv()[0]["msg"] == "connected"
            second.send(AUTH)
            assert second.recv() == _err(406)
            second.send(AUTH, binary=True)  # the socket stays open: ask again
            assert second.recv() == _err(406)
            after = first.data(5)
            assert after[0]["i"] > before[-1]["i"]
            first.close()  # a clean close frees the slot at once
            wait_until(lambda: sim.stats()["connections"] == 1, 5)
            second.send(AUTH)
            assert second.recv() == [{"T": "success", "msg": "authenticated"}]
        assert sim.stats()["connection_limited"] == 2


def test_feeds_are_separate_endpoints_and_unknown_paths_404() -> None:
    with running() as (sim, url), Client(url) as iex:
        iex.handshake()
        with Client(sim.url("sip")) as sip:
            sip.handshake()
        with (
            pytest.raises(websockets.InvalidStatus) as info,
            connect(sim.base_url + "/v2/nope", open_timeout=5),
        ):
            pass
        assert info.value.response.status_code == 404


def test_a_vanished_client_holds_its_slot_for_the_grace_period() -> None:
    with running(dead_connection_grace_s=2.0, auth_timeout_s=30) as (sim, url):
        ghost = Client(url)
        ghost.handshake()
        # Vanish without a close frame: RST the TCP connection under the client.
        ghost.ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ghost.ws.socket.close()
        wait_until(lambda: sim.stats()["connections"] == 0, 5)
        with Client(url) as c:
            assert c.recv()[0]["msg"] == "connected"
            c.send(AUTH)
            assert c.recv() == _err(406)

            def admitted() -> bool:
                c.send(AUTH)
                return c.recv()[0]["T"] == "success"

            wait_until(admitted, 10, interval=0.1)


def test_json_by_default_msgpack_when_the_handshake_asks() -> None:
    with running(rate=2000, connection_limit=3) as (_, url):
        with Client(url) as j:
            j.handshake()
            j.subscribe(trades=["*"])
            j.data(1)
            assert all(isinstance(f, str) for f in j.frames)
            assert isinstance(json.loads(j.frames[-1])[0]["t"], str)
        with Client(url, msgpack_codec=True) as m:
            m.handshake(binary=True)
            m.subscribe(trades=["*"])
            data = m.data(1)
            assert all(isinstance(f, bytes) for f in m.frames)
            assert next(iter(data[0])) == "T"
            assert isinstance(data[0]["t"], msgpack.Timestamp)
            raw = msgpack.unpackb(m.frames[-1])
            assert all(next(iter(obj)) == "T" for obj in raw)


def test_msgpack_can_be_refused() -> None:
    with running(msgpack_ok=False) as (_, url), Client(url, msgpack_codec=True) as c:
        c.handshake()
        assert all(isinstance(f, str) for f in c.frames)


def test_data_frames_are_batched_mixed_and_bounded() -> None:
    with running(rate=5000, batch_size=7, pacing="fast") as (_, url), Client(url) as c:
        c.handshake()
        c.subscribe(trades=["*"], quotes=["*"])
        c.data(500)
        frames = [json.loads(f) for f in c.frames[3:]]
        assert max(len(f) for f in frames) == 7
        assert any(len({m["T"] for m in f}) > 1 for f in frames)


def test_slow_client_gets_407_and_is_closed() -> None:
    kwargs = dict(
        rate=50_000,
        pacing="fast",
        max_pending_frames=4,
        slow_client_timeout_s=0.3,
        send_buffer_bytes=4096,
        compression=False,
        close_timeout_s=10,
    )
    with running(**kwargs) as (sim, url), Client(url, rcvbuf=4096, max_queue=4) as c:
        c.handshake()
        c.subscribe(trades=["*"], quotes=["*"])
        # Read nothing until the server has given up on us, then drain.
        wait_until(lambda: sim.stats()["slow_clients"] == 1, 20)
        frames: list[list[dict[str, object]]] = []
        closed = False
        while not closed:
            try:
                frames.append(c.recv(timeout=10))
            except websockets.ConnectionClosedOK:
                closed = True
        assert frames[-1] == _err(407)
        assert all(m["T"] != "error" for frame in frames[:-1] for m in frame)
        wait_until(lambda: sim.stats()["connections"] == 0, 5)


def test_control_endpoint_and_stats() -> None:
    with running() as (sim, _):
        r = httpx.get(f"{sim.control_url}/fault", params={"kind": "duplicate", "every": "3"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"ok": True, "armed": "duplicate", "every": 3}
        assert httpx.get(f"{sim.control_url}/fault", params={"kind": "explode"}).status_code == 400
        assert httpx.get(f"{sim.control_url}/clear").json() == {"ok": True}
        stats = httpx.get(f"{sim.control_url}/stats").json()
        assert stats["connections"] == 0
        assert httpx.get(f"{sim.control_url}/bogus").status_code == 404


def test_latest_quote_follows_the_market_and_constructor_guards() -> None:
    market = SyntheticMarket(3, ["AAPL"], rate=1000)
    sim = MarketSimulator(market)
    assert sim.latest_quote("AAPL") is None
    market.take(limit=10)
    assert sim.latest_quote("AAPL") == market.latest_quote("AAPL")
    with pytest.raises(ValueError, match="pacing"):
        MarketSimulator(pacing="warp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be > 0"):
        MarketSimulator(batch_size=0)


def test_history_limit_keeps_the_newest_messages() -> None:
    with running(rate=5000, pacing="fast", history_limit=50) as (sim, url), Client(url) as c:
        c.handshake()
        c.subscribe(trades=["*"])
        c.data(200)
        wait_until(lambda: sim.stats()["messages_emitted"] > 200, 5)
        emitted = sim.emitted()
        assert len(emitted) == 50
        assert len(sim.emitted("AAPL")) == 50
        assert len(sim.sent()) == 50
        assert emitted[-1].t_ns > emitted[0].t_ns
