"""The dead-letter record written to ``torghut.ingest.dlq.v1`` and ``torghut.ta.dlq.v1``.

Why a struct of its own and not an :class:`torghut.events.Envelope`: a dead letter is input we
could not understand, so it may have no symbol, no event time and no sequence. It keeps the
original bytes (base64 in JSON) so nothing is lost and the record can be replayed once the
decoder is fixed.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["DeadLetter"]


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
