"""Structured JSON logging for every Torghut process.

Why: logs are read by machines (Loki and friends) first, so each line is one JSON object with
an ``event`` name and fields, never an interpolated sentence. Values whose key looks like a
credential are replaced before rendering, so a careless ``log.info("x", secret=...)`` cannot
leak it. Metrics, not logs, carry counts; logs carry bounded samples.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "redact"]

_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_key|key_id|authorization)", re.I)
_REDACTED = "***"


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name suggests a credential."""
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = _REDACTED
    return event


def configure_logging(level: str = "INFO") -> None:
    """Route stdlib and structlog output to stderr as one JSON object per line."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format='{"level":"%(levelname)s","logger":"%(name)s","event":%(message)r}',
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``component=name``."""
    return structlog.get_logger(component=name)
