"""Faults on demand: duplicate, out-of-order, malformed, stall, disconnect — and a client that
survives all of them at once still sees every distinct sent message."""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import pytest
import websockets

from tests.helpers import wait_until
from tests.sim.test_market_support import CONTROL_TYPES, Client, running
from torghut.sim.market import (
    FaultKind,
    FaultRule,
    MarketSimulator,
    SyntheticMarket,
    message_identity,
)
from torghut.sim.market.wire import parse_rfc3339_ns

FAST: dict[str, Any] = {"pacing": "fast", "batch_size": 20, "rate": 5000}


def _data_frames(c: Client, count: int) -> list[str | bytes]:
    """The next ``count`` raw data frames (after handshake and subscription echo)."""
    out: list[str | bytes] = []
    while len(out) < count:
        out.append(c.recv_raw())
    return out


def _ids(frame: str | bytes) -> list[tuple[Any, ...]]:
    decoded = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)
    out = []
    for m in decoded:
        t = m["t"]
        m["t"] = parse_rfc3339_ns(t) if isinstance(t, str) else t.to_unix_nano()
        out.append(message_identity(m))
    return out


def _sent(sim: MarketSimulator, count: int) -> list[tuple[Any, ...]]:
    """The first ``count`` sent identities (the server records a frame just after writing it,
    so the client may hold it a moment earlier)."""
    wait_until(lambda: len(sim.sent()) >= count, 5, message=lambda: f"sent {len(sim.sent())}")
    return [m.identity for m in sim.sent()][:count]


def _subscribed_client(url: str, **kwargs: Any) -> Client:
    c = Client(url, **kwargs)
    c.handshake(binary=bool(kwargs.get("msgpack_codec")))
    c.subscribe(trades=["*"], quotes=["*"])
    return c


def test_duplicate_every_third_frame() -> None:
    rule = FaultRule(FaultKind.DUPLICATE, every=3)
    with running(faults=[rule], **FAST) as (sim, url), _subscribed_client(url) as c:
        frames = _data_frames(c, 12)
        assert frames[2] == frames[3]
        assert frames[6] == frames[7]
        assert frames[10] == frames[11]
        assert len(set(frames)) == 9
        received = [i for f in dict.fromkeys(frames) for i in _ids(f)]
        assert received == _sent(sim, len(received))
        assert [r.frame_number for r in sim.fault_log][:3] == [3, 6, 9]


def test_out_of_order_swaps_two_adjacent_frames_once() -> None:
    with running(**FAST) as (sim, url):
        sim.inject(FaultRule(FaultKind.OUT_OF_ORDER))
        with _subscribed_client(url) as c:
            frames = _data_frames(c, 4)
            order = {m.identity: n for n, m in enumerate(sim.emitted())}
            positions = [[order[i] for i in _ids(f)] for f in frames]
            assert max(positions[1]) < min(positions[0])
            assert max(positions[0]) < min(positions[2]) < min(positions[3])
            assert len(sim.fault_log) == 1


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("kind", ["invalid", "missing_fields", "wrong_types"])
def test_malformed_frame_precedes_an_intact_frame(codec: str, kind: str) -> None:
    rule = FaultRule(FaultKind.MALFORMED, malformed=kind)  # type: ignore[arg-type]
    with running(**FAST) as (sim, url):
        sim.inject(rule)
        with _subscribed_client(url, msgpack_codec=codec == "msgpack") as c:
            bad, good = _data_frames(c, 2)
            if kind == "invalid":
                with pytest.raises(ValueError):  # noqa: PT011 - both decoders raise ValueError
                    json.loads(bad) if codec == "json" else msgpack.unpackb(bad)
            else:
                decoded = json.loads(bad) if codec == "json" else msgpack.unpackb(bad)
                assert decoded[0]["T"] == "t"
                if kind == "missing_fields":
                    assert "p" not in decoded[0]
                else:
                    assert not isinstance(decoded[0]["p"], float)
            assert _ids(good) == _sent(sim, len(_ids(good)))


def test_stall_delays_but_loses_nothing() -> None:
    with running(**FAST) as (sim, url):
        sim.inject(FaultRule(FaultKind.STALL, seconds=0.5))
        # Timed from before the subscription: the stall starts with the first data frame, which
        # the server may send before the client has finished reading the subscription echo.
        began = time.monotonic()
        with _subscribed_client(url) as c:
            frames = _data_frames(c, 3)
            assert time.monotonic() - began >= 0.45
            received = [i for f in frames for i in _ids(f)]
            assert received == _sent(sim, len(received))


def test_disconnect_drops_the_socket_without_a_close_frame_and_frees_the_slot() -> None:
    rule = FaultRule(FaultKind.DISCONNECT, every=5)
    with running(faults=[rule], **FAST) as (sim, url):
        with _subscribed_client(url) as c:
            frames = _data_frames(c, 4)
            with pytest.raises(websockets.ConnectionClosedError) as info:
                c.recv_raw()
            assert info.value.rcvd is None
        received = [i for f in frames for i in _ids(f)]
        assert received == _sent(sim, len(received))
        assert len(sim.sent()) == len(received)
        with Client(url) as again:
            again.handshake()  # the server dropped it, so the slot is free at once


def test_a_reconnecting_client_sees_every_sent_message_despite_all_faults() -> None:
    rules = [
        FaultRule(FaultKind.DUPLICATE, every=3),
        FaultRule(FaultKind.OUT_OF_ORDER, every=5),
        FaultRule(FaultKind.MALFORMED, every=7, malformed="missing_fields"),
        FaultRule(FaultKind.DISCONNECT, every=11),
    ]
    market = SyntheticMarket(21, ["AAPL", "MSFT", "NVDA"], rate=3000, max_events=4000)
    with running(source=market, faults=rules, pacing="fast", batch_size=25) as (sim, url):
        seen: dict[tuple[Any, ...], int] = {}
        malformed = connections = 0
        deadline = time.monotonic() + 60
        while not (sim.exhausted and set(seen) == {m.identity for m in sim.sent()}):
            assert time.monotonic() < deadline, "client never caught up"
            connections += 1
            with _subscribed_client(url) as c:
                try:
                    while True:
                        for m in c.recv(timeout=0.5):
                            if m["T"] in CONTROL_TYPES:
                                continue
                            if "p" not in m and m["T"] == "t":
                                malformed += 1
                                continue
                            m["t"] = parse_rfc3339_ns(m["t"])
                            key = message_identity(m)
                            seen[key] = seen.get(key, 0) + 1
                except (websockets.ConnectionClosed, TimeoutError):
                    pass
            wait_until(lambda: sim.stats()["connections"] == 0, 5)
        emitted = {m.identity for m in sim.emitted()}
        assert set(seen) <= emitted
        assert connections >= 3
        assert malformed >= 1
        assert max(seen.values()) >= 2  # duplicates did arrive and were folded
        kinds = {r.kind for r in sim.fault_log}
        assert kinds == set(FaultKind) - {FaultKind.STALL}
