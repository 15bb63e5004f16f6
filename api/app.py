"""Build the Litestar application: routes, dependencies, lifespan, errors, metrics, dashboard.

Mounting in-process (the all-in-one demo runs TA, trading and the API in one process because
the embedded chdb store is locked to one process)::

    app = create_app(settings)         # opens its own clients in the lifespan
    with BackgroundServer(app, settings.api.host, settings.api.port):   # api.server
        ...                            # run the dataflows in the foreground

With chdb every :func:`torghut.clickhouse.connect` client of a process shares the engine, so the
default factory already shares the TA sink's store; pass ``ch_client_factory`` to control how
the API's client is opened (it is called lazily, again after a failure, and the API closes what
it opened, so return a new client per call, never one another stage is using). Pass
``store_engine`` to reuse the trading loop's SQLAlchemy engine (then the API neither migrates
nor disposes it) and ``alpaca_check`` to report the broker the process uses.

The control endpoints (:mod:`api.controls`) are the only writes; they need ``API_CONTROL_TOKEN``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import sqlalchemy as sa
from litestar import Litestar, MediaType, Response, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from api.backtests import BacktestReads, BacktestsController
from api.book import AccountSource, BookController
from api.console import ConsoleCache, ConsoleController
from api.controls import ControlAccess, ControlsController
from api.dead_letters import DeadLettersController
from api.errors import exception_handlers
from api.health import AlpacaCheck, HealthController, alpaca_http_check
from api.metrics import RequestMetrics, render
from api.pipeline import PipelineController, PipelineProbe
from api.shared_answers import SharedAnswers
from api.ta import TaController
from api.ta_reads import ClientFactory, TaReader
from api.trading import TradingController
from api.trading_reads import TradingReads
from dlq.store import DeadLetterStore
from torghut.clickhouse import Client, connect, migrate
from torghut.config import Settings
from torghut.logs import get_logger
from torghut.redact import mask_dsn
from trading.adapters.store import ControlStore, create_engine, upgrade
from trading.core.ports import AccountSnapshot, Broker

__all__ = ["DASHBOARD_DIR", "WORKER_THREADS", "create_app"]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

WORKER_THREADS = 4
"""Threads for the synchronous handlers and answer refreshes (anyio's default is 40). The API
shares the process and the GIL with the dataflows in the embedded deployment: a few threads
keep its share bounded; shared answers (:mod:`api.shared_answers`) keep the queue short."""

log = get_logger("api.app")


def create_app(
    settings: Settings,
    ch_client_factory: ClientFactory | None = None,
    store_engine: sa.Engine | None = None,
    *,
    alpaca_check: AlpacaCheck | None = None,
    registry: CollectorRegistry | None = None,
    broker: Broker | None = None,
    pipeline_probe: PipelineProbe | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Litestar:
    """The API over ``settings``; resources are opened in the lifespan and closed there.

    ``registry`` receives the API's own metrics (a fresh one by default, so several apps can
    live in one process); ``/metrics`` also renders the process-wide default registry.
    ``broker`` (the process's own) gives ``/trading/account`` the broker's equity and cash;
    ``pipeline_probe`` gives the pipeline panel the live state of dataflows in this process.
    ``clock`` (monotonic seconds) times the shared answers and the TA reads' caches (tests
    step it).
    """
    registry = registry if registry is not None else CollectorRegistry()
    factory = ch_client_factory or _default_factory(settings)
    metrics = RequestMetrics(registry)
    answers = SharedAnswers(registry, clock)
    broker_check = alpaca_check or alpaca_http_check(settings)
    index_html = (DASHBOARD_DIR / "index.html").read_bytes()
    account_source: AccountSource = (lambda: broker.account()) if broker else _no_account
    console_cache = ConsoleCache()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        engine = store_engine if store_engine is not None else _open_store(settings.store.url)
        app.state.ta = TaReader(factory, settings.api.ta_cache_ttl_ms / 1000, registry, clock)
        app.state.store = TradingReads(sessionmaker(engine, expire_on_commit=False))
        app.state.controls = ControlAccess(ControlStore(engine))
        app.state.dead_letters = DeadLetterStore(engine)
        app.state.backtests = BacktestReads(sessionmaker(engine, expire_on_commit=False))
        log.info("api_started", clickhouse=mask_dsn(settings.clickhouse.dsn))
        try:
            yield
        finally:
            app.state.ta.close()
            if store_engine is None:
                engine.dispose()
            log.info("api_stopped")

    @get("/", include_in_schema=False, sync_to_thread=False)
    def dashboard() -> Response[bytes]:
        return Response(index_html, media_type=MediaType.HTML)

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics_text() -> Response[bytes]:
        return Response(render(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    app = Litestar(
        route_handlers=[
            TradingController,
            BacktestsController,
            BookController,
            PipelineController,
            ControlsController,
            DeadLettersController,
            TaController,
            ConsoleController,
            HealthController,
            dashboard,
            metrics_text,
            create_static_files_router(
                path="/dashboard", directories=[DASHBOARD_DIR], include_in_schema=False
            ),
        ],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "ta": Provide(_ta, sync_to_thread=False),
            "store": Provide(_store, sync_to_thread=False),
            "controls": Provide(_controls, sync_to_thread=False),
            "alpaca_check": Provide(lambda: broker_check, sync_to_thread=False),
            "account_source": Provide(lambda: account_source, sync_to_thread=False),
            "pipeline_probe": Provide(lambda: pipeline_probe, sync_to_thread=False),
            "console_cache": Provide(lambda: console_cache, sync_to_thread=False),
        },
        openapi_config=_openapi(),
        cors_config=(
            CORSConfig(allow_origins=list(settings.api.cors_origins))
            if settings.api.cors_origins
            else None
        ),
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        middleware=[metrics.middleware, answers.middleware],
        state=State({"control_token": _control_token(settings)}),
    )
    _closed_bodies(app)
    return app


def _no_account() -> AccountSnapshot | None:
    return None


def _openapi() -> OpenAPIConfig:
    """``/schema/openapi.json``; the control ``POST`` s declare the bearer scheme they need."""
    return OpenAPIConfig(
        title="Torghut API",
        version="1",
        description="TA reads, the trading audit trail, positions and PnL, runtime controls. "
        "Every error is an RFC 9457 problem document (application/problem+json).",
        components=Components(
            security_schemes={
                "controlToken": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="API_CONTROL_TOKEN, for the control POSTs only",
                )
            }
        ),
    )


_CLOSED_BODIES = ("KillSwitchRequest", "ControlRequest")
"""Request bodies decoded with ``forbid_unknown_fields``: the document must say so."""


def _closed_bodies(app: Litestar) -> None:
    """Declare ``additionalProperties: false`` on the bodies that refuse unknown fields (the
    schema generator does not carry msgspec's ``forbid_unknown_fields`` over)."""
    schemas = app.openapi_schema.components.schemas
    for name in _CLOSED_BODIES:
        schemas[name].additional_properties = False


def _ta(state: State) -> TaReader:
    reader: TaReader = state.ta
    return reader


def _store(state: State) -> TradingReads:
    reads: TradingReads = state.store
    return reads


def _controls(state: State) -> ControlAccess:
    access: ControlAccess = state.controls
    return access


def _control_token(settings: Settings) -> str | None:
    """``API_CONTROL_TOKEN``; empty or blank counts as not configured."""
    token = settings.api.control_token
    value = token.get_secret_value().strip() if token is not None else ""
    return value or None


def _default_factory(settings: Settings) -> Callable[[], Client]:
    """``connect`` + migrations on first use, so the API also works before the TA flow ran."""
    migrated = False

    def open_client() -> Client:
        nonlocal migrated
        client = connect(settings.clickhouse)
        if not migrated:
            try:
                migrate(client, settings.clickhouse)
            except BaseException:
                client.close()
                raise
            migrated = True
        return client

    return open_client


def _open_store(url: str) -> sa.Engine:
    """Engine on the configured store, migrated to head; a store that is down is not fatal."""
    engine = create_engine(url)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        log.warning("store_migration_failed", error=str(exc).splitlines()[0][:300])
    return engine
