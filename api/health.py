"""Liveness, readiness and the dependency checks behind ``/trading/health``.

Why separate probes: liveness (``/healthz``) says the process serves HTTP and never touches a
dependency, so a ClickHouse outage does not get the pod restarted; readiness (``/readyz``) says
the API can answer data queries (ClickHouse and the trading store reachable) and takes it out of
service with a 503 while they are not — and while trading is halted (kill switch or an automatic
halt in the store: ``degraded``, with the reasons), so a halt is never invisible.

Alpaca is checked only when its trading endpoint is known: ``GET {base}/v2/clock`` with the
configured keys. With the built-in simulator (no base URL) it is ``unknown`` unless the process
that mounts the API passes its own check to :func:`api.app.create_app`.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency

from api.controls import ControlAccess, effective_kill_switch, halt_views
from api.errors import ApiError
from api.schemas import DependencyState, Liveness, Readiness
from api.ta_reads import TaReader
from api.trading_reads import TradingReads
from torghut.config import Settings
from torghut.logs import get_logger
from trading.core.live_gates import LiveGateError, trading_endpoint

__all__ = [
    "AlpacaCheck",
    "HealthController",
    "alpaca_http_check",
    "clickhouse_state",
    "store_state",
]

AlpacaCheck = Callable[[], DependencyState]
"""Answers ``ok``/``error``/``unknown`` for the broker; must return within a few seconds."""

log = get_logger("api.health")


def clickhouse_state(ta: NamedDependency[TaReader]) -> DependencyState:
    try:
        ta.ping()
    except ApiError:
        return "error"
    return "ok"


def store_state(store: NamedDependency[TradingReads]) -> DependencyState:
    try:
        store.ping()
    except ApiError:
        return "error"
    return "ok"


def alpaca_http_check(settings: Settings) -> AlpacaCheck:
    """A check of the configured Alpaca trading endpoint (``unknown`` for the simulator)."""
    try:
        endpoint = trading_endpoint(settings.trading, settings.alpaca)
    except LiveGateError as exc:
        message = str(exc)

        def misconfigured() -> DependencyState:
            log.warning("alpaca_check_misconfigured", detail=message)
            return "error"

        return misconfigured
    if not endpoint.base_url:
        return lambda: "unknown"
    url = endpoint.base_url.rstrip("/") + "/v2/clock"
    headers = {
        "APCA-API-KEY-ID": settings.alpaca.key_id.get_secret_value(),
        "APCA-API-SECRET-KEY": settings.alpaca.secret_key.get_secret_value(),
    }
    timeout = settings.api.alpaca_check_timeout_s

    def check() -> DependencyState:
        try:
            response = httpx.get(url, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            log.warning("alpaca_check_failed", error=type(exc).__name__)
            return "error"
        return "ok" if response.status_code == 200 else "error"

    return check


class HealthController(Controller):
    """Kubernetes-style probes."""

    include_in_schema = False

    @get("/healthz", sync_to_thread=False)
    def liveness(self) -> Liveness:
        return Liveness(status="ok")

    @get("/readyz", sync_to_thread=True)
    def readiness(
        self,
        ta: NamedDependency[TaReader],
        store: NamedDependency[TradingReads],
        controls: NamedDependency[ControlAccess],
        settings: NamedDependency[Settings],
    ) -> Response[Readiness]:
        body = Readiness(status="ok", clickhouse=clickhouse_state(ta), postgres=store_state(store))
        if "error" in (body.clickhouse, body.postgres):
            body.status = "unavailable"
            return Response(body, status_code=503, media_type=MediaType.JSON)
        try:
            state = controls.state()
        except ApiError:
            body.status, body.postgres = "unavailable", "error"
            return Response(body, status_code=503, media_type=MediaType.JSON)
        body.halts = halt_views(state.halts)
        body.kill_switch = effective_kill_switch(settings, state)
        if body.halts or body.kill_switch:
            body.status = "degraded"
            return Response(body, status_code=503, media_type=MediaType.JSON)
        return Response(body, media_type=MediaType.JSON)
