"""The per-connection protocol state machine of Alpaca's stocks-v2 stream, without I/O.

Why separate: the rules (what each client message is answered with, which error code applies,
how subscriptions add and subtract) are the part most worth testing exhaustively, and they do
not need a socket. The server feeds decoded client messages in and sends whatever comes out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from torghut.sim.market.wire import CHANNEL_OF_TYPE, STOCK_CHANNELS

__all__ = ["ERRORS", "Reply", "Session", "SessionState", "error"]

#: Alpaca's market-data stream error codes and their exact messages.
ERRORS: dict[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}

Reply = dict[str, Any]


def error(code: int) -> Reply:
    return {"T": "error", "code": code, "msg": ERRORS[code]}


class SessionState(Enum):
    UNAUTHENTICATED = "unauthenticated"
    AUTHENTICATED = "authenticated"


_AUTO_CHANNELS = ("corrections", "cancelErrors")
_NOT_CHANNELS = frozenset(("action", *_AUTO_CHANNELS))


class Session:
    """One client's protocol state: authentication and the subscription sets.

    Args:
        credentials: accepted key → secret pairs.
        try_acquire: called with the key after the credentials check; returns ``False`` when the
            key already holds its connection limit on this endpoint (→ 406, session stays
            unauthenticated and the socket open, as the real service does).
        symbol_limit: most distinct symbols across trades+quotes (``None`` = unlimited), else 405.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        try_acquire: Callable[[str], bool],
        symbol_limit: int | None = None,
    ) -> None:
        self._credentials = credentials
        self._try_acquire = try_acquire
        self._symbol_limit = symbol_limit
        self.state = SessionState.UNAUTHENTICATED
        self.key: str | None = None
        self._subs: dict[str, dict[str, None]] = {ch: {} for ch in STOCK_CHANNELS}
        self._wild: set[str] = set()
        self._specific: dict[str, frozenset[str]] = {}

    def handle(self, message: Any) -> Reply:
        """The reply to one decoded client message."""
        if not isinstance(message, dict):
            return error(400)
        action = message.get("action")
        if action == "auth":
            return self._auth(message)
        if action in ("subscribe", "unsubscribe"):
            if self.state is not SessionState.AUTHENTICATED:
                return error(401)
            return self._change(message, add=action == "subscribe")
        return error(400)

    def wants(self, kind: str, symbol: str) -> bool:
        """Whether a data message of type ``kind`` for ``symbol`` goes to this client."""
        channel = CHANNEL_OF_TYPE.get(kind)
        if channel is None:
            return False
        if channel in _AUTO_CHANNELS:
            channel = "trades"
        if channel in self._wild:
            return True
        specific = self._specific.get(channel)
        return specific is not None and symbol in specific

    @property
    def subscribed(self) -> bool:
        return any(self._subs.values())

    def subscription(self) -> Reply:
        """The full-state ``subscription`` message."""
        reply: Reply = {"T": "subscription"}
        for channel in STOCK_CHANNELS:
            reply[channel] = list(self._subs[channel])
        trades = list(self._subs["trades"])
        reply["corrections"] = trades
        reply["cancelErrors"] = list(trades)
        return reply

    def _auth(self, message: dict[str, Any]) -> Reply:
        if self.state is SessionState.AUTHENTICATED:
            return error(403)
        key, secret = message.get("key"), message.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            return error(402)
        if self._credentials.get(key) != secret:
            return error(402)
        if not self._try_acquire(key):
            return error(406)
        self.state = SessionState.AUTHENTICATED
        self.key = key
        return {"T": "success", "msg": "authenticated"}

    def _change(self, message: dict[str, Any], *, add: bool) -> Reply:
        updates: dict[str, list[str]] = {}
        for channel, symbols in message.items():
            if channel in _NOT_CHANNELS:
                continue
            if channel not in self._subs:
                return error(410)
            if symbols is None:
                continue
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                return error(400)
            updates[channel] = symbols
        proposed = {ch: dict(syms) for ch, syms in self._subs.items()}
        for channel, symbols in updates.items():
            target = proposed[channel]
            for sym in symbols:
                if add:
                    target[sym] = None
                else:
                    target.pop(sym, None)
        if self._symbol_limit is not None:
            distinct = {s for ch in ("trades", "quotes") for s in proposed[ch] if s != "*"}
            if len(distinct) > self._symbol_limit:
                return error(405)
        self._subs = proposed
        self._wild = {ch for ch, syms in proposed.items() if "*" in syms}
        self._specific = {ch: frozenset(syms) for ch, syms in proposed.items() if syms}
        return self.subscription()
