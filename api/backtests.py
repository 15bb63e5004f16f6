"""``/trading/backtests``: stored backtest runs, their JSON and their HTML report (read-only).

Runs are written by ``python -m trading.backtest --store`` into ``backtest_runs``
(:mod:`trading.backtest.records`); this module only lists and serves them. The list carries the
inputs, summary, metrics, rejections and shadow evaluation of each run (no reports: those can
be megabytes); ``/{id}`` adds nothing but is one run; ``/{id}/report.json`` is the exact JSON
the run produced and ``/{id}/report.html`` the self-contained page (plotly embedded).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from api import params
from api.errors import DependencyUnavailable, InvalidQuery, problems
from trading.backtest.records import BacktestRunRow, StoredRun, get_run, list_runs, stored

__all__ = ["BacktestReads", "BacktestsController"]

_DEFAULT_LIMIT = 50
_MAX_LIMIT = 500
_MAX_OFFSET = 1_000_000_000
"""Beyond any real number of runs, and inside Postgres' bigint (an unbounded one was a 500)."""


class BacktestReads:
    """Backtest runs over the API's store session factory; store failures become 503s."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def runs(self, limit: int, offset: int) -> list[StoredRun]:
        with self._session() as s:
            return list_runs(s, limit=limit, offset=offset)

    def run(self, run_id: uuid.UUID) -> BacktestRunRow:
        with self._session() as s:
            row = get_run(s, run_id)
        if row is None:
            raise NotFoundException(f"no backtest run {run_id}")
        return row

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            raise DependencyUnavailable("postgres", str(exc).splitlines()[0][:300]) from exc


def _reads(state: State) -> BacktestReads:
    reads: BacktestReads = state.backtests
    return reads


class BacktestsController(Controller):
    path = "/trading/backtests"
    tags = ("backtests",)
    dependencies = {"backtests": Provide(_reads, sync_to_thread=False)}  # noqa: RUF012

    @get("/", sync_to_thread=True, responses=problems(400, 503))
    def list_runs(
        self,
        backtests: NamedDependency[BacktestReads],
        limit: Annotated[
            int | None,
            QueryParameter(required=False, ge=1, le=_MAX_LIMIT, description="Runs per page."),
        ] = None,
        offset: Annotated[
            int,
            QueryParameter(
                required=False, ge=0, le=_MAX_OFFSET, description="Runs to skip, newest first."
            ),
        ] = 0,
    ) -> list[StoredRun]:
        """Newest first."""
        n = params.limit(limit, _MAX_LIMIT, _DEFAULT_LIMIT)
        if offset < 0:
            raise InvalidQuery("offset", f"{offset} is negative")
        return backtests.runs(n, offset)

    @get("/{run_id:uuid}", sync_to_thread=True, responses=problems(400, 404, 503))
    def run(
        self, backtests: NamedDependency[BacktestReads], run_id: FromPath[uuid.UUID]
    ) -> StoredRun:
        return stored(backtests.run(run_id))

    @get("/{run_id:uuid}/report.json", sync_to_thread=True, responses=problems(400, 404, 503))
    def report_json(
        self, backtests: NamedDependency[BacktestReads], run_id: FromPath[uuid.UUID]
    ) -> Response[bytes]:
        body = backtests.run(run_id).report_json.encode("utf-8")
        return Response(body, media_type=MediaType.JSON)

    @get("/{run_id:uuid}/report.html", sync_to_thread=True, responses=problems(400, 404, 503))
    def report_html(
        self, backtests: NamedDependency[BacktestReads], run_id: FromPath[uuid.UUID]
    ) -> Response[bytes]:
        body = backtests.run(run_id).report_html.encode("utf-8")
        return Response(body, media_type=MediaType.HTML)
