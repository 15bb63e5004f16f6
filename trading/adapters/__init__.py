"""The trading core's adapters: each implements a port of :mod:`trading.core.ports` (or the
clock) over one outside library, and translates that library's data and errors.

* ``alpaca_broker`` — the ``Broker`` over alpaca-py's ``TradingClient`` (and the embedded
  broker simulator for the paper default);
* ``trade_updates`` — alpaca-py's ``trade_updates`` stream into the executor;
* ``clickhouse_signals`` — the ``SignalReader`` over ClickHouse ``ta_signals``;
* ``store`` — the ``DecisionStore``/``UnitOfWork`` and ``ControlStore`` over SQLAlchemy;
* ``memory_store`` — the same ports in memory (backtests, runs without a database);
* ``openai_reviewer`` — the ``Reviewer`` over an OpenAI-compatible chat endpoint (httpx);
* ``system_clock`` — the wall clock.

They are wired together in the composition root, :mod:`dataflows.trading`.
"""
