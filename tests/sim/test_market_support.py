"""Shared helpers for the market-simulator tests (no tests here).

Kept in a ``test_market*`` module rather than ``tests/sim/conftest.py`` because that folder is
shared with the broker-simulator tests: each side owns its own files.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import msgpack
from websockets.sync.client import ClientConnection, connect

from torghut.sim.market import MarketSimulator

KEY = "sim-key"
SECRET = "sim-secret"
CONTROL_TYPES = frozenset(("success", "error", "subscription"))


@contextmanager
def running(**kwargs: Any) -> Iterator[tuple[MarketSimulator, str]]:
    """A simulator on its own thread; yields it and its ``/v2/iex`` URL."""
    sim = MarketSimulator(**kwargs)
    with sim.run_in_thread() as url:
        yield sim, url


class Client:
    """A minimal synchronous Alpaca stream client for tests (JSON or msgpack codec)."""

    def __init__(
        self,
        url: str,
        *,
        msgpack_codec: bool = False,
        rcvbuf: int | None = None,
        max_queue: int | None = None,
    ) -> None:
        """``max_queue=None`` keeps reading the socket while the test is not calling recv (so a
        close handshake is never stuck behind unread data); a number makes a slow reader."""
        headers = {"Content-Type": "application/msgpack"} if msgpack_codec else None
        sock = None
        if rcvbuf is not None:
            parts = urlsplit(url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.connect((parts.hostname, parts.port))
        self.ws: ClientConnection = connect(
            url,
            additional_headers=headers,
            sock=sock,
            open_timeout=10,
            close_timeout=2,
            max_queue=max_queue,
            legacy=True,
        )
        self.frames: list[str | bytes] = []

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, obj: dict[str, Any], *, binary: bool = False) -> None:
        if binary:
            self.ws.send(msgpack.packb(obj))
        else:
            self.ws.send(json.dumps(obj))

    def recv_raw(self, timeout: float = 10.0) -> str | bytes:
        frame = self.ws.recv(timeout=timeout)
        self.frames.append(frame)
        return frame

    def recv(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        frame = self.recv_raw(timeout)
        decoded = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)
        assert isinstance(decoded, list), decoded
        return decoded

    def handshake(self, *, binary: bool = False) -> None:
        """Read ``connected``, authenticate with the default credentials."""
        assert self.recv() == [{"T": "success", "msg": "connected"}]
        self.send({"action": "auth", "key": KEY, "secret": SECRET}, binary=binary)
        assert self.recv() == [{"T": "success", "msg": "authenticated"}]

    def subscribe(self, **channels: list[str]) -> dict[str, Any]:
        self.send({"action": "subscribe", **channels})
        reply = self.recv()
        assert len(reply) == 1
        assert reply[0]["T"] == "subscription", reply
        return reply[0]

    def data(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """At least ``count`` data messages (whole frames), skipping control messages."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(out)} of {count} data messages arrived"
            out.extend(m for m in self.recv(remaining) if m["T"] not in CONTROL_TYPES)
        return out


def wire(messages: list[Any]) -> list[dict[str, Any]]:
    """Simulator messages in JSON wire form."""
    return [m.to_wire() for m in messages]
