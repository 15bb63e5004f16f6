"""The coalescing transport on uvloop's real TCP transport, over a socket pair."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Awaitable, Callable

import httpx
import sqlalchemy as sa
import uvloop

from api.app import create_app
from api.coalesced_writes import CoalescingTransport
from api.server import BackgroundServer
from tests.api.conftest import closed_port, settings_for
from torghut.config import ClickHouseSettings


def _on_uvloop(scenario: Callable[[CoalescingTransport, socket.socket], Awaitable[None]]) -> None:
    """Run ``scenario`` with a coalescing transport on one end of a socket pair, the other
    end a plain socket the test reads."""

    async def main() -> None:
        ours, peer = socket.socketpair()
        peer.settimeout(5)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        try:
            await scenario(CoalescingTransport(transport, loop), peer)
        finally:
            transport.abort()
            peer.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def _received(peer: socket.socket, size: int) -> bytes:
    """``size`` bytes from the peer (or what arrived before the end of stream or its 5 s
    timeout), read on a thread while the loop goes on sending."""

    def read() -> bytes:
        data = b""
        while len(data) < size:
            chunk = peer.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    return await asyncio.to_thread(read)


def _nothing_sent(peer: socket.socket) -> bool:
    readable, _, _ = select.select([peer], [], [], 0)
    return not readable


def test_writes_of_one_turn_leave_together_and_in_order() -> None:
    async def scenario(transport: CoalescingTransport, peer: socket.socket) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.writelines([b"body-", bytearray(b"1")])
        assert _nothing_sent(peer)  # still this turn: held
        assert transport.get_write_buffer_size() == 25  # what is held counts as buffered
        # awaiting the read ends the turn: the flush is the loop's next callback
        assert await _received(peer, 25) == b"HTTP/1.1 200 OK\r\n\r\nbody-1"
        transport.write(b"next")
        assert await _received(peer, 4) == b"next"

    _on_uvloop(scenario)


def test_a_slow_reader_gets_every_byte_in_order() -> None:
    """A peer that is not reading yet: the held writes go to the transport's own buffer (flow
    control is the transport's), nothing is lost or reordered when the reader catches up."""
    big = bytes(range(256)) * 16_384  # 4 MiB: far beyond the socket buffers

    async def scenario(transport: CoalescingTransport, peer: socket.socket) -> None:
        transport.write(big)
        transport.write(b"tail")
        assert await _received(peer, len(big) + 4) == big + b"tail"

    _on_uvloop(scenario)


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def closing(transport: CoalescingTransport, peer: socket.socket) -> None:
        transport.write(b"last words")
        transport.close()
        assert transport.is_closing()
        assert await _received(peer, 64) == b"last words"  # then end of stream

    async def aborting(transport: CoalescingTransport, peer: socket.socket) -> None:
        transport.write(b"never sent")
        transport.abort()
        with contextlib.suppress(ConnectionResetError):  # an abort may reset the stream
            assert await _received(peer, 64) == b""  # nothing of the held write arrived

    _on_uvloop(closing)
    _on_uvloop(aborting)


def test_write_eof_sends_what_is_held_first() -> None:
    async def scenario(transport: CoalescingTransport, peer: socket.socket) -> None:
        assert transport.can_write_eof()
        transport.write(b"before eof")
        transport.write_eof()
        assert await _received(peer, 64) == b"before eof"

    _on_uvloop(scenario)


def test_the_api_answers_pipelined_requests_whole_and_in_order() -> None:
    """Raw HTTP/1.1 on one connection through the served app: three requests sent at once get
    three complete answers in order (heads and bodies of one turn travel together)."""
    down = ClickHouseSettings(dsn=f"http://127.0.0.1:{closed_port()}", database="torghut")
    engine = sa.create_engine("sqlite://")
    app = create_app(settings_for(down, "sqlite://"), store_engine=engine)
    with BackgroundServer(app, port=closed_port()) as url:
        port = int(url.rsplit(":", 1)[1])
        request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(request * 3)
            data = b""
            deadline = time.monotonic() + 5
            while data.count(b'{"status":"ok"}') < 3 and time.monotonic() < deadline:
                data += conn.recv(65536)
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert data.count(b'{"status":"ok"}') == 3
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    engine.dispose()
