"""The paper broker served over HTTP and websocket, as alpaca-py expects to find Alpaca.

One port serves both: ``TradingClient(key, secret, paper=True, url_override=sim.base_url)``
and ``TradingStream(key, secret, paper=True, url_override=sim.stream_url)``. Litestar routes
the REST API of shared/alpaca-protocol.md section 3.3 and the ``trade_updates`` stream of
section 4; uvicorn serves it on a thread of its own so tests and demos keep their main thread.

The engine (:class:`PaperBook`) is not thread-safe; every call goes through
:meth:`BrokerSimulator.call`, which holds one lock and publishes the trade updates the call
produced, so the stream sees events in exactly the engine's order. A background task re-matches
open orders every ``match_interval`` seconds (quotes move without telling the broker); a market
simulator may also call :meth:`BrokerSimulator.on_quote` after each quote.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, WebSocket, delete, get, patch, post
from litestar.exceptions import HTTPException, WebSocketDisconnect
from litestar.handlers import websocket
from litestar.params import FromPath
from prometheus_client import Counter

from torghut.logs import get_logger
from torghut.sim.broker.book import (
    AccountConfig,
    AccountView,
    Fill,
    Order,
    OrderListStatus,
    PaperBook,
    PositionView,
    TradeUpdate,
)
from torghut.sim.broker.clock import AlwaysOpen, Now, Schedule, wall_clock
from torghut.sim.broker.errors import BrokerError, unprocessable
from torghut.sim.broker.faults import Faults, SubmitFault
from torghut.sim.broker.wire import (
    account_json,
    asset_json,
    bad_request,
    clock_json,
    order_json,
    parse_bool,
    parse_decimal,
    parse_order_request,
    parse_time,
    parse_uuid,
    position_json,
    trade_update_json,
)
from torghut.sim.quotes import QuoteSource

T = TypeVar("T")
Json = dict[str, Any]

log = get_logger(__name__)

MATCHER_ERRORS = Counter(
    "torghut_broker_sim_matcher_errors_total", "Periodic matching passes that raised"
)
STREAM_REFUSALS = Counter(
    "torghut_broker_sim_stream_refusals_total",
    "trade_updates handshakes refused with 429 (connection limit)",
)
STREAM_DROPS = Counter(
    "torghut_broker_sim_stream_drops_total", "trade_updates clients dropped for falling behind"
)

DEFAULT_KEY_ID = "PKSIMULATOR"
DEFAULT_SECRET_KEY = "simulator-secret"
STREAM_QUEUE_LIMIT = 10_000
MAX_ORDERS_PAGE = 500
_LIST_STATUSES: dict[str, OrderListStatus] = {"open": "open", "closed": "closed", "all": "all"}
_FAULT_MESSAGES = {
    429: "rate limit exceeded",
    500: "internal server error",
    503: "service unavailable",
    504: "gateway timeout",
}


@dataclass(eq=False)
class _StreamClient:
    """One trade_updates connection; its queue is touched only on the server loop."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    listening: bool = False


