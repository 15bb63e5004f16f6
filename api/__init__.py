"""The Litestar HTTP API and dashboard of Torghut.

* ``create_app(settings, ch_client_factory=None, store_engine=None, *, alpaca_check=None,
  registry=None)`` in :mod:`api.app` builds the app; ``python -m api`` serves it with uvicorn on
  ``API_HOST:API_PORT`` (127.0.0.1:8080); :class:`api.server.BackgroundServer` serves it from a
  thread of a process that also runs the dataflows (the embedded chdb store is one-process).
* Routes: ``/trading/{status,health,decisions,executions}`` (:mod:`api.trading`),
  ``/api/torghut/ta/{bars,signals,latest,symbols}`` (:mod:`api.ta`), ``/healthz``, ``/readyz``
  (:mod:`api.health`), ``/metrics`` and the dashboard at ``/`` (``api/dashboard/``).
* Errors are RFC 9457 problem documents (:mod:`api.errors`); TA reads are ``FINAL`` and cached
  for ``API_TA_CACHE_TTL_MS`` (:mod:`api.ta_reads`); trading reads never write
  (:mod:`api.trading_reads`).
"""
