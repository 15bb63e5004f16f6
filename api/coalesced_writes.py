"""One send per response: the writes of one event-loop turn leave the socket together.

Why: uvicorn writes a response's head and its body with two ``transport.write`` calls, and
uvloop sends each at once, with the GIL held. On loopback a send runs the receiver's TCP path
too; under ``bench/api.py``'s 100 connections the head's send alone was 37 % of the API
thread's time holding the GIL (py-spy ``--gil``). Gathering the writes made in one turn of the
loop and handing them to the transport's ``writelines`` (one ``writev``) at the end of that turn
took ``/latest`` from 9.0-9.2 k to 11.6-12.1 k requests/s and its p99 from 30-31 ms to 22-25 ms
in the same session (``bench/README.md``).

Nothing waits longer than the current turn: the flush is the next callback the loop runs, and
an ASGI response that sends its head and body without awaiting anything in between (every
response Litestar renders whole) leaves in one segment. Order is kept: writes are flushed in
the order they were made, and ``close`` flushes what is pending before it closes; ``abort``
drops it, as an abort drops the transport's own buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingTransport", "HttpToolsCoalescing"]


class CoalescingTransport(asyncio.Transport):
    """A transport that defers its writes to the end of the loop's turn and sends them at once.

    Everything but writing is the wrapped transport's own (reading, flow control, closing)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._transport.is_closing():
            self._transport.writelines(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()


class HttpToolsCoalescing(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`."""

    # uvicorn narrows asyncio.Protocol's BaseTransport to Transport (with the same ignore).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
