"""Fail fast, and say why, when Kafka cannot be reached with the configured security settings.

Why: librdkafka never fails a client on a bad CA, a wrong password or a missing client
certificate; it retries for ever and reports each failure to an error callback, so a process
with a wrong secret looks merely idle. :func:`check_connection` asks for cluster metadata until
a deadline and, if none came, raises :class:`KafkaUnreachable` whose message carries what
librdkafka reported (``SSL handshake failed: … certificate verify failed``, ``SASL
authentication error: … invalid credentials``), never a secret. A TLS or authentication
failure ends the wait at once: retrying cannot fix a wrong CA or password.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

__all__ = ["KafkaUnreachable", "check_connection"]

_DEFINITIVE = frozenset(
    {KafkaError._SSL, KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)
"""Errors no retry can clear (certificate not trusted, credentials refused)."""


class KafkaUnreachable(RuntimeError):
    """No broker answered within the deadline; the message says what went wrong."""


def check_connection(config: dict[str, str], timeout_s: float) -> None:
    """Return once a broker of ``config`` (librdkafka settings) answers a metadata request.

    Raises :class:`KafkaUnreachable` after ``timeout_s`` with the distinct errors seen.
    """
    failure = _first_answer(config, timeout_s)
    if failure is not None:
        where = (
            f"{config.get('bootstrap.servers', '?')} over {config.get('security.protocol', '?')}"
        )
        raise KafkaUnreachable(f"cannot reach Kafka at {where} within {timeout_s:g} s: {failure}")


def _first_answer(config: dict[str, str], timeout_s: float) -> str | None:
    """None once a broker answered, else what went wrong. A function of its own so the client
    is gone (no reconnecting, no logging) once it returns, even while the error is handled."""
    errors: list[str] = []
    definitive = False

    def on_error(err: KafkaError) -> None:
        nonlocal definitive
        definitive = definitive or err.code() in _DEFINITIVE
        text = err.str()
        if text not in errors:
            errors.append(text)

    admin_config: dict[str, Any] = {
        **config,
        "error_cb": on_error,
        "log_level": 0,  # what went wrong is in the exception, once, not on stderr
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        "reconnect.backoff.max.ms": 1000,
    }
    admin = AdminClient(admin_config)
    fallback = "no answer"  # the last request's error, if no callback said more
    deadline = time.monotonic() + timeout_s
    while not definitive and (remaining := deadline - time.monotonic()) > 0:
        try:
            if admin.list_topics(timeout=min(remaining, 0.25)).brokers:
                return None
        except KafkaException as exc:
            fallback = exc.args[0].str() if exc.args else str(exc)
        admin.poll(0)  # deliver pending error callbacks (one may be definitive)
    return "; ".join(errors[:5]) or fallback
