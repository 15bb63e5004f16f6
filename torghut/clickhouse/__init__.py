"""ClickHouse access: client factory, migrations, row converters and deduplicating readers.

Writers (the TA sink) use :func:`connect`, :func:`migrate` and the ``*_row`` converters;
readers (the API) use the helpers of :mod:`torghut.clickhouse.queries`, which always read with
``FINAL``; the trading loop's cursor reader is :mod:`trading.adapters.clickhouse_signals`.
"""

from torghut.clickhouse.client import Client, EmbeddedClickHouseError, connect, quote_ident
from torghut.clickhouse.migrations import MigrationError, migrate
from torghut.clickhouse.queries import bars, latest_signals, signals_between
from torghut.clickhouse.rows import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    microbar_from_row,
    microbar_row,
    signal_from_row,
    signal_row,
)

__all__ = [
    "MICROBARS_TABLE",
    "MICROBAR_COLUMNS",
    "SIGNALS_TABLE",
    "SIGNAL_COLUMNS",
    "Client",
    "EmbeddedClickHouseError",
    "MigrationError",
    "bars",
    "connect",
    "latest_signals",
    "microbar_from_row",
    "microbar_row",
    "migrate",
    "quote_ident",
    "signal_from_row",
    "signal_row",
    "signals_between",
]
