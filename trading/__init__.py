"""The trading domain (ports and adapters): it knows nothing of Bytewax, ClickHouse or Alpaca.

* ``domain`` — ``SignalRow``, ``Decision``, ``decision_hash`` (the ``client_order_id``);
* ``strategies`` — deterministic strategies, ``advance``/``initial_state``, ``build_strategies``;
* ``llm`` — optional advisory review: the policy (``DecisionReview``) and an OpenAI-compatible
  provider;
* ``risk`` — ``evaluate(decision, limits, context) -> RiskVerdict`` with every failing rule;
  staleness derived from the bar and the pipeline-lag halt (``PipelineLag``);
* ``adjudicate`` — risk, review, then risk again on the reviewed decision, every time;
* ``quantity`` — quantities on the instrument's increment, and sent exactly as stored;
* ``review_lanes`` — per-symbol lanes where reviews run, off the dataflow worker;
* ``live_gates`` — the only place that may pick a live trading endpoint;
* ``orders`` — the order status state machine (``unknown_at_broker`` for orders a broker forgot);
* ``controls`` — runtime controls the running flow obeys (kill switch, cancel-all, flatten,
  resume) and their CLI, ``python -m trading.controls``;
* ``reconcile`` — store vs broker, continuously, failing closed when it cannot run;
* ``ports`` — protocols the adapters implement (broker, signal reader, reviewer) and their data;
* ``store`` — SQLAlchemy models, Alembic upgrade, the unit of work, the control and halt tables.
"""
