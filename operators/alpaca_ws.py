"""Bytewax source for Alpaca's market-data websocket: one connection for the whole cluster.

Why this shape (bytewax-notes §2.3, pattern B): Bytewax's source API is synchronous and must
never block, while a websocket needs a running event loop to answer pings, reconnect and
re-authenticate. So a daemon I/O thread owns the loop and the connection and feeds raw frames
into a bounded queue; the partition's ``next_batch`` only drains that queue. A full queue makes
the reader wait (TCP back-pressure, Alpaca may then say 407 and drop us; we reconnect), it never
drops frames.

Alpaca allows one connection per key and endpoint, and answers a second one with 406. The source
therefore has a single partition (one connection for the whole cluster, whatever the worker
count), and a process-wide guard per (url, key) makes a second connection from this process
wait until the first one has closed, including across reconnects.

Reconnect policy, per state the heartbeats report:

* network errors, server closes, 407 → ``degraded``, exponential back-off with equal jitter from
  ``reconnect_initial_s`` to ``reconnect_max_s`` (reset once data flowed on a connection);
* 401/402 (and 409, a plan that lacks the feed) → ``auth_failed``: not ready, logged clearly,
  retried slowly (every ``auth_failed_backoff_s``);
* 406 → ``connection_limited``: another connection holds the slot (or a dead one Alpaca keeps
  ~90 s); wait ``connection_limited_backoff_s`` before trying again instead of hammering.

Subscriptions are sent again in full after every reconnect. Frames are not decoded here beyond
a peek at one-message frames for control messages; decoding (and dead-lettering) happens in the
dataflow (:mod:`operators.alpaca_decode`). A websocket cannot rewind, so the source is
at-most-once across restarts (``snapshot()`` is ``None``); overlaps after a reconnect are removed
downstream by :func:`operators.dedup.dedup`.

Caught up: ``on_drained(source_id, wall_us)`` (e.g.
:meth:`operators.ta_status.TaProgress.mark_source_drained`) is called after each poll that
emptied the frame queue (fewer frames than a batch), with the wall time that poll vouches for
(:class:`operators.caught_up.CaughtUp`: its own time less ``drain_settle_s`` and a stall
margin, and nothing new right after a pause of the process, while the frames sent before the
pause still wait in the socket), and once with 0 when the partition is built (registration):
the TA steps close bars on the wall clock only while the source keeps up.

Stopping cleanly: set the ``stop`` event; the partition closes the connection, drains what was
received and ends the stream (EOF), so sinks flush and the flow returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import websockets
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client import Counter, Gauge
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect

from operators.alpaca_decode import Frame
from operators.caught_up import CaughtUp
from torghut.config import AlpacaSettings, SettingsError
from torghut.events import IngestState
from torghut.logs import get_logger
from torghut.ta.instants import us_to_dt

__all__ = [
    "DEFAULT_CHANNELS",
    "SOURCE_ID",
    "AlpacaWsConfig",
    "AlpacaWsSource",
    "ConnectionStatus",
    "SourceHeartbeat",
    "SourceItem",
    "backoff_delay",
]

log = get_logger("alpaca_ws")

DEFAULT_CHANNELS: Final = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses")
_STATES: Final[tuple[IngestState, ...]] = (
    "connecting",
    "healthy",
    "degraded",
    "auth_failed",
    "connection_limited",
)
_AUTH_FAILED_CODES: Final = frozenset((401, 402, 409, 411))
_CONNECTION_LIMITED: Final = 406
_PEEK_MAX_BYTES: Final = 4096

STATE = Gauge(
    "torghut_ingest_connection_state",
    "1 for the Alpaca connection's current state, 0 for the others.",
    ["state"],
)
READY = Gauge("torghut_ingest_ready", "1 when the Alpaca stream is connected and subscribed.")
RECONNECTS = Counter("torghut_ingest_reconnects_total", "Connection attempts after the first.")
FRAMES = Counter("torghut_ingest_frames_total", "Data frames received from Alpaca.")
QUEUE_FULL = Counter(
    "torghut_ingest_queue_full_total", "Times the reader waited because the frame queue was full."
)


@dataclass(frozen=True)
class AlpacaWsConfig:
    """Where and how to connect; build it with :meth:`from_settings` at the edge."""

    url: str
    key_id: SecretStr
    secret_key: SecretStr
    subscriptions: Mapping[str, tuple[str, ...]]
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    connection_limited_backoff_s: float = 95.0
    auth_failed_backoff_s: float = 30.0
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 30.0
    queue_frames: int = 10_000
    batch_frames: int = 500
    idle_poll_s: float = 0.005
    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 10.0
    ping_timeout_s: float | None = 20.0
    msgpack: bool = True
    drain_settle_s: float = 0.5
    """After a pause of the process, how long the source must run before a poll that finds
    the frame queue empty vouches for the wall clock again (:class:`operators.caught_up.
    CaughtUp`): the reader thread's time to move the frames that waited in the socket into the
    queue. Only postpones idle closing of quiet symbols' bars; never changes a bar."""

    @classmethod
    def from_settings(
        cls, alpaca: AlpacaSettings, channels: Iterable[str] = DEFAULT_CHANNELS, **overrides: Any
    ) -> AlpacaWsConfig:
        """Config from ``AlpacaSettings`` (every channel for ``ALPACA_SYMBOLS``).

        ``overrides`` replace fields, e.g. ``url=`` of a simulator started in-process when
        ``ALPACA_DATA_WS_URL`` is empty (the embedded default).
        """
        url = overrides.pop("url", alpaca.data_ws_url)
        if not url:
            raise SettingsError(
                "ALPACA_DATA_WS_URL is empty: point it at Alpaca "
                "(wss://stream.data.alpaca.markets/v2/iex) or at the market simulator"
            )
        symbols = tuple(alpaca.symbols)
        return replace(
            cls(
                url=url,
                key_id=alpaca.key_id,
                secret_key=alpaca.secret_key,
                subscriptions=dict.fromkeys(channels, symbols),
                reconnect_initial_s=alpaca.reconnect_initial_s,
                reconnect_max_s=alpaca.reconnect_max_s,
                connection_limited_backoff_s=alpaca.connection_limited_backoff_s,
                auth_failed_backoff_s=alpaca.reconnect_max_s,
                heartbeat_interval_s=alpaca.heartbeat_interval_s,
            ),
            **overrides,
        )


