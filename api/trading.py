"""``/trading/*``: the trading loop's switches, dependency health and audit trail.

Status comes from the settings the process runs with (the same object the trading loop reads)
and from the store (last decision, the persisted kill switch, the halts in force and pending
control commands); nothing here changes trading state — the control endpoints are in
:mod:`api.controls`.
"""

from __future__ import annotations

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from api import params
from api.controls import (
    ControlAccess,
    effective_kill_switch,
    event_view,
    halt_views,
    kill_switch_view,
)
from api.errors import ApiError, problems
from api.health import AlpacaCheck, clickhouse_state, store_state
from api.query import Limit, OptionalSymbol, Since
from api.schemas import (
    DecisionsPage,
    ExecutionsPage,
    TradingHealth,
    TradingStatus,
)
from api.ta_reads import TaReader
from api.trading_reads import TradingReads
from torghut.config import Settings
from trading.adapters.store import ControlState

__all__ = ["TradingController"]

_DEFAULT_LIMIT = 100


class TradingController(Controller):
    path = "/trading"
    tags = ("trading",)

    @get("/status", sync_to_thread=True, responses=problems(503))
    def status(
        self,
        settings: NamedDependency[Settings],
        store: NamedDependency[TradingReads],
        controls: NamedDependency[ControlAccess],
    ) -> TradingStatus:
        """Switches, the kill switch and every halt in force with its reason."""
        t = settings.trading
        state = controls.state()
        kill_switch = effective_kill_switch(settings, state)
        halted = kill_switch or bool(state.halts)
        return TradingStatus(
            enabled=t.enabled,
            mode=t.mode,
            live_enabled=t.live_enabled,
            kill_switch=kill_switch,
            last_decision_at=store.last_decision_at(),
            llm_enabled=settings.llm.enabled,
            strategies=list(t.strategies),
            state="disabled" if not t.enabled else "halted" if halted else "active",
            kill_switch_state=kill_switch_view(state.kill_switch),
            halts=halt_views(state.halts),
            pending_commands=[event_view(e) for e in state.pending],
        )

    @get(
        "/health",
        sync_to_thread=True,
        responses={
            503: ResponseSpec(
                data_container=TradingHealth,
                description="A dependency is down (the body says which)",
                generate_examples=False,
            ),
            **problems(),
        },
    )
    def health(
        self,
        ta: NamedDependency[TaReader],
        store: NamedDependency[TradingReads],
        alpaca_check: NamedDependency[AlpacaCheck],
        settings: NamedDependency[Settings],
        controls: NamedDependency[ControlAccess],
    ) -> Response[TradingHealth]:
        """503 when ClickHouse, the store or a configured Alpaca endpoint is down;
        ``degraded`` (200) while trading is halted, with the halts."""
        postgres = store_state(store)
        state = _control_state(controls) if postgres == "ok" else None
        kill_switch = state is not None and effective_kill_switch(settings, state)
        halts = halt_views(state.halts) if state is not None else []
        body = TradingHealth(
            status="ok",
            clickhouse=clickhouse_state(ta),
            alpaca=alpaca_check(),
            postgres=postgres,
            last_reconcile_at=store.last_reconcile_at() if postgres == "ok" else None,
            halts=halts,
            kill_switch=kill_switch,
        )
        down = "error" in (body.clickhouse, body.alpaca, body.postgres)
        body.status = "down" if down else "degraded" if kill_switch or halts else "ok"
        return Response(body, status_code=503 if down else 200, media_type=MediaType.JSON)

    @get("/decisions", sync_to_thread=True, responses=problems(400, 503))
    def decisions(
        self,
        settings: NamedDependency[Settings],
        store: NamedDependency[TradingReads],
        symbol: OptionalSymbol = None,
        since: Since = None,
        limit: Limit = None,
    ) -> DecisionsPage:
        """Decisions newest first with review verdict, risk reasons and execution status."""
        rows = store.decisions(
            params.optional_symbol(symbol),
            params.since(since),
            params.limit(limit, settings.api.max_rows, _DEFAULT_LIMIT),
        )
        return DecisionsPage(decisions=rows, count=len(rows))

    @get("/executions", sync_to_thread=True, responses=problems(400, 503))
    def executions(
        self,
        settings: NamedDependency[Settings],
        store: NamedDependency[TradingReads],
        symbol: OptionalSymbol = None,
        since: Since = None,
        limit: Limit = None,
    ) -> ExecutionsPage:
        """Executions newest first with reconciliation state and order events."""
        rows = store.executions(
            params.optional_symbol(symbol),
            params.since(since),
            params.limit(limit, settings.api.max_rows, _DEFAULT_LIMIT),
        )
        return ExecutionsPage(executions=rows, count=len(rows))


def _control_state(controls: ControlAccess) -> ControlState | None:
    try:
        return controls.state()
    except ApiError:
        return None
