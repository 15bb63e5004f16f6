"""The query parameters of the API as typed, documented declarations (one home for each).

Why declared here and parsed in :mod:`api.params`: the OpenAPI document must say what a client
may send (required, pattern, range) and Litestar enforces what it declares before a handler
runs, so a value outside the declaration is a 400 problem naming the parameter. The finer
rules a pattern cannot express (a 30th of February, ``from`` after ``to``, a window this
deployment does not compute) stay in :mod:`api.params` and are 400s naming the parameter too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar.params import QueryParameter

from api.params import SYMBOL_PATTERN, TIMESTAMP_PATTERN

__all__ = [
    "LIMIT_MAX",
    "From",
    "Limit",
    "OptionalSymbol",
    "Since",
    "Symbol",
    "To",
    "WindowSize",
]

LIMIT_MAX = 100_000
"""The declared ceiling of every ``limit``; a deployment's ``API_MAX_ROWS`` caps pages lower."""

_TS_DOC = (
    "ISO-8601 date-time (offset optional, UTC when absent; '+' may arrive as a space) or "
    "integer epoch milliseconds. Values outside 1900-01-01..2299-12-31 are clamped to it."
)

Symbol = Annotated[
    str,
    QueryParameter(
        required=True,
        pattern=SYMBOL_PATTERN,
        min_length=1,
        max_length=16,
        description="Ticker, case-insensitive (AAPL, BRK.B, BTC/USD).",
    ),
]
OptionalSymbol = Annotated[
    str | None,
    QueryParameter(
        required=False,
        pattern=SYMBOL_PATTERN,
        min_length=1,
        max_length=16,
        description="Only this ticker (case-insensitive); all when absent.",
    ),
]
WindowSize = Annotated[
    Literal["PT1S", "PT1M"] | None,
    QueryParameter(
        required=False,
        description="Bar window (ISO-8601): PT1S (default) or PT1M.",
    ),
]
From = Annotated[
    str | None,
    QueryParameter(
        name="from",
        required=False,
        pattern=TIMESTAMP_PATTERN,
        max_length=40,
        description=f"Inclusive start. {_TS_DOC} Default: `to` minus 15 minutes.",
    ),
]
To = Annotated[
    str | None,
    QueryParameter(
        name="to",
        required=False,
        pattern=TIMESTAMP_PATTERN,
        max_length=40,
        description=f"Exclusive end. {_TS_DOC} Default: now.",
    ),
]
Since = Annotated[
    str | None,
    QueryParameter(
        required=False,
        pattern=TIMESTAMP_PATTERN,
        max_length=40,
        description=f"Only rows at or after this time (not in the future). {_TS_DOC}",
    ),
]
Limit = Annotated[
    int | None,
    QueryParameter(
        required=False,
        ge=1,
        le=LIMIT_MAX,
        description="Maximum number of rows; pages are further capped at API_MAX_ROWS.",
    ),
]
