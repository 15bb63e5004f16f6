"""Alpaca stocks-v2 wire format: messages, timestamps, frames and the two codecs.

Why one module: the server, the synthetic market, replay and the tests must agree byte for byte
on what a message looks like. A :class:`Message` keeps its fields in wire order (``T`` first, as
Alpaca's Go SDK requires in msgpack mode) with ``t`` held as integer nanoseconds, and caches its
encoded form per codec, so a message sent to many clients is encoded once. A frame is built by
joining already-encoded elements (``[a,b,c]`` in JSON, an array header plus the packed maps in
msgpack) instead of re-encoding the whole batch per connection.
"""

from __future__ import annotations

import calendar
import json
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgpack
import msgspec

__all__ = [
    "CHANNEL_OF_TYPE",
    "STOCK_CHANNELS",
    "Codec",
    "Message",
    "control_frame",
    "decode_client_frame",
    "encode_frame",
    "format_rfc3339_ns",
    "message_identity",
    "messages_from_wire",
    "parse_rfc3339_ns",
]

Codec = Literal["json", "msgpack"]

#: Channels a stocks client may subscribe to, in the order the subscription echo lists them.
STOCK_CHANNELS: tuple[str, ...] = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "imbalances",
)

#: Which subscription channel carries each message type (corrections/cancels ride on trades).
CHANNEL_OF_TYPE: dict[str, str] = {
    "t": "trades",
    "q": "quotes",
    "b": "bars",
    "u": "updatedBars",
    "d": "dailyBars",
    "s": "statuses",
    "l": "lulds",
    "i": "imbalances",
    "c": "corrections",
    "x": "cancelErrors",
}

_json_encode = msgspec.json.Encoder().encode
_packb = msgpack.Packer(use_bin_type=True).pack


class Message:
    """One Alpaca data message: ``fields`` in wire order, ``fields["t"]`` in Unix nanoseconds."""

    __slots__ = ("_json", "_msgpack", "fields")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self._json: bytes | None = None
        self._msgpack: bytes | None = None

    @property
    def type(self) -> str:
        return str(self.fields["T"])

    @property
    def symbol(self) -> str:
        return str(self.fields["S"])

    @property
    def t_ns(self) -> int:
        return int(self.fields["t"])

    @property
    def identity(self) -> tuple[Any, ...]:
        return message_identity(self.fields)

    def to_wire(self) -> dict[str, Any]:
        """The message as a JSON client sees it (``t`` as an RFC 3339 nanosecond string)."""
        out = dict(self.fields)
        out["t"] = format_rfc3339_ns(self.t_ns)
        return out

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Message:
        """Inverse of :meth:`to_wire`; also accepts ``t`` as integer nanoseconds."""
        fields = dict(obj)
        t = fields.get("t")
        if isinstance(t, str):
            fields["t"] = parse_rfc3339_ns(t)
        elif isinstance(t, msgpack.Timestamp):
            fields["t"] = t.to_unix_nano()
        elif not isinstance(t, int):
            raise ValueError(f"message has no usable 't': {obj!r}")
        if "T" not in fields or "S" not in fields:
            raise ValueError(f"message lacks 'T' or 'S': {obj!r}")
        return cls(fields)

    def encoded(self, codec: Codec) -> bytes:
        if codec == "json":
            if self._json is None:
                self._json = _json_encode(self.to_wire())
            return self._json
        if self._msgpack is None:
            out = dict(self.fields)
            out["t"] = msgpack.Timestamp.from_unix_nano(self.t_ns)
            self._msgpack = _packb(out)
        return self._msgpack

    def __repr__(self) -> str:
        return f"Message({self.to_wire()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.fields == self.fields

    def __hash__(self) -> int:
        return hash(self.identity)


def message_identity(fields: dict[str, Any]) -> tuple[Any, ...]:
    """A key that is unique per distinct message the simulator generates.

    Trades are identified by (symbol, id) (ids are unique per symbol); revisable bars by
    (symbol, bar start, trade count), because a ``u`` or ``d`` re-publishes the same bar start
    with more trades; everything else by (type, symbol, time).
    """
    kind = fields["T"]
    if kind == "t":
        return ("t", fields["S"], fields["i"])
    if kind in ("u", "d"):
        return (kind, fields["S"], fields["t"], fields["n"])
    return (kind, fields["S"], fields["t"])


def encode_frame(messages: Sequence[Message], codec: Codec) -> bytes:
    """One server→client frame carrying ``messages`` as an array."""
    parts = [m.encoded(codec) for m in messages]
    if codec == "json":
        return b"[" + b",".join(parts) + b"]"
    return _array_header(len(parts)) + b"".join(parts)


def control_frame(obj: dict[str, Any], codec: Codec) -> bytes:
    """A control message (success/error/subscription) alone in its array, as Alpaca sends it."""
    if codec == "json":
        return _json_encode([obj])
    return bytes(_packb([obj]))


def decode_client_frame(data: str | bytes) -> Any:
    """Decode a client frame: text frames are JSON, binary frames msgpack (whatever the codec)."""
    if isinstance(data, str):
        return json.loads(data)
    return msgpack.unpackb(data, raw=False)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


_second_cache: dict[int, str] = {}


def format_rfc3339_ns(ns: int) -> str:
    """Go ``RFC3339Nano`` style UTC time: up to 9 fraction digits, trailing zeros trimmed."""
    sec, frac = divmod(ns, 1_000_000_000)
    prefix = _second_cache.get(sec)
    if prefix is None:
        if len(_second_cache) > 4096:
            _second_cache.clear()
        prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache[sec] = prefix
    if frac == 0:
        return prefix + "Z"
    return f"{prefix}.{frac:09d}".rstrip("0") + "Z"


def parse_rfc3339_ns(text: str) -> int:
    """Parse an RFC 3339 time (0–9 fraction digits, ``Z`` or a numeric offset) to Unix ns."""
    if len(text) < 20 or text[10] not in "Tt ":
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base = calendar.timegm(
        (
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
        )
    )
    rest = text[19:]
    frac_ns = 0
    if rest.startswith("."):
        digits_end = 1
        while digits_end < len(rest) and rest[digits_end].isdigit():
            digits_end += 1
        digits = rest[1:digits_end]
        if not digits or len(digits) > 9:
            raise ValueError(f"bad fraction in RFC 3339 time: {text!r}")
        frac_ns = int(digits.ljust(9, "0"))
        rest = rest[digits_end:]
    if rest in ("Z", "z"):
        offset_s = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset_s = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError(f"bad zone in RFC 3339 time: {text!r}")
    return (base - offset_s) * 1_000_000_000 + frac_ns


def messages_from_wire(objs: Iterable[dict[str, Any]]) -> list[Message]:
    """Convenience: a list of wire dicts to :class:`Message` objects."""
    return [Message.from_wire(o) for o in objs]
