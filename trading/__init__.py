"""The trading loop: a core that decides (:mod:`trading.core`) and the adapters that connect it
to the outside world (:mod:`trading.adapters`); the composition root is :mod:`dataflows.trading`.

The core knows nothing of Bytewax, ClickHouse, Postgres or Alpaca: it sees ports (Protocols) and
plain values, so the live flow, the backtester and the tests run the very same decision, review,
risk and execution code. ``import-linter`` contracts (``pyproject.toml``) keep it that way.
``trading.controls`` is the operators' CLI (``python -m trading.controls``).
"""
