"""Runtime controls of the trading loop: kill switch, cancel-all, flatten, resume.

The state lives in the trading store (:mod:`trading.adapters.store.controls`); the running flow
obeys it within one poll interval and carries out the commands (:mod:`trading.core.controls`); the
API (``POST /trading/...``) and the CLI (``python -m trading.controls``, for when the API is down)
write the same rows.
"""

from trading.core.controls import RuntimeControls

__all__ = ["RuntimeControls"]
