"""Keep credentials out of every line a Torghut process writes.

Why a module of its own: secrets reach output by three roads, and each needs one answer that
every printer and logger shares.

* A connection string printed on purpose (the demo summary, a settings error, a start-up log
  line): :func:`mask_dsn` keeps scheme, user, host and path and replaces the password.
* A library that logs what it sends or receives (``websockets`` frames carrying the Alpaca auth
  message at DEBUG, a driver echoing its DSN in an error): :class:`SecretFilter`, installed on
  the root logger's handlers by :func:`torghut.logs.configure_logging`, rewrites each record's
  message, arguments, traceback and stack text with :func:`scrub`.
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
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["MASK", "SecretFilter", "mask_dsn", "remember_secrets", "scrub", "url_passwords"]

MASK = "***"

# ``scheme://user:password@`` — the password is everything up to the next ``@`` (percent-encoded
# in a valid URL; a raw ``@`` in a password is still covered by the registered value).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<password>[^\s@]*)(?=@)"
)
# ``password=...``, ``sasl.password: ...``, ``api_key=...`` in libpq conninfo strings, query
# strings and config dumps. The value stops at whitespace, a quote, ``&``, ``,`` or ``;``.
_PAIR_SECRET = re.compile(
    r"(?P<head>\b(?:[\w.\-]*password|passwd|pwd|secret[_\-]?key|api[_\-]?key|access[_\-]?token)"
    r"['\"]?\s*[=:]\s*['\"]?)[^\s'\"&,;]+",
    re.I,
)
_MIN_SECRET_LEN = 4
"""Shorter values are not replaced by value: masking every ``abc`` in every line would make
logs unreadable, and such a value is no credential worth the name (URL/pair masking still
applies)."""

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def mask_dsn(dsn: str) -> str:
    """``dsn`` with the password of each ``scheme://user:password@host`` replaced by ``***``.

    Works on any text, so it also serves for an invalid DSN in an error message and for an
    exception message that embeds one: ``postgresql+psycopg://torghut:***@db:5432/torghut``,
    ``http://default:***@ch:8123``; ``chdb:///var/data/chdb`` and URLs without a password come
    back unchanged.
    """
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}", dsn)


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text``, as written and percent-decoded."""
    found = [m["password"] for m in _URL_PASSWORD.finditer(text) if m["password"]]
    return [*found, *(unquote(p) for p in found)]


def remember_secrets(values: Iterable[str | None]) -> None:
    """Add credential values that :func:`scrub` must replace wherever they appear.

    Longest first, so a secret that contains another is replaced whole. Idempotent.
    """
    global _secrets
    fresh = {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
    with _lock:
        _secrets = tuple(sorted(fresh.union(_secrets), key=len, reverse=True))


def scrub(text: str) -> str:
    """``text`` with every remembered secret, URL password and secret pair masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _PAIR_SECRET.sub(rf"\g<head>{MASK}", mask_dsn(text))


class SecretFilter(logging.Filter):
    """A handler filter that scrubs each record before any formatter sees it.

    Works on whatever a library logs: the message is formatted with its arguments first (so a
    secret passed as ``%s`` argument is caught), then the traceback and stack text are rendered
    and scrubbed into ``exc_text``/``stack_info``, which formatters print instead of rendering
    the exception again. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a bad format string: keep the raw parts
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
