"""The trading core: everything that decides, and nothing that talks to the outside world.

It imports no adapter, database, broker, ClickHouse, HTTP, stream or simulator library
(``import-linter`` contracts in ``pyproject.toml`` enforce it, ``make lint`` runs them), so the
same code runs live, in the backtester and in tests:

* ``domain`` — ``SignalRow``, ``Decision``, ``decision_hash`` (the ``client_order_id``);
* ``strategies`` — deterministic strategies, ``advance``/``initial_state``, ``build_strategies``;
* ``llm`` — the advisory review's contract and policy (``DecisionReview``) over the
  ``Reviewer`` port;
* ``risk`` — ``evaluate(decision, limits, context) -> RiskVerdict`` with every failing rule;
  staleness derived from the bar and the pipeline-lag halt (``PipelineLag``);
* ``adjudicate`` — risk, review, then risk again on the reviewed decision, every time;
* ``decisions`` — the decision lifecycle (state machine, first status from the adjudication);
* ``orders`` — the order status state machine (``unknown_at_broker`` for orders a broker forgot);
* ``quantity`` — quantities on the instrument's increment, and sent exactly as stored;
* ``review_lanes`` — per-symbol lanes where reviews run, off the dataflow worker;
* ``live_gates`` — the only place that may pick a live trading endpoint;
* ``pipeline`` — decide (pure, snapshot-able) then review → risk → record → submit;
* ``executor`` — crash-safe submission and resolution of order intents;
* ``reconcile`` — store vs broker, continuously, failing closed when it cannot run;
* ``controls`` / ``control_state`` — the kill switch, halts and operator commands the flow obeys;
* ``signals`` — dead letters, corrections and the read delay risk derives its bounds from;
* ``records`` — what the decision store gives back (decisions, executions, drift);
* ``ports`` — broker, signal reader, reviewer, decision store / unit of work, control store;
  ``clock`` — the clock port and a simulated clock.
"""
