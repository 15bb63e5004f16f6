"""Faults the market simulator can inject into a connection's stream of data frames.

Why: the ingest source must survive what the real service does on a bad day — a dropped socket,
a frame delivered twice, frames swapped, a frame that does not parse or lacks fields, a silent
stall. Faults are rules: ``every=N`` fires on every N-th data frame of each connection; a rule
without ``every`` is a one-shot consumed by the first data frame sent anywhere after it is armed.
The board is shared between the server loop and callers in other threads, so it is locked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import msgspec

from torghut.sim.market.wire import Codec, Message

__all__ = ["FaultBoard", "FaultKind", "FaultRecord", "FaultRule", "malformed_frame"]


class FaultKind(StrEnum):
    DISCONNECT = "disconnect"  # drop the TCP connection without a close frame
    DUPLICATE = "duplicate"  # send the frame, then send it again
    OUT_OF_ORDER = "out_of_order"  # hold the frame and send it after the next one
    MALFORMED = "malformed"  # send a broken frame before the frame (no data is lost)
    STALL = "stall"  # send nothing for ``seconds`` before the frame


Malformation = Literal["invalid", "missing_fields", "wrong_types"]


@dataclass(frozen=True, slots=True)
class FaultRule:
    """What to inject and when.

    Args:
        kind: the fault.
        every: fire on data frames number N, 2N, 3N… of every connection; ``None`` = once.
        seconds: stall length (STALL only).
        malformed: which malformation (MALFORMED only): an undecodable frame, a trade lacking
            its fields, or a trade whose fields have the wrong types.
    """

    kind: FaultKind
    every: int | None = None
    seconds: float = 1.0
    malformed: Malformation = "invalid"

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError("FaultRule.every must be >= 1")
        if self.seconds < 0:
            raise ValueError("FaultRule.seconds must be >= 0")


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One fault that fired: on which connection and at which of its data frames."""

    kind: FaultKind
    connection_id: int
    frame_number: int


class FaultBoard:
    """Scheduled and one-shot fault rules plus the log of faults that fired (thread-safe)."""

    def __init__(self, scheduled: tuple[FaultRule, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._scheduled: list[FaultRule] = list(scheduled)
        self._once: list[FaultRule] = []
        self._log: list[FaultRecord] = []

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            if rule.every is None:
                self._once.append(rule)
            else:
                self._scheduled.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._scheduled.clear()
            self._once.clear()

    def due(self, connection_id: int, frame_number: int) -> list[FaultRule]:
        """The rules firing for this data frame; records them in the log."""
        if not self._scheduled and not self._once:
            return []
        with self._lock:
            rules = [r for r in self._scheduled if frame_number % (r.every or 1) == 0]
            rules.extend(self._once)
            self._once.clear()
            self._log.extend(FaultRecord(r.kind, connection_id, frame_number) for r in rules)
            return rules

    @property
    def log(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._log)


def malformed_frame(kind: Malformation, codec: Codec, sample: Message) -> bytes:
    """A frame that a strict client must reject, shaped after ``sample`` (a real message)."""
    if kind == "invalid":
        return b'[{"T":"t","S":' if codec == "json" else b"\xc1\x93\xc1"
    body: dict[str, Any]
    if kind == "missing_fields":
        body = {"T": "t", "S": sample.symbol}
    else:
        body = {
            "T": "t",
            "S": sample.symbol,
            "i": "not-an-id",
            "x": 7,
            "p": "cheap",
            "s": [],
            "c": "@",
            "z": None,
            "t": "yesterday",
        }
    if codec == "json":
        return msgspec.json.encode([body])
    return msgspec.msgpack.encode([body])
