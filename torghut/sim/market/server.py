"""The Alpaca-compatible market-data websocket server (stocks v2 protocol).

Why: alpaca-py and our own ingest source must run against something that behaves like
``wss://stream.data.alpaca.markets/v2/{feed}`` — the same control messages and error codes, the
JSON and msgpack codecs, batched data frames, the per-key connection limit and the slow-client
cut-off — plus faults on demand, which the real service only offers on bad days.

Shape: one *pump* pulls messages from a source (:class:`SyntheticMarket` or
:class:`SessionReplay`), either paced by the wall clock (``pacing="realtime"``, optionally sped
up) or as fast as the clients take them (``pacing="fast"``: it only runs while some client is
subscribed and waits for slow ones, so no message is generated into the void). Each connection
has a protocol :class:`Session`, a bounded outbox and a single sender task that is the only
writer to its socket (control replies and data frames therefore never interleave wrongly).

Everything a test needs to check delivery is recorded: :meth:`MarketSimulator.emitted` (every
message the source produced, in order) and :meth:`MarketSimulator.sent` (every distinct message
written to at least one socket, in first-send order).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.http11 import Request, Response

from torghut.logs import get_logger
from torghut.sim.market.faults import FaultBoard, FaultKind, FaultRecord, FaultRule, malformed_frame
from torghut.sim.market.session import Session, SessionState, error
from torghut.sim.market.synthetic import SyntheticMarket
from torghut.sim.market.wire import Codec, Message, control_frame, decode_client_frame, encode_frame
from torghut.sim.quotes import Touch

__all__ = ["DEFAULT_CREDENTIALS", "FEEDS", "MarketSimulator", "MessageSource", "Pacing"]

log = get_logger("sim.market")

FEEDS: tuple[str, ...] = ("iex", "sip", "delayed_sip", "test")
#: Matches AlpacaSettings' defaults, so an unconfigured client authenticates.
DEFAULT_CREDENTIALS: Mapping[str, str] = {"sim-key": "sim-secret"}
Pacing = Literal["realtime", "fast"]
_NS = 1_000_000_000


class MessageSource(Protocol):
    """What the pump reads: the synthetic market, a replay, or anything shaped like them."""

    @property
    def start_ns(self) -> int: ...

    @property
    def exhausted(self) -> bool: ...

    def take(self, until_ns: int | None = None, limit: int | None = None) -> list[Message]: ...

    def latest_quote(self, symbol: str) -> Touch | None: ...


class _Close:
    """Outbox marker: close the socket (after sending what precedes it)."""


_CLOSE = _Close()


@dataclass(eq=False)
class _Connection:
    id: int
    ws: ServerConnection
    feed: str
    codec: Codec
    session: Session
    outbox: deque[bytes | list[Message] | _Close] = field(default_factory=deque)
    pending_data: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    frames: int = 0
    server_closed: bool = False
    closing: bool = False
    stalled_until: float = 0.0
    held: tuple[bytes, list[Message]] | None = None


class MarketSimulator:
    """An Alpaca stocks-v2 market-data stream on ``ws://host:port/v2/{feed}``.

    Args:
        source: where messages come from; default a :class:`SyntheticMarket` built from
            ``seed``, ``symbols`` and ``rate``.
        symbols, seed, rate: the default synthetic market's parameters.
        host, port: where to listen (``port=0`` picks a free port; see :attr:`port`).
        credentials: accepted key → secret pairs (default ``sim-key``/``sim-secret``).
        pacing: ``"realtime"`` (wall clock × ``speed``) or ``"fast"`` (as fast as clients read,
            only while a client is subscribed).
        speed: virtual seconds per wall second in realtime pacing (replay speed factor).
        batch_size: most data messages per frame.
        tick_s: how often the realtime pump wakes to publish what became due.
        auth_timeout_s: deadline for a successful auth after connect (then 404 and close).
        connection_limit: authenticated connections allowed per (key, feed) (else 406).
        dead_connection_grace_s: how long a connection the client dropped without a close frame
            keeps its slot (Alpaca holds such sockets ~90 s).
        max_pending_frames: data frames a connection may have queued before it is a slow client.
        slow_client_timeout_s: in fast pacing, how long the pump waits for a full connection to
            make room before declaring it slow (in realtime pacing a full outbox is slow at once).
        msgpack_ok: honour ``Content-Type: application/msgpack`` on the handshake (if ``False``
            every client gets JSON, like a misconfigured server).
        symbol_limit: most distinct trades+quotes symbols per connection (else 405).
        compression: negotiate permessage-deflate as Alpaca does.
        close_timeout_s: how long a server-initiated close waits for the client's close frame.
        send_buffer_bytes: if set, SO_SNDBUF of accepted sockets (makes slow clients show fast).
        faults: fault rules in force from the start.
        feeds: the paths served, as ``/v2/{feed}``.
        clock_starts_on_subscribe: in realtime pacing, start the virtual clock when the first
            client subscribes rather than at :meth:`start`, so a replay or a short test does not
            lose its opening messages to the handshake (afterwards it runs regardless).
        history_limit: keep at most this many messages in :meth:`emitted` (overall and per
            symbol) and :meth:`sent`, dropping the oldest (``None`` = keep all; set it for
            long-running processes).
    """

    def __init__(
        self,
        source: MessageSource | None = None,
        *,
        symbols: Sequence[str] = ("AAPL", "MSFT"),
        seed: int = 7,
        rate: float = 1000.0,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Mapping[str, str] | None = None,
        pacing: Pacing = "realtime",
        speed: float = 1.0,
        batch_size: int = 100,
        tick_s: float = 0.01,
        auth_timeout_s: float = 10.0,
        connection_limit: int = 1,
        dead_connection_grace_s: float = 90.0,
        max_pending_frames: int = 1000,
        slow_client_timeout_s: float = 2.0,
        msgpack_ok: bool = True,
        symbol_limit: int | None = None,
        compression: bool = True,
        close_timeout_s: float = 5.0,
        send_buffer_bytes: int | None = None,
        faults: Sequence[FaultRule] = (),
        feeds: Sequence[str] = FEEDS,
        clock_starts_on_subscribe: bool = True,
        history_limit: int | None = None,
    ) -> None:
        if pacing not in ("realtime", "fast"):
            raise ValueError(f"pacing must be 'realtime' or 'fast', not {pacing!r}")
        if speed <= 0 or batch_size < 1 or max_pending_frames < 1 or connection_limit < 1:
            raise ValueError("speed, batch_size, max_pending_frames, connection_limit must be > 0")
        self.source: MessageSource = source or SyntheticMarket(seed, list(symbols), rate=rate)
        self.host = host
        self._requested_port = port
        self.credentials: Mapping[str, str] = dict(credentials or DEFAULT_CREDENTIALS)
        self.pacing: Pacing = pacing
        self.speed = speed
        self.batch_size = batch_size
        self.tick_s = tick_s
        self.auth_timeout_s = auth_timeout_s
        self.connection_limit = connection_limit
        self.dead_connection_grace_s = dead_connection_grace_s
        self.max_pending_frames = max_pending_frames
        self.slow_client_timeout_s = slow_client_timeout_s
        self.msgpack_ok = msgpack_ok
        self.symbol_limit = symbol_limit
        self.compression = compression
        self.close_timeout_s = close_timeout_s
        self.send_buffer_bytes = send_buffer_bytes
        self.feeds = tuple(feeds)
        self.clock_starts_on_subscribe = clock_starts_on_subscribe
        self.faults = FaultBoard(tuple(faults))

        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._live: dict[tuple[str, str], int] = {}
        self._held: dict[tuple[str, str], list[float]] = {}
        self._subscribed = asyncio.Event()
        self._history_limit = history_limit
        self._emitted: deque[Message] = deque(maxlen=history_limit)
        self._emitted_by_symbol: dict[str, deque[Message]] = {}
        self._sent: dict[tuple[Any, ...], Message] = {}
        self._emitted_count = 0
        self._exhausted = threading.Event()
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "handshakes",
                "connections_closed",
                "frames_sent",
                "data_frames_sent",
                "slow_clients",
                "auth_timeouts",
                "connection_limited",
            ),
            0,
        )
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen and start the pump; returns :attr:`base_url`."""
        if self._server is not None:
            raise RuntimeError("MarketSimulator already started")
        self._loop = asyncio.get_running_loop()
        self._subscribed = asyncio.Event()
        self._server = await websockets.serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            compression="deflate" if self.compression else None,
            close_timeout=self.close_timeout_s,
            max_size=2**20,
        )
        self._pump_task = asyncio.create_task(self._pump(), name="market-sim-pump")
        log.info("market_sim_started", url=self.base_url, pacing=self.pacing)
        return self.base_url

    async def stop(self) -> None:
        """Stop the pump, close every connection cleanly and stop listening."""
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
            self._pump_task = None
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        log.info("market_sim_stopped", **self.stats())

    async def __aenter__(self) -> MarketSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self, feed: str = "iex", timeout_s: float = 10.0) -> Iterator[str]:
        """Run the simulator on its own event loop in a daemon thread; yields ``url(feed)``."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[Exception] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except (OSError, RuntimeError) as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=main, name="market-sim", daemon=True)
        thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError("market simulator did not start in time")
        if failure:
            raise failure[0]
        self._thread = thread
        try:
            yield self.url(feed)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            self._thread = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MarketSimulator not started")
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def url(self, feed: str = "iex") -> str:
        if feed not in self.feeds:
            raise ValueError(f"feed {feed!r} not served (serving {self.feeds})")
        return f"{self.base_url}/v2/{feed}"

    @property
    def control_url(self) -> str:
        """HTTP base of the control endpoint (``GET {control_url}/fault?kind=…``)."""
        return f"http://{self.host}:{self.port}/control"

    # -- observation and control (safe from any thread) ------------------------------------

    def emitted(self, symbol: str | None = None) -> list[Message]:
        """Every message the source produced so far (all, or one symbol's), in order."""
        if symbol is None:
            return list(self._emitted)
        return list(self._emitted_by_symbol.get(symbol, ()))

    def sent(self, symbol: str | None = None) -> list[Message]:
        """Every distinct message written to at least one socket, in first-send order."""
        messages = list(self._sent.values())
        if symbol is None:
            return messages
        return [m for m in messages if m.symbol == symbol]

    def latest_quote(self, symbol: str) -> Touch | None:
        """The source's last touch for ``symbol`` (``QuoteSource`` protocol)."""
        return self.source.latest_quote(symbol)

    def inject(self, rule: FaultRule) -> None:
        """Arm a fault: once (``rule.every is None``) or on every N-th data frame."""
        self.faults.add(rule)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def fault_log(self) -> list[FaultRecord]:
        return self.faults.log

    def disconnect_all(self) -> None:
        """Drop every connection abruptly now (no close frame), from any thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("MarketSimulator not started")
        loop.call_soon_threadsafe(self._abort_all)

    @property
    def exhausted(self) -> bool:
        """The source has no more messages and all were handed to the connections."""
        return self._exhausted.is_set()

    def wait_exhausted(self, timeout_s: float) -> bool:
        return self._exhausted.wait(timeout_s)

    def stats(self) -> dict[str, int]:
        out = dict(self._counters)
        conns = list(self._connections.values())
        out["connections"] = len(conns)
        out["authenticated"] = sum(
            1 for c in conns if c.session.state is SessionState.AUTHENTICATED
        )
        out["messages_emitted"] = self._emitted_count
        out["messages_sent"] = len(self._sent)
        out["faults_fired"] = len(self.faults.log)
        return out

    # -- HTTP side: paths and the control endpoint -----------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.startswith("/control/"):
            return self._control(conn, request)
        if path.startswith("/v2/") and path[4:] in self.feeds:
            return None
        return conn.respond(404, "unknown stream path\n")

    def _control(self, conn: ServerConnection, request: Request) -> Response:
        parts = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        command = parts.path.removeprefix("/control/")
        try:
            if command == "fault":
                every = params.get("every")
                rule = FaultRule(
                    FaultKind(params["kind"]),
                    every=int(every) if every else None,
                    seconds=float(params.get("seconds", "1.0")),
                    malformed=_malformation(params.get("malformed", "invalid")),
                )
                self.inject(rule)
                body: Any = {"ok": True, "armed": rule.kind.value, "every": rule.every}
            elif command == "clear":
                self.clear_faults()
                body = {"ok": True}
            elif command == "disconnect":
                self._abort_all()
                body = {"ok": True}
            elif command == "stats":
                body = self.stats()
            else:
                return _json_response(conn, 404, {"error": f"unknown command {command!r}"})
        except (KeyError, ValueError) as exc:
            return _json_response(conn, 400, {"error": str(exc)})
        return _json_response(conn, 200, body)

    # -- websocket side ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self._counters["handshakes"] += 1
        feed = urlsplit(ws.request.path).path[4:]
        wants_msgpack = "application/msgpack" in ws.request.headers.get("Content-Type", "")
        codec: Codec = "msgpack" if wants_msgpack and self.msgpack_ok else "json"
        if self.send_buffer_bytes is not None:
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        conn_id = next(self._ids)
        session = Session(
            self.credentials, lambda key: self._try_acquire(key, feed), self.symbol_limit
        )
        conn = _Connection(conn_id, ws, feed, codec, session)
        self._connections[conn_id] = conn
        sender = asyncio.create_task(self._sender(conn), name=f"market-sim-send-{conn_id}")
        self._control_reply(conn, {"T": "success", "msg": "connected"})
        try:
            await self._reader(conn)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._connections.pop(conn_id, None)
            self._refresh_subscribed()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._release(conn)
            self._counters["connections_closed"] += 1

    async def _reader(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.auth_timeout_s
        ws = conn.ws
        while not conn.closing:
            if conn.session.state is SessionState.UNAUTHENTICATED:
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    data = await asyncio.wait_for(ws.recv(), remaining)
                except TimeoutError:
                    self._counters["auth_timeouts"] += 1
                    self._control_reply(conn, error(404))
                    self._close(conn)
                    await ws.wait_closed()
                    return
            else:
                data = await ws.recv()
            try:
                message = decode_client_frame(data)
            except ValueError:
                self._control_reply(conn, error(400))
                continue
            reply = conn.session.handle(message)
            if reply.get("code") == 406:
                self._counters["connection_limited"] += 1
            self._control_reply(conn, reply)
            if reply["T"] == "subscription":
                self._refresh_subscribed()

    def _control_reply(self, conn: _Connection, reply: dict[str, Any]) -> None:
        conn.outbox.append(control_frame(reply, conn.codec))
        conn.wake.set()

    def _close(self, conn: _Connection) -> None:
        conn.closing = True
        conn.server_closed = True
        conn.outbox.append(_CLOSE)
        conn.wake.set()

    async def _sender(self, conn: _Connection) -> None:
        ws = conn.ws
        is_text = conn.codec == "json"
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.outbox:
                    item = conn.outbox.popleft()
                    if isinstance(item, _Close):
                        await ws.close()
                        return
                    if isinstance(item, bytes):
                        await ws.send(item, text=is_text)
                        self._counters["frames_sent"] += 1
                        continue
                    conn.pending_data -= 1
                    conn.room.set()
                    if not await self._send_data(conn, item, is_text):
                        return
        except websockets.ConnectionClosed:
            return

    async def _send_data(self, conn: _Connection, messages: list[Message], is_text: bool) -> bool:
        """Send one data frame, applying due faults; ``False`` once the socket was dropped."""
        ws = conn.ws
        conn.frames += 1
        rules = self.faults.due(conn.id, conn.frames)
        frame = encode_frame(messages, conn.codec)
        duplicate = hold = False
        for rule in rules:
            if rule.kind is FaultKind.STALL:
                conn.stalled_until = time.monotonic() + rule.seconds
                await asyncio.sleep(rule.seconds)
            elif rule.kind is FaultKind.MALFORMED:
                broken = malformed_frame(rule.malformed, conn.codec, messages[0])
                await ws.send(broken, text=is_text)
            elif rule.kind is FaultKind.DISCONNECT:
                await self._abort(conn)
                return False
            elif rule.kind is FaultKind.DUPLICATE:
                duplicate = True
            elif rule.kind is FaultKind.OUT_OF_ORDER:
                hold = True
        if hold and conn.held is None:
            conn.held = (frame, messages)
            return True
        await self._write(conn, frame, messages, is_text)
        if conn.held is not None:
            held_frame, held_messages = conn.held
            conn.held = None
            await self._write(conn, held_frame, held_messages, is_text)
        if duplicate:
            await self._write(conn, frame, messages, is_text)
        return True

    async def _write(
        self, conn: _Connection, frame: bytes, messages: list[Message], is_text: bool
    ) -> None:
        await conn.ws.send(frame, text=is_text)
        self._counters["frames_sent"] += 1
        self._counters["data_frames_sent"] += 1
        sent = self._sent
        for message in messages:
            key = message.identity
            if key not in sent:
                sent[key] = message
        limit = self._history_limit
        if limit is not None:
            while len(sent) > limit:
                del sent[next(iter(sent))]

    async def _abort(self, conn: _Connection) -> None:
        """Drop the TCP connection without a close frame, once what was written has left."""
        conn.server_closed = True
        conn.closing = True
        self._refresh_subscribed()
        transport = conn.ws.transport
        for _ in range(100):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        transport.abort()

    def _abort_all(self) -> None:
        for conn in list(self._connections.values()):
            conn.server_closed = True
            conn.closing = True
            conn.ws.transport.abort()
        self._refresh_subscribed()

    # -- connection limit -------------------------------------------------------------------

    def _try_acquire(self, key: str, feed: str) -> bool:
        slot = (key, feed)
        now = time.monotonic()
        held = [t for t in self._held.get(slot, ()) if t > now]
        self._held[slot] = held
        if self._live.get(slot, 0) + len(held) >= self.connection_limit:
            return False
        self._live[slot] = self._live.get(slot, 0) + 1
        return True

    def _release(self, conn: _Connection) -> None:
        key = conn.session.key
        if conn.session.state is not SessionState.AUTHENTICATED or key is None:
            return
        slot = (key, conn.feed)
        self._live[slot] = max(0, self._live.get(slot, 0) - 1)
        vanished = conn.ws.protocol.close_rcvd is None and not conn.server_closed
        if vanished and self.dead_connection_grace_s > 0:
            self._held.setdefault(slot, []).append(time.monotonic() + self.dead_connection_grace_s)

    # -- the pump ---------------------------------------------------------------------------

    def _refresh_subscribed(self) -> None:
        if any(c.session.subscribed and not c.closing for c in self._connections.values()):
            self._subscribed.set()
        else:
            self._subscribed.clear()

    async def _pump(self) -> None:
        source = self.source
        loop = asyncio.get_running_loop()
        if self.pacing == "realtime" and self.clock_starts_on_subscribe:
            await self._subscribed.wait()
        started = loop.time()
        try:
            while not source.exhausted:
                if self.pacing == "fast":
                    await self._subscribed.wait()
                    batch = source.take(None, self.batch_size)
                else:
                    await asyncio.sleep(self.tick_s)
                    elapsed = loop.time() - started
                    batch = source.take(source.start_ns + int(elapsed * self.speed * _NS), None)
                if batch:
                    await self._publish(batch)
                if self.pacing == "fast":
                    await asyncio.sleep(0)
        finally:
            if source.exhausted:
                self._exhausted.set()

    async def _publish(self, batch: list[Message]) -> None:
        self._emitted.extend(batch)
        self._emitted_count += len(batch)
        by_symbol = self._emitted_by_symbol
        for message in batch:
            symbol = message.fields["S"]
            history = by_symbol.get(symbol)
            if history is None:
                history = by_symbol[symbol] = deque(maxlen=self._history_limit)
            history.append(message)
        size = self.batch_size
        for offset in range(0, len(batch), size):
            chunk = batch[offset : offset + size]
            for conn in list(self._connections.values()):
                session = conn.session
                if conn.closing or not session.subscribed:
                    continue
                wants = session.wants
                picked = [m for m in chunk if wants(m.fields["T"], m.fields["S"])]
                if picked:
                    await self._offer(conn, picked)

    async def _offer(self, conn: _Connection, messages: list[Message]) -> None:
        if conn.pending_data >= self.max_pending_frames and self.pacing == "fast":
            deadline = time.monotonic() + self.slow_client_timeout_s
            while conn.pending_data >= self.max_pending_frames and not conn.closing:
                wait = max(deadline, conn.stalled_until + self.slow_client_timeout_s)
                remaining = wait - time.monotonic()
                if remaining <= 0:
                    break
                conn.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.room.wait(), remaining)
        if conn.closing:
            return
        if conn.pending_data >= self.max_pending_frames:
            self._slow_client(conn)
            return
        conn.outbox.append(messages)
        conn.pending_data += 1
        conn.wake.set()

    def _slow_client(self, conn: _Connection) -> None:
        """Drop queued data, say 407 and close: the client could not keep up."""
        self._counters["slow_clients"] += 1
        log.warning("market_sim_slow_client", connection=conn.id, pending=conn.pending_data)
        conn.outbox = deque(item for item in conn.outbox if isinstance(item, bytes))
        conn.pending_data = 0
        self._control_reply(conn, error(407))
        self._close(conn)
        self._refresh_subscribed()


def _malformation(value: str) -> Literal["invalid", "missing_fields", "wrong_types"]:
    if value == "invalid":
        return "invalid"
    if value == "missing_fields":
        return "missing_fields"
    if value == "wrong_types":
        return "wrong_types"
    raise ValueError(f"unknown malformation {value!r}")


def _json_response(conn: ServerConnection, status: int, body: Any) -> Response:
    response = conn.respond(status, json.dumps(body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
