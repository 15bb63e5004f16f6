"""Serve the app from a background thread: for processes that also run the dataflows.

Why: the embedded chdb store is locked to one process, so the all-in-one demo runs the TA flow,
the trading loop and the API together; the flows own the main thread and the API runs beside
them::

    with BackgroundServer(create_app(settings), settings.api.host, settings.api.port) as url:
        run_main(flow)          # the dataflow, in the foreground
"""

from __future__ import annotations

import gc
import threading
import time
from types import TracebackType

import uvicorn
from litestar import Litestar

from api.coalesced_writes import HttpToolsCoalescing

__all__ = ["BackgroundServer", "uvicorn_config"]


def uvicorn_config(app: Litestar, host: str, port: int) -> uvicorn.Config:
    """How the API is served, by ``python -m api`` and by :class:`BackgroundServer` alike.

    HTTP parsing and the event loop are C (``httptools``, ``uvloop``), named explicitly: less
    Python per request under the GIL the dataflows need (alone, before the shared answers, they
    took ``bench/api.py``'s ``/latest`` from 888 to 1,206 req/s and the update from 981 to
    2,417). A response leaves in one send (:mod:`api.coalesced_writes`)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        http=HttpToolsCoalescing,
        loop="uvloop",
    )


class BackgroundServer:
    """uvicorn in a daemon thread; entering waits until it listens, leaving stops it.

    Entering also moves every object alive by then (modules, the built dataflow, chdb's and
    the app's state) to the collector's permanent generation (:func:`gc.freeze`): a full
    collection then walks only what was made since. Under API load the process's full
    collections took 100-165 ms each, every few seconds, with the GIL held: a pause for every
    request in flight and for the dataflows (``bench/api.py``)."""

    def __init__(
        self, app: Litestar, host: str = "127.0.0.1", port: int = 8080, start_timeout_s: float = 30
    ) -> None:
        self.url = f"http://{host}:{port}"
        self._timeout = start_timeout_s
        self._server = uvicorn.Server(uvicorn_config(app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="api-server", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the API server stopped while starting on {self.url}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API server did not start on {self.url} in {self._timeout} s"
                )
            time.sleep(0.02)
        gc.freeze()
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self._timeout)
