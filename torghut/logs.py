"""Structured JSON logging for every Torghut process.

Why: logs are read by machines (Loki and friends) first, so each line is one JSON object with
an ``event`` name and fields, never an interpolated sentence. Values whose key looks like a
credential are replaced before rendering, so a careless ``log.info("x", secret=...)`` cannot
leak it; and every line, ours or a library's, is scrubbed of the credential values the settings
hold (:mod:`torghut.redact`), so a driver logging its DSN or a websocket library logging the
Alpaca auth frame at DEBUG cannot leak them either. Metrics, not logs, carry counts; logs carry
bounded samples.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

import structlog

from torghut.config import secrets_in_environment
from torghut.redact import remember_secrets, scrub, scrub_every_log_record

__all__ = ["configure_logging", "get_logger", "redact"]

_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_key|key_id|authorization)", re.I)
_REDACTED = "***"


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name suggests a credential."""
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = _REDACTED
    return event


def configure_logging(level: str | None = None) -> None:
    """Route stdlib and structlog output to stderr as one JSON object per line, scrubbed.

    ``level`` defaults to ``LOG_LEVEL`` (else INFO): this runs at each process's edge, before
    the settings. Both outputs write to whatever ``sys.stderr`` is at the time of each line, not
    the object that was there when this ran: test runners and daemon wrappers swap the stream,
    and a logger bound to a closed one fails every later call.

    The credential values of the environment's settings are remembered for
    :func:`torghut.redact.scrub`, which every rendered line passes through; every stdlib log
    record, whichever library and handler it is for, is scrubbed as it is made; and uncaught
    exceptions of the main and other threads are printed scrubbed.
    """
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    remember_secrets(secrets_in_environment())
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
            _render_scrubbed,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_current_stderr_logger,
        cache_logger_on_first_use=True,
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=_render_scrubbed,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                *shared,
                structlog.processors.format_exc_info,
            ],
        )
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)  # warnings become records, scrubbed like the rest
    scrub_every_log_record()
    sys.excepthook = _print_uncaught
    threading.excepthook = _print_uncaught_in_thread


def _render_scrubbed(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """The event as one JSON line with every secret value masked.

    Values are scrubbed before encoding (JSON escaping could split a secret that holds a quote
    or a non-ASCII character) and the line after (an object's ``repr`` made while encoding).
    """
    clean = {key: _scrubbed(value) for key, value in event.items()}
    return scrub(json.dumps(clean, default=lambda o: scrub(repr(o))))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _print_uncaught(
    kind: type[BaseException], exc: BaseException | None, tb: TracebackType | None
) -> None:
    """``sys.excepthook``: the usual traceback, scrubbed (a driver's message may hold a DSN)."""
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, exc, tb))))
    sys.stderr.flush()


def _print_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _print_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


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
