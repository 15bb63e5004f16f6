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
    """Route stdlib and structlog output to stderr as one JSON object per line.

    Both write to whatever ``sys.stderr`` is at the time of each line, not the object that was
    there when this ran: test runners and daemon wrappers swap the stream, and a logger bound to
    a closed one fails every later call.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_current_stderr_logger,
        cache_logger_on_first_use=True,
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)


class _CurrentStderr:
    """structlog's output end: one rendered line to the current ``sys.stderr``."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


_STDERR = _CurrentStderr()


def _current_stderr_logger(*_: Any) -> _CurrentStderr:
    return _STDERR


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdlib handler whose stream is looked up on every record."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        """The stream is always the current ``sys.stderr``; assignments are ignored."""


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``component=name``."""
    return structlog.get_logger(component=name)
