"""Runtime controls of the trading loop from the command line: kill switch, cancel-all, flatten,
resume (``python -m trading.controls``, for when the API is down).

The state lives in the trading store (:mod:`trading.adapters.store.controls`); the running flow
obeys it within one poll interval and carries out the commands (:mod:`trading.core.controls`);
the API (``POST /trading/...``) and this CLI write the same rows.
"""