class ConnectionStatus(msgspec.Struct, frozen=True):
    """A snapshot of the connection for heartbeats and readiness probes."""

    state: IngestState
    connected: bool
    last_message_at: datetime | None
    reconnects: int
    frames: int
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "healthy"


class SourceHeartbeat(msgspec.Struct, frozen=True):
    """Emitted by the source every ``heartbeat_interval_s`` with the connection's status.

    ``caught_up_at``: the latest wall time a poll of the frame queue vouched for
    (:class:`operators.caught_up.CaughtUp`), None before the first; every frame received
    before it was emitted by the source before this heartbeat.
    """

    at: datetime
    status: ConnectionStatus
    caught_up_at: datetime | None = None


SourceItem = Frame | SourceHeartbeat

SOURCE_ID = "alpaca"
"""The name under which the source reports being caught up (``on_drained``)."""
"""What the source emits: raw data frames, and periodic heartbeats."""


class AlpacaWsSource(FixedPartitionedSource[SourceItem, None]):
    """The Alpaca stream as a single-partition Bytewax source of :data:`SourceItem` s.

    ``stop``: when set, the source disconnects, emits what it already received and ends.
    :meth:`status` is the live connection status (``.ready`` for readiness probes).
    """

    def __init__(
        self,
        config: AlpacaWsConfig,
        stop: threading.Event | None = None,
        on_drained: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop if stop is not None else threading.Event()
        self._on_drained = on_drained
        self._link: _Link | None = None

    def status(self) -> ConnectionStatus:
        link = self._link
        if link is None:
            return ConnectionStatus("connecting", False, None, 0, 0, "not started")
        return link.status()

    def list_parts(self) -> list[str]:
        return ["alpaca"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[SourceItem, None]:
        if self._link is not None and self._link.alive:
            raise RuntimeError("AlpacaWsSource is already connected; one connection only")
        self._link = _Link(self.config)
        if self._on_drained is not None:
            self._on_drained(SOURCE_ID, 0)
        return _Partition(self._link, self.config, self.stop, self._on_drained)


class _Partition(StatefulSourcePartition[SourceItem, None]):
    def __init__(
        self,
        link: _Link,
        config: AlpacaWsConfig,
        stop: threading.Event,
        on_drained: Callable[[str, int], None] | None,
    ) -> None:
        self._link = link
        self._stop = stop
        self._on_drained = on_drained
        self._batch = config.batch_frames
        self._idle = timedelta(seconds=config.idle_poll_s)
        self._interval = config.heartbeat_interval_s
        self._next_heartbeat = time.monotonic()
        self._was_idle = False
        self._caught_up = CaughtUp(round(config.drain_settle_s * 1_000_000))
        link.start()

    def next_batch(self) -> list[SourceItem]:
        stopping = self._stop.is_set()
        if stopping:
            self._link.stop()
        polled_us = time.time_ns() // 1000
        items: list[SourceItem] = self._link.drain(None if stopping else self._batch)
        # fewer than a batch: the queue was emptied
        vouched = self._caught_up.vouch(polled_us, caught_up=len(items) < self._batch)
        if vouched is not None and self._on_drained is not None:
            self._on_drained(SOURCE_ID, vouched)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            at = self._caught_up.latest_us
            status = self._link.status()
            caught_up = us_to_dt(at) if at is not None and status.connected else None
            items.append(SourceHeartbeat(datetime.now(UTC), status, caught_up))
            self._next_heartbeat = now + self._interval
        if stopping and not items:
            raise StopIteration
        self._was_idle = not items
        return items

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + self._idle if self._was_idle else None

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._link.stop()


# --- the I/O thread ------------------------------------------------------------------------

_GUARDS: dict[tuple[str, str], threading.Lock] = {}
_GUARDS_LOCK = threading.Lock()


def _guard_for(url: str, key_id: str) -> threading.Lock:
    """One lock per (endpoint, key) in this process: never two connections at once."""
    with _GUARDS_LOCK:
        return _GUARDS.setdefault((url.split("?", 1)[0], key_id), threading.Lock())


class _Peek(msgspec.Struct):
    T: str = ""
    code: int = 0
    msg: str = ""


class _ServerError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg


@dataclass
class _Mutable:
    state: IngestState = "connecting"
    connected: bool = False
    last_message_at: datetime | None = None
    last_frame_mono: float = 0.0
    reconnects: int = 0
    frames: int = 0
    detail: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Link:
    """The connection's thread, queue and status, shared with the partition."""

    def __init__(self, config: AlpacaWsConfig) -> None:
        self._config = config
        self._queue: queue.Queue[Frame] = queue.Queue(config.queue_frames)
        self._stop = threading.Event()
        self._status = _Mutable()
        self._thread = threading.Thread(target=self._main, name="alpaca-ws", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._guard = _guard_for(config.url, config.key_id.get_secret_value())
        self._peek = (msgspec.msgpack.Decoder(list[_Peek]), msgspec.json.Decoder(list[_Peek]))
        self._encode = msgspec.msgpack.encode if config.msgpack else msgspec.json.encode
        self._set_state("connecting", connected=False, detail="starting")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=10)

    def drain(self, limit: int | None) -> list[SourceItem]:
        q = self._queue
        out: list[SourceItem] = []
        while limit is None or len(out) < limit:
            try:
                out.append(q.get_nowait())
            except queue.Empty:
                break
        return out

    def status(self) -> ConnectionStatus:
        s = self._status
        with s.lock:
            state, detail = s.state, s.detail
            stale = (
                state == "healthy"
                and s.last_frame_mono
                and time.monotonic() - s.last_frame_mono > self._config.stale_after_s
            )
            if stale:
                state, detail = "degraded", f"no data for {self._config.stale_after_s:g} s"
            return ConnectionStatus(
                state, s.connected, s.last_message_at, s.reconnects, s.frames, detail
            )

    def _set_state(self, state: IngestState, *, connected: bool, detail: str) -> None:
        s = self._status
        with s.lock:
            changed = state != s.state or detail != s.detail
            s.state, s.connected, s.detail = state, connected, detail
        for name in _STATES:
            STATE.labels(name).set(1 if name == state else 0)
        READY.set(1 if state == "healthy" else 0)
        if changed:
            log.info("alpaca_ws_state", state=state, connected=connected, detail=detail)

    # -- thread body ----------------------------------------------------------------------

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._run())
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            self._set_state("connecting", connected=False, detail="stopped")

    async def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            if not first:
                with self._status.lock:
                    self._status.reconnects += 1
                RECONNECTS.inc()
            first = False
            delay = await self._connect_once()
            if delay is None:
                attempt = 0
                delay = backoff_delay(self._config, 0)
            elif delay < 0:
                attempt += 1
                delay = backoff_delay(self._config, attempt)
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.1))

    async def _connect_once(self) -> float | None:
        """One connection's life. Returns the wait before the next attempt: ``None`` after a
        connection that carried data (reset back-off), ``-1`` for "next back-off step", or a
        fixed delay for auth failures and the connection limit."""
        cfg = self._config
        if not await self._acquire_guard():
            return 0.0
        got_data = False
        try:
            headers = {"Content-Type": "application/msgpack"} if cfg.msgpack else {}
            async with connect(
                cfg.url,
                additional_headers=headers,
                open_timeout=cfg.open_timeout_s,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_timeout_s,
                close_timeout=2,
                max_size=2**24,
                max_queue=256,
            ) as ws:
                await self._handshake(ws)
                got_data = await self._read(ws)
            self._set_state("degraded", connected=False, detail="server closed the connection")
        except _ServerError as exc:
            return self._on_server_error(exc, connected=False)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self._set_state("degraded", connected=False, detail=f"{type(exc).__name__}: {exc}")
        finally:
            self._guard.release()
        return None if got_data else -1

    async def _acquire_guard(self) -> bool:
        while not self._stop.is_set():
            if self._guard.acquire(timeout=0):
                return True
            await asyncio.sleep(0.05)
        return False

    def _on_server_error(self, exc: _ServerError, *, connected: bool) -> float:
        cfg = self._config
        if exc.code in _AUTH_FAILED_CODES:
            detail = f"Alpaca refused the credentials or plan: {exc}; check ALPACA_KEY_ID/SECRET"
            log.error("alpaca_ws_auth_failed", code=exc.code, msg=exc.msg)
            self._set_state("auth_failed", connected=connected, detail=detail)
            return _jitter(cfg.auth_failed_backoff_s)
        if exc.code == _CONNECTION_LIMITED:
            detail = (
                "406 connection limit exceeded: another connection uses this key (or a dead "
                f"one Alpaca still holds); retrying in ~{cfg.connection_limited_backoff_s:g} s"
            )
            log.warning("alpaca_ws_connection_limited", code=exc.code)
            self._set_state("connection_limited", connected=connected, detail=detail)
            return _jitter(cfg.connection_limited_backoff_s)
        log.warning("alpaca_ws_server_error", code=exc.code, msg=exc.msg)
        self._set_state("degraded", connected=connected, detail=str(exc))
        return -1

    async def _recv_control(self, ws: ClientConnection) -> _Peek:
        data = await asyncio.wait_for(ws.recv(), self._config.open_timeout_s)
        peeked = self._peek_control(data)
        if peeked is None:
            raise _ServerError(0, "expected a control message during the handshake")
        if peeked.T == "error":
            raise _ServerError(peeked.code, peeked.msg)
        return peeked

    async def _handshake(self, ws: ClientConnection) -> None:
        cfg = self._config
        hello = await self._recv_control(ws)
        if hello.T != "success" or hello.msg != "connected":
            raise _ServerError(0, f"unexpected greeting {hello.T} {hello.msg}")
        await ws.send(
            self._encode(
                {
                    "action": "auth",
                    "key": cfg.key_id.get_secret_value(),
                    "secret": cfg.secret_key.get_secret_value(),
                }
            )
        )
        auth = await self._recv_control(ws)
        if auth.T != "success" or auth.msg != "authenticated":
            raise _ServerError(0, f"unexpected auth reply {auth.T} {auth.msg}")
        await ws.send(
            self._encode(
                {"action": "subscribe", **{k: list(v) for k, v in cfg.subscriptions.items()}}
            )
        )
        while (await self._recv_control(ws)).T != "subscription":
            pass
        with self._status.lock:
            self._status.last_frame_mono = time.monotonic()
        self._set_state("healthy", connected=True, detail="subscribed")

    async def _read(self, ws: ClientConnection) -> bool:
        got_data = False
        q = self._queue
        status = self._status
        async for data in ws:
            binary = isinstance(data, bytes)
            raw = data if isinstance(data, bytes) else data.encode()
            peeked = self._peek_control(raw) if len(raw) <= _PEEK_MAX_BYTES else None
            if peeked is not None and peeked.T in ("success", "error", "subscription"):
                self._on_control(peeked)
                continue
            now = datetime.now(UTC)
            frame = Frame(now, raw, binary)
            try:
                q.put_nowait(frame)
            except queue.Full:
                QUEUE_FULL.inc()
                await asyncio.to_thread(self._put_blocking, frame)
            got_data = True
            FRAMES.inc()
            with status.lock:
                status.frames += 1
                status.last_message_at = now
                status.last_frame_mono = time.monotonic()
        return got_data

    def _put_blocking(self, frame: Frame) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(frame, timeout=0.1)
                return

    def _peek_control(self, data: bytes | str) -> _Peek | None:
        """The message of a one-message frame (control messages always come alone)."""
        try:
            if isinstance(data, bytes) and self._config.msgpack:
                if not data or data[0] != 0x91:
                    return None
                msgs = self._peek[0].decode(data)
            else:
                msgs = self._peek[1].decode(data)
        except msgspec.DecodeError:
            return None
        return msgs[0] if len(msgs) == 1 else None

    def _on_control(self, msg: _Peek) -> None:
        if msg.T == "error":
            log.warning("alpaca_ws_stream_error", code=msg.code, msg=msg.msg)
            if msg.code != 407:
                self._set_state("degraded", connected=True, detail=f"{msg.code} {msg.msg}")


def backoff_delay(cfg: AlpacaWsConfig, attempt: int) -> float:
    """Exponential back-off with equal jitter: uniform in [d/2, d], d = initial·2^(attempt-1)."""
    if attempt <= 0:
        return _jitter(cfg.reconnect_initial_s)
    delay = min(cfg.reconnect_max_s, cfg.reconnect_initial_s * 2 ** (attempt - 1))
    return _jitter(delay)


def _jitter(delay: float) -> float:
    return random.uniform(delay / 2, delay)
