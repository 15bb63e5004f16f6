"""``/trading/dead-letters``, ``/trading/signal-corrections`` and ``/trading/pipeline``.

The pipeline panel joins what the stores know (the newest signal, the newest decision and its
lag, the last reconciliation, dead letters by reason) with what only the process running the
dataflows knows (ingest connection, TA watermark, last snapshot and backup): that process passes
a :data:`PipelineProbe` to :func:`api.app.create_app`; without one those fields say ``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from litestar import Controller, get
from litestar.di import NamedDependency

from api import params, schemas
from api.errors import ApiError, problems
from api.query import Limit, OptionalSymbol, Since
from api.ta_reads import TaReader
from api.trading_reads import TradingReads
from torghut.config import Settings
from trading.adapters.store.dead_letters import DeadLetterKind

__all__ = ["PipelineController", "PipelineProbe", "pipeline_panel"]

PipelineProbe = Callable[[], schemas.PipelineLive]
"""Reads the live state of the dataflows running in this process; must not block."""

T = TypeVar("T")

_DEFAULT_LIMIT = 100
_DEAD_LETTER_HORIZON = timedelta(days=1)


class PipelineController(Controller):
    path = "/trading"
    tags = ("pipeline",)

    @get("/dead-letters", sync_to_thread=True, responses=problems(400, 503))
    def dead_letters(
        self,
        settings: NamedDependency[Settings],
        store: NamedDependency[TradingReads],
        symbol: OptionalSymbol = None,
        since: Since = None,
        limit: Limit = None,
    ) -> schemas.DeadLettersPage:
        """Signal rows the trading loop could not use, newest first, with reason and error."""
        return _page(store, "dead_letter", symbol, since, limit, settings.api.max_rows)

    @get("/signal-corrections", sync_to_thread=True, responses=problems(400, 503))
    def signal_corrections(
        self,
        settings: NamedDependency[Settings],
        store: NamedDependency[TradingReads],
        symbol: OptionalSymbol = None,
        since: Since = None,
        limit: Limit = None,
    ) -> schemas.DeadLettersPage:
        """Signals that changed after the loop had acted on them (audited, never re-traded)."""
        return _page(store, "correction", symbol, since, limit, settings.api.max_rows)

    @get("/pipeline", sync_to_thread=True, responses=problems())
    def pipeline(
        self,
        store: NamedDependency[TradingReads],
        ta: NamedDependency[TaReader],
        pipeline_probe: NamedDependency[PipelineProbe | None],
    ) -> schemas.Pipeline:
        """Ingest, TA, trading and dead letters at a glance; a store that is down leaves its
        fields empty instead of failing the panel."""
        return pipeline_panel(store, ta, pipeline_probe)


def pipeline_panel(
    store: TradingReads, ta: TaReader, probe: PipelineProbe | None
) -> schemas.Pipeline:
    """The panel's values now (see :class:`api.schemas.Pipeline`)."""
    now = datetime.now(UTC)
    live = probe() if probe is not None else None
    newest = _or_none(ta.newest_signal_at)
    decided = _or_none(store.decision_lag) or (None, None)
    reconciled = _or_none(store.last_reconcile_at)
    counts = _or_none(lambda: store.dead_letter_counts(now - _DEAD_LETTER_HORIZON)) or {}
    dead = [
        schemas.CountByReason(source=f"trading_{kind}", reason=reason, count=n)
        for (kind, reason), n in sorted(counts.items())
    ]
    if live is not None:
        dead = [*live.dead_letters, *dead]
    return schemas.Pipeline(
        as_of=now,
        ingest_state=live.ingest_state if live else "unknown",
        ingest_detail=live.ingest_detail if live else "no dataflow in this process",
        ingest_last_message_at=live.ingest_last_message_at if live else None,
        ta_last_signal_at=newest,
        ta_lag_ms=None if newest is None else _ms(now - newest),
        ta_watermark_lag_ms=(
            None if live is None or live.watermark_at is None else _ms(now - live.watermark_at)
        ),
        last_snapshot_at=live.last_snapshot_at if live else None,
        last_backup_at=live.last_backup_at if live else None,
        last_decision_at=decided[0],
        decision_lag_ms=decided[1],
        last_reconcile_at=reconciled,
        dead_letters=dead,
    )


def _or_none(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except ApiError:
        return None


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _page(
    store: TradingReads,
    kind: DeadLetterKind,
    symbol: str | None,
    since: str | None,
    limit: int | None,
    max_rows: int,
) -> schemas.DeadLettersPage:
    """One page of the trading dead-letter table's ``kind`` rows, newest first."""
    items = store.dead_letters(
        kind,
        params.optional_symbol(symbol),
        params.since(since),
        params.limit(limit, max_rows, _DEFAULT_LIMIT),
    )
    return schemas.DeadLettersPage(items=items, count=len(items))