class BrokerSimulator:
    """An Alpaca-compatible paper broker on a local port.

    ``quotes`` is what orders fill against (the market simulator, or ``StaticQuotes``);
    ``now``/``schedule`` set the time and the session (default: wall clock, always open);
    ``seed`` makes ids reproducible; ``port=0`` picks a free port;
    ``max_stream_connections`` (default unlimited) answers further trade_updates handshakes
    with HTTP 429, as Alpaca does, so a client's reconnect back-off can be exercised.
    """

    def __init__(
        self,
        quotes: QuoteSource,
        *,
        key_id: str = DEFAULT_KEY_ID,
        secret_key: str = DEFAULT_SECRET_KEY,
        account: AccountConfig | None = None,
        schedule: Schedule | None = None,
        now: Now | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        match_interval: float = 0.05,
        max_stream_connections: int | None = None,
    ) -> None:
        self.key_id = key_id
        self._max_stream_connections = max_stream_connections
        self._secret_key = secret_key
        self.faults = Faults()
        self._book = PaperBook(
            quotes,
            now=now or wall_clock,
            schedule=schedule or AlwaysOpen(),
            account=account,
            seed=seed,
        )
        self._lock = threading.RLock()
        self._host = host
        self._port = port
        self._match_interval = match_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[_StreamClient] = set()
        self._clients_lock = threading.Lock()
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._matcher: asyncio.Task[None] | None = None
        self.app = build_app(self)

    # ------------------------------------------------------------ persistence

    def save_state(self, path: Path) -> None:
        """Write the account (orders, positions, cash, fills) to ``path`` atomically."""
        with self._lock:
            blob = self._book.export_state()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)

    def load_state(self, path: Path) -> bool:
        """Continue the account :meth:`save_state` wrote to ``path``; False when there is none."""
        if not path.exists():
            return False
        blob = path.read_bytes()
        with self._lock:
            self._book.import_state(blob)
        return True

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """``url_override`` for ``TradingClient`` (no ``/v2``)."""
        return f"http://{self._host}:{self._port}"

    @property
    def stream_url(self) -> str:
        """``url_override`` for ``TradingStream``."""
        return f"ws://{self._host}:{self._port}/stream"

    def start(self, timeout: float = 10.0) -> str:
        """Serve on a background thread; returns :attr:`base_url` once accepting."""
        if self._thread is not None:
            raise RuntimeError("the broker simulator is already running")
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose ``proto`` says
        # TCP, and one made with proto 0 left Nagle on, so each response's body waited for the
        # client's delayed ACK — 40 ms on every REST call over a kept-alive connection
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._port))
        listener.listen(128)
        self._port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            # explicit, not uvicorn's "auto": the API's httptools/uvloop must not change the
            # simulator's timing (tests/trading/test_crash.py sizes its seed rows on it)
            http="h11",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [listener]},
            name=f"broker-sim-{self._port}",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"broker simulator did not start within {timeout}s")
        log.info("broker_sim_started", base_url=self.base_url)
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Close the streams, release held responses and stop serving."""
        server, thread, loop = self._server, self._thread, self._loop
        if server is None or thread is None:
            return
        self.faults.release_held()
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_streams)
        server.should_exit = True
        thread.join(timeout)
        self._server = None
        self._thread = None
        self._ready.clear()
        log.info("broker_sim_stopped", base_url=self.base_url)

    @contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """``with sim.run_in_thread() as base_url: ...`` serves for the block's duration."""
        url = self.start()
        try:
            yield url
        finally:
            self.stop()

    # --------------------------------------------------------------- engine

    def call(self, action: Callable[[PaperBook], T]) -> T:
        """Run ``action`` on the engine under the lock and publish the events it produced."""
        with self._lock:
            result = action(self._book)
            self._publish(self._book.drain_events())
        return result

    def on_quote(self, symbol: str) -> None:
        """Re-match ``symbol``'s open orders now (call after each new quote).

        This takes the broker's lock and then calls ``quotes.latest_quote``; call it without
        holding a lock that ``latest_quote`` needs, or the two can deadlock.
        """
        self.call(lambda book: book.on_quote(symbol))

    def tick(self) -> None:
        """One matching pass over every open order (also done periodically)."""
        self.call(lambda book: book.tick())

    def orders(self) -> list[Order]:
        """Every order ever accepted, in submission order."""
        return self.call(lambda book: book.orders())

    def order_by_client_id(self, client_order_id: str) -> Order:
        return self.call(lambda book: book.order_by_client_id(client_order_id))

    def fills(self) -> list[Fill]:
        return self.call(lambda book: book.fills())

    def positions(self) -> list[PositionView]:
        return self.call(lambda book: book.positions())

    def account(self) -> AccountView:
        return self.call(lambda book: book.account())

    def events(self) -> list[TradeUpdate]:
        """Every trade update emitted, whether or not a stream was listening."""
        return self.call(lambda book: book.events())

    def reject_next_orders(self, count: int) -> None:
        """The venue rejects the next ``count`` accepted orders (``rejected`` event)."""
        self.call(lambda book: book.reject_next_orders(count))

    def forget_order(self, order_id: str) -> Order:
        """Forget one order, as a paper-account reset does (404 for it from now on)."""
        return self.call(lambda book: book.forget(UUID(order_id)))

    def set_credentials(self, key_id: str, secret_key: str) -> None:
        """Rotate the accepted API keys: a client still on the old ones gets 401 on every REST
        request and an ``unauthorized`` stream login, until they are rotated back."""
        self.key_id = key_id
        self._secret_key = secret_key

    def disconnect_streams(self) -> None:
        """Close every trade_updates connection from the server side (clients reconnect)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._close_streams)

    def stream_clients(self) -> int:
        """How many trade_updates connections are listening right now."""
        return sum(1 for client in self._client_list() if client.listening)

    def credentials_valid(self, key_id: str | None, secret_key: str | None) -> bool:
        return key_id == self.key_id and secret_key == self._secret_key

    # ------------------------------------------------------ server internals

    async def started(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._matcher = asyncio.create_task(self._match_forever())
        self._ready.set()

    async def stopping(self) -> None:
        if self._matcher is not None:
            self._matcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._matcher
        self._close_streams()

    async def _match_forever(self) -> None:
        """Re-match every ``match_interval``; a failing quote source is logged once per outage."""
        failing = False
        while True:
            try:
                self.tick()
            except Exception:
                MATCHER_ERRORS.inc()
                if not failing:
                    log.exception("broker_sim_matcher_failed")
                failing = True
            else:
                if failing:
                    log.info("broker_sim_matcher_recovered")
                failing = False
            await asyncio.sleep(self._match_interval)

    def _publish(self, updates: list[TradeUpdate]) -> None:
        loop = self._loop
        if not updates or loop is None or loop.is_closed():
            return
        frames = [msgspec.json.encode(trade_update_json(update)) for update in updates]
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(self._fan_out, frames)

    def _fan_out(self, frames: list[bytes]) -> None:
        for client in self._client_list():
            if not client.listening:
                continue
            if client.queue.qsize() + len(frames) > STREAM_QUEUE_LIMIT:
                STREAM_DROPS.inc()
                log.warning("broker_sim_stream_client_dropped", queued=client.queue.qsize())
                client.listening = False
                client.queue.put_nowait(None)
                continue
            for frame in frames:
                client.queue.put_nowait(frame)

    def _close_streams(self) -> None:
        for client in self._client_list():
            client.listening = False
            client.queue.put_nowait(None)

    def add_client(self, client: _StreamClient) -> bool:
        """Register a stream connection; ``False`` when the connection limit is reached."""
        with self._clients_lock:
            limit = self._max_stream_connections
            if limit is not None and len(self._clients) >= limit:
                return False
            self._clients.add(client)
            return True

    def remove_client(self, client: _StreamClient) -> None:
        with self._clients_lock:
            self._clients.discard(client)

    def _client_list(self) -> list[_StreamClient]:
        with self._clients_lock:
            return list(self._clients)


class _HeldResponse:
    """A submit response withheld until :meth:`Faults.release_held`.

    It is registered before the order is accepted, so a release that comes right after the
    acceptance (from another thread) is never missed.
    """

    def __init__(self, faults: Faults) -> None:
        self._faults = faults
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        faults.add_release_listener(self._release)

    def _release(self) -> None:
        with suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._released.set)

    async def wait(self) -> None:
        await self._released.wait()

    def close(self) -> None:
        self._faults.remove_release_listener(self._release)


def build_app(sim: BrokerSimulator) -> Litestar:
    """The Litestar application serving ``sim`` (REST under /v2, stream at /stream)."""

    async def authorize(request: Request[Any, Any, Any]) -> Response[Json] | None:
        if sim.faults.take_throttle():
            return _error_response(_fault_error(429))
        key_id = request.headers.get("apca-api-key-id")
        secret = request.headers.get("apca-api-secret-key")
        if not sim.credentials_valid(key_id, secret):
            return _error_response(BrokerError(401, 40110000, "request is not authorized"))
        return None

    @get("/v2/account")
    async def get_account() -> Json:
        return account_json(sim.call(lambda book: book.account()))

    @get("/v2/clock")
    async def get_clock() -> Json:
        return clock_json(sim.call(lambda book: book.clock()))

    @post("/v2/orders", status_code=200)
    async def submit_order(request: Request[Any, Any, Any]) -> Json:
        order_request = parse_order_request(await _json_body(request))
        fault = sim.faults.take_submit_fault()
        if fault is not None and fault.mode == "error_before_accept":
            raise _fault_error(fault.status)
        held = _HeldResponse(sim.faults) if fault is not None and fault.mode == "hold" else None
        try:
            order = sim.call(lambda book: book.submit(order_request))
            sim.faults.accepted(order)
            if held is not None:
                await held.wait()
        finally:
            if held is not None:
                held.close()
        if fault is not None:
            await _misbehave(fault)
        return order_json(order)

    @get("/v2/orders")
    async def list_orders(request: Request[Any, Any, Any]) -> list[Json]:
        params = request.query_params
        status = params.get("status", "open")
        list_status = _LIST_STATUSES.get(status)
        if list_status is None:
            raise unprocessable(f"invalid status {status!r}")
        direction = params.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise unprocessable(f"invalid direction {direction!r}")
        side = params.get("side")
        if side not in (None, "buy", "sell"):
            raise unprocessable(f"invalid side {side!r}")
        limit = _int_param(params.get("limit"), "limit", default=50)
        if not 1 <= limit <= MAX_ORDERS_PAGE:
            raise unprocessable(f"limit must be between 1 and {MAX_ORDERS_PAGE}")
        symbols_text = params.get("symbols")
        symbols = symbols_text.split(",") if symbols_text else None
        after = parse_time(params.get("after"), "after")
        until = parse_time(params.get("until"), "until")
        orders = sim.call(
            lambda book: book.orders(
                status=list_status,
                limit=limit,
                after=after,
                until=until,
                direction="asc" if direction == "asc" else "desc",
                side="buy" if side == "buy" else "sell" if side == "sell" else None,
                symbols=symbols,
            )
        )
        return [order_json(order) for order in orders]

    @delete("/v2/orders", status_code=207)
    async def cancel_all_orders() -> list[Json]:
        ids = sim.call(lambda book: book.cancel_all())
        return [{"id": str(order_id), "status": 200} for order_id in ids]

    @get("/v2/orders:by_client_order_id")
    async def get_order_by_client_id(request: Request[Any, Any, Any]) -> Json:
        client_order_id = request.query_params.get("client_order_id")
        if not client_order_id:
            raise unprocessable("client_order_id is missing")
        return order_json(sim.call(lambda book: book.order_by_client_id(client_order_id)))

    @get("/v2/orders/{order_id:str}")
    async def get_order(order_id: FromPath[str]) -> Json:
        parsed = parse_uuid(order_id, "order_id")
        return order_json(sim.call(lambda book: book.order(parsed)))

    @patch("/v2/orders/{order_id:str}")
    async def replace_order(order_id: FromPath[str], request: Request[Any, Any, Any]) -> Json:
        parsed = parse_uuid(order_id, "order_id")
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        time_in_force = body.get("time_in_force")
        if time_in_force not in (None, "day", "gtc", "ioc", "fok"):
            raise unprocessable(f"invalid time_in_force {time_in_force!r}")
        client_order_id = body.get("client_order_id")
        if client_order_id is not None and not isinstance(client_order_id, str):
            raise unprocessable("client_order_id must be a string")
        qty = parse_decimal(body.get("qty"), "qty")
        limit_price = parse_decimal(body.get("limit_price"), "limit_price")
        stop_price = parse_decimal(body.get("stop_price"), "stop_price")
        tif = time_in_force if time_in_force in ("day", "gtc", "ioc", "fok") else None
        order = sim.call(
            lambda book: book.replace(
                parsed,
                qty=qty,
                limit_price=limit_price,
                stop_price=stop_price,
                time_in_force=tif,
                client_order_id=client_order_id,
            )
        )
        return order_json(order)

    @delete("/v2/orders/{order_id:str}", status_code=204)
    async def cancel_order(order_id: FromPath[str]) -> None:
        parsed = parse_uuid(order_id, "order_id")
        sim.call(lambda book: book.cancel(parsed))

    @get("/v2/positions")
    async def list_positions() -> list[Json]:
        return [position_json(p) for p in sim.call(lambda book: book.positions())]

    @delete("/v2/positions", status_code=207)
    async def close_all_positions(request: Request[Any, Any, Any]) -> list[Json]:
        cancel_orders = parse_bool(request.query_params.get("cancel_orders"), False)
        outcomes = sim.call(lambda book: book.close_all_positions(cancel_orders=cancel_orders))
        return [
            {"symbol": symbol, "status": 200, "body": order_json(outcome)}
            if isinstance(outcome, Order)
            else {"symbol": symbol, "status": outcome.status, "body": outcome.body()}
            for symbol, outcome in outcomes
        ]

    @get("/v2/positions/{symbol:str}")
    async def get_position(symbol: FromPath[str]) -> Json:
        return position_json(sim.call(lambda book: book.position(symbol)))

    @delete("/v2/positions/{symbol:str}", status_code=200)
    async def close_position(symbol: FromPath[str], request: Request[Any, Any, Any]) -> Json:
        qty = parse_decimal(request.query_params.get("qty"), "qty")
        percentage = parse_decimal(request.query_params.get("percentage"), "percentage")
        order = sim.call(lambda book: book.close_position(symbol, qty=qty, percentage=percentage))
        return order_json(order)

    @get("/v2/assets/{symbol:str}")
    async def get_asset(symbol: FromPath[str]) -> Json:
        return asset_json(symbol)

    @websocket("/stream")
    async def trade_updates(socket: WebSocket[Any, Any, Any]) -> None:
        client = _StreamClient()
        if not sim.add_client(client):
            STREAM_REFUSALS.inc()
            await _refuse_handshake(socket)
            return
        await socket.accept()
        writer = asyncio.create_task(_write_stream(socket, client))
        try:
            await _read_stream(sim, socket, client)
        finally:
            sim.remove_client(client)
            client.listening = False
            client.queue.put_nowait(None)
            await writer

    return Litestar(
        route_handlers=[
            get_account,
            get_clock,
            submit_order,
            list_orders,
            cancel_all_orders,
            get_order_by_client_id,
            get_order,
            replace_order,
            cancel_order,
            list_positions,
            close_all_positions,
            get_position,
            close_position,
            get_asset,
            trade_updates,
        ],
        before_request=authorize,
        exception_handlers={
            BrokerError: _broker_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        on_startup=[sim.started],
        on_shutdown=[sim.stopping],
        logging_config=None,
    )


async def _misbehave(fault: SubmitFault) -> None:
    if fault.mode == "error_after_accept":
        raise _fault_error(fault.status)
    if fault.mode == "delay":
        await asyncio.sleep(fault.delay)


async def _read_stream(
    sim: BrokerSimulator, socket: WebSocket[Any, Any, Any], client: _StreamClient
) -> None:
    """The client side of section 4.2: authenticate, then listen (replacing the stream set)."""
    authorized = False
    while True:
        event = await socket.receive()
        if event["type"] != "websocket.receive":
            return
        raw = event.get("text") or event.get("bytes") or b""
        try:
            message = json.loads(raw)
            action = message["action"]
            data = message.get("data") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            _reply(client, {"stream": "error", "data": {"error_message": "invalid syntax"}})
            continue
        if action == "authenticate":
            authorized = sim.credentials_valid(data.get("key_id"), data.get("secret_key"))
            status = "authorized" if authorized else "unauthorized"
            _reply(
                client,
                {"stream": "authorization", "data": {"action": action, "status": status}},
            )
            if not authorized:
                client.queue.put_nowait(None)
        elif action == "listen":
            if not authorized:
                _reply(
                    client,
                    {
                        "stream": "authorization",
                        "data": {"action": action, "status": "unauthorized"},
                    },
                )
                continue
            streams = [s for s in data.get("streams") or [] if s == "trade_updates"]
            client.listening = bool(streams)
            _reply(client, {"stream": "listening", "data": {"streams": streams}})
        else:
            _reply(client, {"stream": "error", "data": {"error_message": "invalid action"}})


async def _refuse_handshake(socket: WebSocket[Any, Any, Any]) -> None:
    """Answer the upgrade with HTTP 429, as Alpaca does past its connection limit."""
    body = msgspec.json.encode(BrokerError(429, 42910000, "connection limit exceeded").body())
    await socket.send(
        {
            "type": "websocket.http.response.start",
            "status": 429,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await socket.send({"type": "websocket.http.response.body", "body": body, "more_body": False})


def _reply(client: _StreamClient, message: Json) -> None:
    client.queue.put_nowait(msgspec.json.encode(message))


async def _write_stream(socket: WebSocket[Any, Any, Any], client: _StreamClient) -> None:
    """Sends queued frames (binary JSON, as Alpaca does) until told to close."""
    while True:
        frame = await client.queue.get()
        if frame is None:
            break
        try:
            await socket.send_bytes(frame)
        except (WebSocketDisconnect, OSError, RuntimeError):
            log.info("broker_sim_stream_send_failed")
            return
    if socket.connection_state != "disconnect":
        with suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.close()


async def _json_body(request: Request[Any, Any, Any]) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request("request body is not valid JSON") from exc


def _int_param(value: str | None, name: str, *, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise unprocessable(f"{name} must be an integer") from exc


def _fault_error(status: int) -> BrokerError:
    return BrokerError(status, _alpaca_code(status), _FAULT_MESSAGES.get(status, "simulated fault"))


def _alpaca_code(status: int) -> int:
    """Alpaca's 8-digit error code family for an HTTP status (404 -> 40410000)."""
    return status * 100_000 + 10_000


def _error_response(error: BrokerError) -> Response[Json]:
    return Response(error.body(), status_code=error.status, media_type=MediaType.JSON)


def _broker_error(_: Request[Any, Any, Any], error: BrokerError) -> Response[Json]:
    return _error_response(error)


def _http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[Json]:
    status = error.status_code
    return _error_response(BrokerError(status, _alpaca_code(status), str(error.detail).lower()))


def _internal_error(_: Request[Any, Any, Any], error: Exception) -> Response[Json]:
    log.exception("broker_sim_internal_error", error=type(error).__name__)
    return _error_response(BrokerError(500, 50010000, "internal server error"))
