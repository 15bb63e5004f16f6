"""Backtests: ClickHouse signal windows replayed through the live strategies, review and risk.

* ``config`` — :class:`BacktestConfig`, the run's identity (window, symbols, strategies, fill,
  fees, review, risk overrides);
* ``source`` — the window's ``ta_signals`` rows, streamed in cursor order, and the input checks;
* ``market`` — simulated time, the touch the paper book fills against, fees, the broker port;
* ``engine`` — the replay itself (:class:`Backtest`);
* ``ledger`` — positions, realised trades and sampled equity curves;
* ``metrics`` — return, risk and trade metrics (polars);
* ``shadow`` — the LLM shadow evaluation (veto precision/recall, verdict rates and stability);
* ``review`` — offline reviewers (recorded verdicts, a deterministic policy);
* ``report`` — the deterministic JSON report and the self-contained HTML page;
* ``records`` — the ``backtest_runs`` table;
* ``__main__`` — ``python -m trading.backtest --from … --to … --symbols … --strategies …``.
"""
