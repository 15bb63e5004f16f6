"""The dead-letter record written to ``torghut.ingest.dlq.v1`` and ``torghut.ta.dlq.v1``, and
the one function every stage builds it with.

Why a struct of its own and not an :class:`torghut.events.Envelope`: a dead letter is input we
could not understand, so it may have no symbol, no event time and no sequence. It keeps the
original bytes (base64 in JSON) so nothing is lost and the record can be replayed once the
decoder is fixed.

Why one factory (:func:`dead_letter`): the decode, microbar and indicator stages each used to
build the struct by hand, each bounding (or not) the error text its own way. Now the bound, the
"reason when there is no message" rule and the default receive time live in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

__all__ = ["ERROR_CHARS", "DeadLetter", "dead_letter"]

ERROR_CHARS = 300
"""The longest error text kept: enough for a decoder's message, bounded for the topic."""


class DeadLetter(msgspec.Struct, frozen=True):
    """Input that a stage could not process, with why and the raw bytes.

    ``stage`` names the step that rejected it (``alpaca_decode``), ``reason`` is a short,
    bounded category (usable as a metric label: ``malformed_frame``, ``invalid_message``,
    ``unknown_type``) and ``error`` the decoder's message.
    """

    stage: str
    reason: str
    error: str
    raw: bytes
    received_at: datetime
    symbol: str | None = None
    source: str = "alpaca"


def dead_letter(
    stage: str,
    reason: str,
    raw: bytes,
    error: str = "",
    *,
    symbol: str | None = None,
    received_at: datetime | None = None,
) -> DeadLetter:
    """A dead letter of ``stage``: ``error`` cut to :data:`ERROR_CHARS` (``reason`` when
    empty), received now unless ``received_at`` says when (a frame's or a batch's time).

    >>> d = dead_letter("ta_microbars", "invalid_message", b"{", "x" * 999, symbol="AAPL")
    >>> (d.stage, d.reason, len(d.error), d.raw, d.symbol)
    ('ta_microbars', 'invalid_message', 300, b'{', 'AAPL')
    >>> dead_letter("ta_indicators", "unknown_symbol", b"").error
    'unknown_symbol'
    """
    return DeadLetter(
        stage,
        reason,
        error[:ERROR_CHARS] or reason,
        raw,
        received_at if received_at is not None else datetime.now(UTC),
        symbol=symbol,
    )
