"""Recorded sessions: the JSON-lines file format, a replay source and a recorder.

Why: a real (or simulated) session captured once can be replayed any number of times at its
original pace or faster, which makes ingest and TA regressions reproducible. A session file holds
one Alpaca data message per line exactly as a JSON client receives it (``T`` first, ``t`` an
RFC 3339 nanosecond string); control messages are not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import websockets

from torghut.sim.market.wire import Message, decode_client_frame
from torghut.sim.quotes import Touch

__all__ = ["SessionReplay", "read_session", "record_session", "write_session"]

_NS = 1_000_000_000


def write_session(path: str | Path, messages: Iterable[Message]) -> int:
    """Write ``messages`` as a session file; returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for message in messages:
            fh.write(message.encoded("json").decode())
            fh.write("\n")
            count += 1
    return count


def read_session(path: str | Path) -> list[Message]:
    """Read a session file; a bad line raises ``ValueError`` naming the line number."""
    out: list[Message] = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                out.append(Message.from_wire(obj))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: bad session line: {exc}") from exc
    return out


class SessionReplay:
    """Replays recorded messages in file order, paced by their ``t`` (a message source).

    A message is due once the virtual clock reaches the largest ``t`` seen up to and including
    it, so out-of-order (late) prints keep their place in the file. Also a ``QuoteSource``: the
    touch of the last replayed quote per symbol.
    """

    def __init__(self, messages: Sequence[Message] | str | Path) -> None:
        self._messages = (
            read_session(messages) if isinstance(messages, str | Path) else list(messages)
        )
        self._due: list[int] = []
        running = -math.inf
        for message in self._messages:
            running = max(running, message.t_ns)
            self._due.append(int(running))
        self._pos = 0
        self._touch: dict[str, Message] = {}

    @property
    def start_ns(self) -> int:
        return self._due[0] if self._due else 0

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._messages)

    def take(self, until_ns: int | None = None, limit: int | None = None) -> list[Message]:
        end = len(self._messages)
        if limit is not None:
            end = min(end, self._pos + limit)
        start = self._pos
        stop = start
        if until_ns is None:
            stop = end
        else:
            while stop < end and self._due[stop] <= until_ns:
                stop += 1
        batch = self._messages[start:stop]
        self._pos = stop
        for message in batch:
            if message.type == "q":
                self._touch[message.symbol] = message
        return batch

    def latest_quote(self, symbol: str) -> Touch | None:
        message = self._touch.get(symbol)
        if message is None:
            return None
        f = message.fields
        t_ns = message.t_ns
        ts = datetime.fromtimestamp(t_ns // _NS, UTC) + timedelta(microseconds=(t_ns % _NS) // 1000)
        return Touch(float(f["bp"]), float(f["bs"]), float(f["ap"]), float(f["as"]), ts)


async def record_session(
    url: str,
    key: str,
    secret: str,
    subscribe: Mapping[str, list[str]],
    path: str | Path,
    *,
    max_messages: int,
    timeout_s: float = 30.0,
) -> int:
    """Connect to an Alpaca-compatible stream as a JSON client and record its data messages.

    Stops after ``max_messages`` data messages or ``timeout_s`` seconds, whichever is first;
    returns how many were written. Raises ``ConnectionError`` on an error reply.
    """
    recorded: list[Message] = []

    async def run() -> None:
        async with websockets.connect(url) as ws:
            for request in (
                {"action": "auth", "key": key, "secret": secret},
                {"action": "subscribe", **subscribe},
            ):
                await ws.send(json.dumps(request))
            while len(recorded) < max_messages:
                for obj in decode_client_frame(await ws.recv()):
                    kind = obj.get("T")
                    if kind == "error":
                        raise ConnectionError(f"stream error {obj.get('code')}: {obj.get('msg')}")
                    if kind in ("success", "subscription"):
                        continue
                    recorded.append(Message.from_wire(obj))

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run(), timeout_s)
    return write_session(path, recorded[:max_messages])
