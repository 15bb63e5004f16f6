"""Fixtures of the trading-domain tests: signal rows, decisions, stores on both backends and a
real local HTTP server that plays an (adversarial) OpenAI-compatible LLM."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from torghut.config import AlpacaSettings, RiskSettings, TradingSettings
from torghut.events import Signal
from trading.adapters.store import TradingStore, upgrade
from trading.core.clock import SimulatedClock
from trading.core.domain import Action, Decision, OrderType, SignalRow
from trading.core.risk import RiskLimits

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def row(i: int, symbol: str = "AAPL", version: int = 1, **indicators: float | None) -> SignalRow:
    """The signal row ``i`` seconds after :data:`T0`."""
    return SignalRow(
        symbol=symbol,
        event_ts=T0 + timedelta(seconds=i),
        seq=i,
        window_size="PT1S",
        version=version,
        indicators=Signal(**indicators),  # type: ignore[arg-type]
    )


MACD_RSI = TradingSettings(enabled=True, strategies=("macd_rsi",))
"""Trading on, the ``macd_rsi`` strategy only."""


def aapl_limits() -> RiskLimits:
    """Default risk limits for :data:`MACD_RSI` on AAPL, without cooldown or read delay."""
    return RiskLimits.from_settings(
        MACD_RSI,
        RiskSettings(symbol_cooldown_s=0),
        AlpacaSettings(symbols=("AAPL",)),
        read_delay=timedelta(0),
    )


def decision(**overrides: Any) -> Decision:
    """A BUY 10 AAPL @ 100 market decision of ``macd_rsi``; fields overridable."""
    base: dict[str, Any] = {
        "strategy_id": "macd_rsi",
        "strategy_version": "1",
        "symbol": "AAPL",
        "event_ts": T0,
        "action": Action.BUY,
        "qty": Decimal(10),
        "order_type": OrderType.MARKET,
        "params": {"qty": "10", "rsi_overbought": "70", "window_size": "PT1S"},
        "rationale": "test",
        "reference_price": Decimal(100),
        "window_size": "PT1S",
    }
    base.update(overrides)
    return Decision(**base)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trading.sqlite'}"


@pytest.fixture(scope="session")
def pg_trading_template(pg_admin_url: str) -> Iterator[tuple[sa.Engine, str]]:
    """A Postgres database migrated to head once per session, cloned by :func:`store_url`.

    Cloning (``CREATE DATABASE … TEMPLATE``) is several times faster than migrating every test
    database; ``test_store_schema`` still migrates a fresh ``pg_url`` database itself.
    """
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"trading_tpl_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield admin, name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests on the embedded SQLite file and on a fresh real Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trading.sqlite'}"
        return
    admin, template = request.getfixturevalue("pg_trading_template")
    name = f"trading_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(admin.url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def store(store_url: str) -> Iterator[TradingStore]:
    s = TradingStore.open(store_url)
    yield s
    s.close()


# --- a real chat-completions server ----------------------------------------------------------


@dataclass
class Reply:
    """What the fake provider answers next: HTTP status, raw body, optional stall before the
    answer, optional pause between single bytes of the body (``drip_s``), extra headers, and
    ``endless`` — a chunked body of ``body`` repeated until the client hangs up."""

    status: int = 200
    body: bytes = b""
    stall_s: float = 0.0
    drip_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    endless: bool = False


@dataclass
class LlmServer:
    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, content: str, *, usage: bool = True) -> None:
        """Queue a well-formed completion whose message content is ``content``."""
        doc: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        }
        if usage:
            doc["usage"] = {"prompt_tokens": 321, "completion_tokens": 17, "total_tokens": 338}
        self.replies.append(Reply(200, json.dumps(doc).encode()))

    def answer_json(self, **verdict: Any) -> None:
        self.answer(json.dumps(verdict))

    def raw(self, status: int, body: bytes, stall_s: float = 0.0) -> None:
        self.replies.append(Reply(status, body, stall_s))

    def script(self, reply: Reply) -> None:
        self.replies.append(reply)


@pytest.fixture(scope="session")
def llm_httpd() -> Iterator[tuple[dict[str, LlmServer], str]]:
    """A threaded ``http.server`` speaking ``POST /v1/chat/completions``, one per session;
    :func:`llm_server` gives each test its own script."""
    state: dict[str, LlmServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            srv = state["srv"]
            length = int(self.headers.get("Content-Length", "0"))
            srv.requests.append(json.loads(self.rfile.read(length)))
            srv.headers.append({k.lower(): v for k, v in self.headers.items()})
            reply = srv.replies.pop(0) if srv.replies else Reply(500, b'{"error":"unscripted"}')
            if reply.stall_s:
                srv.release.wait(reply.stall_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.endless:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"%x\r\n%s\r\n" % (len(reply.body), reply.body)
                    while not srv.release.is_set():
                        self.wfile.write(chunk)
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if not reply.drip_s:
                    self.wfile.write(reply.body)
                    return
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i : i + 1])
                    if srv.release.wait(reply.drip_s):
                        return
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def llm_server(llm_httpd: tuple[dict[str, LlmServer], str]) -> Iterator[LlmServer]:
    """The provider's script for this test (replies queued in order; requests recorded)."""
    state, url = llm_httpd
    srv = LlmServer(url=url)
    state["srv"] = srv
    yield srv
    srv.release.set()


@pytest.fixture
def manual_clock() -> SimulatedClock:
    """A clock the test advances by hand (for the circuit breaker)."""
    return SimulatedClock(T0)
