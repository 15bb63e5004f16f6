"""``python -m api``: serve the API and dashboard with uvicorn (``API_HOST``/``API_PORT``).

Defaults to http://127.0.0.1:8080 on the embedded stores. With the embedded chdb store the
data directory is locked to one process: run the API inside the process that runs the TA sink
and the trading loop (see :func:`api.app.create_app`), or point every stage at a ClickHouse
server with ``CH_DSN=http://host:8123``.
"""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app
from torghut.config import SettingsError, load_settings
from torghut.logs import configure_logging, get_logger


def main() -> int:
    configure_logging()
    log = get_logger("api")
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    log.info("api_listening", url=f"http://{settings.api.host}:{settings.api.port}/")
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        http="httptools",  # C parsing and event loop: api.server says why
        loop="uvloop",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
