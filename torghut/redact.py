"""Keep credentials out of every line a Torghut process writes.

Why a module of its own: secrets reach output by three roads, and each needs one answer that
every printer and logger shares.

* A connection string printed on purpose (the demo summary, a settings error, a start-up log
  line): :func:`mask_dsn` keeps scheme, user, host and path and replaces the password.
* A library that logs what it sends or receives (``websockets`` frames carrying the Alpaca auth
  message at DEBUG, a driver echoing its DSN in an error): :func:`scrub_every_log_record`,
  installed by :func:`torghut.logs.configure_logging`, rewrites each record's message,
  arguments, traceback and stack text with :func:`scrub` as the record is made.
* An exception nobody caught: :func:`torghut.logs.configure_logging` routes the interpreter's
  and threads' last-resort tracebacks through :func:`scrub` too.

:func:`scrub` replaces every known secret value (registered with :func:`remember_secrets`, from
the settings at start) and masks passwords in URLs and ``password=...``-style pairs, so a secret
nobody registered still loses its most common shapes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "mask_dsn",
    "remember_secrets",
    "scrub",
    "scrub_every_log_record",
    "scrub_record",
    "url_passwords",
]

MASK = "***"

# ``scheme://user:password@`` — the password is everything up to the next ``@`` (percent-encoded
# in a valid URL; a raw ``@`` in a password is still covered by the registered value). Schemes
# may hold ``_``: Kafka's ``SASL_SSL://``.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][\w+.\-]*://[^\s:/@]*:)(?P<password>[^\s@]*)(?=@)")
# ``password=...``, ``sasl.password: ...``, ``X-Api-Key: ...``, ``Bearer ...`` in libpq conninfo
# strings, query strings, headers and config dumps. The value stops at whitespace, a quote,
# ``&``, ``,`` or ``;``.
_PAIR_SECRET = re.compile(
    r"(?P<head>(?:(?:passw(?:or)?d|pwd|secret(?:[_\-]?(?:access[_\-]?)?key)?|api[_\-]?key"
    r"|access[_\-]?key|token)"
    r"['\"]?\s*[=:]\s*['\"]?|\bBearer\s+))[^\s'\"&,;]+",
    re.I,
)
_PAIR_WORDS = ("pass", "pwd", "secret", "key", "token", "bearer")
_MIN_SECRET_LEN = 4
"""Shorter values are not replaced by value: masking every ``abc`` in every line would make
logs unreadable, and such a value is no credential worth the name (URL/pair masking still
applies)."""
_FRAGMENT = 8
"""Any run of this many characters of a secret is masked too (with the rest of the run):
libraries shorten what they log — ``websockets`` prints a long frame as its head, ``...`` and
its tail, which can be the last 20 characters of the Alpaca secret."""
_PROBE = 4
_STRIDE = _FRAGMENT - _PROBE + 1
"""Any run of ``_FRAGMENT`` characters holds a ``_PROBE``-long slice that starts at a multiple
of ``_STRIDE``, so looking up the slices at those positions alone finds every run: one dict
probe per ``_STRIDE`` characters of a line (about 10 µs for a 350-character line)."""

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_probes: dict[str, tuple[tuple[str, int], ...]] = {}
"""Every ``_PROBE``-long slice of every secret → (secret, offset of the slice) pairs."""


def mask_dsn(dsn: str) -> str:
    """``dsn`` with the password of each ``scheme://user:password@host`` replaced by ``***``.

    Works on any text, so it also serves for an invalid DSN in an error message and for an
    exception message that embeds one: ``postgresql+psycopg://torghut:***@db:5432/torghut``,
    ``http://default:***@ch:8123``; ``chdb:///var/data/chdb`` and URLs without a password come
    back unchanged.
    """
    if "@" not in dsn:  # most lines: skip the regex
        return dsn
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}", dsn)


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text``, as written and percent-decoded."""
    found = [m["password"] for m in _URL_PASSWORD.finditer(text) if m["password"]]
    return [*found, *(unquote(p) for p in found)]


def remember_secrets(values: Iterable[str | None]) -> None:
    """Add credential values that :func:`scrub` must replace wherever they appear.

    Longest first, so a secret that contains another is replaced whole. Idempotent.
    """
    global _secrets, _probes
    fresh = {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
    with _lock:
        secrets = tuple(sorted(fresh.union(_secrets), key=len, reverse=True))
        probes: dict[str, list[tuple[str, int]]] = {}
        for secret in secrets:
            if len(secret) >= _FRAGMENT:
                for i in range(len(secret) - _PROBE + 1):
                    probes.setdefault(secret[i : i + _PROBE], []).append((secret, i))
        _secrets, _probes = secrets, {p: tuple(at) for p, at in probes.items()}


def scrub(text: str) -> str:
    """``text`` with every remembered secret (or run of ``_FRAGMENT`` of its characters), URL
    password and secret pair masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if _probes:
        text = _mask_fragments(text)
    text = mask_dsn(text)
    lowered = text.lower()
    if any(word in lowered for word in _PAIR_WORDS):  # most lines: skip the regex
        text = _PAIR_SECRET.sub(rf"\g<head>{MASK}", text)
    return text


def _mask_fragments(text: str) -> str:
    """Mask each longest run of ``text`` that is also a run of some secret, of at least
    ``_FRAGMENT`` characters."""
    spans: list[tuple[int, int]] = []
    for q in range(0, len(text) - _PROBE + 1, _STRIDE):
        for secret, offset in _probes.get(text[q : q + _PROBE], ()):
            span = _aligned_run(text, secret, q, q - offset)
            if span[1] - span[0] >= _FRAGMENT:
                spans.append(span)
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for a, b in sorted(spans):
        if a >= done:
            out += [text[done:a], MASK]
        done = max(done, b)
    out.append(text[done:])
    return "".join(out)


def _aligned_run(text: str, secret: str, q: int, start: int) -> tuple[int, int]:
    """The longest span around ``text[q : q + _PROBE]`` where ``text[i] == secret[i - start]``."""
    a, b = q, q + _PROBE
    while a > max(start, 0) and text[a - 1] == secret[a - 1 - start]:
        a -= 1
    while b < len(text) and b - start < len(secret) and text[b] == secret[b - start]:
        b += 1
    return a, b


def scrub_every_log_record() -> None:
    """Make every log record of the process scrubbed as it is created, whoever logs it.

    A record factory rather than a handler filter: a filter on the root handler misses the
    libraries that log through handlers of their own (alpaca-py attaches one to its stream
    loggers; uvicorn's default configuration does too). Idempotent.
    """
    base = logging.getLogRecordFactory()
    if not isinstance(base, _ScrubbingRecordFactory):
        logging.setLogRecordFactory(_ScrubbingRecordFactory(base))


def scrub_record(record: logging.LogRecord) -> None:
    """Scrub one record in place: message with its arguments, traceback and stack text.

    The message is formatted with its arguments first (a secret passed as a ``%s`` argument
    is caught); it replaces ``msg``/``args`` only when something was masked, so formatters that
    read ``args`` themselves (uvicorn's access log) keep working. The traceback is rendered into
    ``exc_text``, which stdlib formatters print instead of rendering the exception again
    (structlog's renders it again, and :mod:`torghut.logs` scrubs that rendering).
    """
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # a bad format string: keep the raw parts
        message = f"{record.msg!s} {record.args!r}"
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


class _ScrubbingRecordFactory:
    """The process's log-record factory, wrapped by :func:`scrub_every_log_record`."""

    def __init__(self, base: Callable[..., logging.LogRecord]) -> None:
        self._base = base

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._base(*args, **kwargs)
        scrub_record(record)
        return record
