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
from api.server import uvicorn_config
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
    uvicorn.Server(uvicorn_config(create_app(settings), settings.api.host, settings.api.port)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
