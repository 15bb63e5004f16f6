"""One backtest end to end: check the inputs, stream the window, replay, report.

The composition of the backtest's parts for the CLI, the benchmark and the tests: a ClickHouse
client and a configuration in, the replay, its report document and the report's JSON bytes out.
Recorded LLM verdicts (for ``review = "recorded"``) are passed in, read from the store by the
caller. The wall clock is read once, for the TTL check (``now``), and decides nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from torghut.clickhouse import Client
from trading.backtest.config import BacktestConfig
from trading.backtest.engine import Backtest, Replay
from trading.backtest.report import encode_report, report_of
from trading.backtest.review import RecordedVerdict, offline_review
from trading.backtest.source import SignalSource, check_strategies
from trading.core.clock import SimulatedClock

__all__ = ["BacktestOutcome", "run_backtest"]


@dataclass(frozen=True)
class BacktestOutcome:
    replay: Replay
    report: dict[str, Any]
    report_json: bytes


def run_backtest(
    client: Client,
    config: BacktestConfig,
    *,
    code_version: str,
    recorded: Mapping[str, RecordedVerdict] | None = None,
    llm: Mapping[str, object] | None = None,
    now: datetime | None = None,
    progress: bool = False,
    batch_size: int = 50_000,
    chunk_rows: int = 500_000,
) -> BacktestOutcome:
    """``batch_size`` and ``chunk_rows``: how the window is read
    (:class:`~trading.backtest.source.SignalSource`); neither changes the result."""
    check_strategies(config)
    source = SignalSource(client, config, batch_size=batch_size, chunk_rows=chunk_rows)
    total = source.check(now or datetime.now(UTC))
    clock = SimulatedClock(config.start)
    review, model = offline_review(config, recorded or {}, clock, llm=llm)
    backtest = Backtest(config, review=review, review_model=model, clock=clock)
    bar = tqdm(total=total, unit="row", disable=not progress, file=sys.stderr, mininterval=0.5)
    # the rows are closed on the way out, an exception included: an open stream holds the client
    with bar, closing(source.rows(bar.update)) as rows:
        replay = backtest.run(rows)
    replay.dead_rows = source.dead_rows
    report = report_of(replay, code_version=code_version)
    return BacktestOutcome(replay, report, encode_report(report))
