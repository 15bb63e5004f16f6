"""The trading domain's value types: the signal a strategy reads and the decision it makes.

Why a decision hash: a decision is identified by *what* was decided, not by when the process
happened to compute it. The hash of (strategy id, symbol, event time, action, params) is unique
in the store and is sent to Alpaca as ``client_order_id``, so a replay or a crash-restart that
recomputes the same decision can never place a second order (Alpaca refuses a reused id).

The canonical JSON behind the hash is deliberately narrow and stable:

* keys sorted, no whitespace, ASCII only;
* every number (int, float, Decimal) becomes a canonical decimal string (``Decimal`` normalised,
  fixed-point: ``30``, ``30.0`` and ``Decimal("30.00")`` are the same parameter value), booleans
  stay JSON booleans;
* datetimes must be timezone-aware and become UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

``qty`` is not part of the hash: the LLM review may shrink it, and the shrunken order is still
the same decision (the same ``client_order_id``). The configured base quantity is a strategy
parameter, so a change of configuration does change the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Any

import msgspec

from torghut.events import Signal

__all__ = [
    "Action",
    "Decision",
    "OrderType",
    "ParamValue",
    "SignalRow",
    "canonical_json",
    "decision_hash",
]

ParamValue = str | int | float | bool | None
"""What a decision parameter may be: scalar, so the canonical form is unambiguous, and without
``Decimal`` so a :class:`Decision` decodes with msgspec (strategies pass decimals as strings,
which hash exactly like the numbers they spell)."""


class Action(StrEnum):
    """What a decision asks for. ``HOLD`` is what remains after a veto: no order."""

    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class SignalRow(msgspec.Struct, frozen=True, gc=False):
    """One deduplicated ``ta_signals`` row as the trading loop reads it.

    ``(window_size, event_ts, symbol, seq)`` is the cursor order; a row with the same key and a
    higher ``version`` is a correction of an earlier one.
    """

    symbol: str
    event_ts: datetime
    seq: int
    window_size: str
    version: int
    indicators: Signal

    @property
    def close(self) -> float | None:
        return self.indicators.close


class Decision(msgspec.Struct, frozen=True, dict=True):
    """A deterministic strategy's decision for one signal row.

    ``params`` are the strategy parameters that produced it (part of the hash); ``rationale``
    is a short human explanation built from the indicator values (not part of the hash).
    ``dict=True`` only gives :attr:`decision_hash` a place to be kept: it is read several times
    per decision (the record, the client order id, the rejection log line) and is a SHA-256 of
    canonical JSON each time; the encoded fields are the same.
    """

    strategy_id: str
    strategy_version: str
    symbol: str
    event_ts: datetime
    action: Action
    qty: Decimal
    order_type: OrderType
    params: dict[str, ParamValue]
    rationale: str
    limit_price: Decimal | None = None
    window_size: str = ""
    signal_seq: int = 0
    reference_price: Decimal | None = None

    @cached_property
    def decision_hash(self) -> str:
        return decision_hash(self.strategy_id, self.symbol, self.event_ts, self.action, self.params)

    @property
    def client_order_id(self) -> str:
        """Alpaca's idempotency key (64 hex chars; Alpaca allows up to 128)."""
        return self.decision_hash


def decision_hash(
    strategy_id: str,
    symbol: str,
    event_ts: datetime,
    action: Action | str,
    params: Mapping[str, object],
) -> str:
    """SHA-256 hex of the canonical JSON of the decision's identity.

    The text is written field by field, keys in their sorted order, with the params' canonical
    text remembered per params (a strategy's are the same for all its decisions, and
    canonicalising them was most of a hash), and each text field's and event time's JSON
    remembered too (bounded caches: a replay hashes thousands of decisions over a few hundred
    symbols and one event time per second): the same text as :func:`canonical_json` of the
    identity mapping (``tests/trading/test_decision_hash.py`` checks both on arbitrary
    identities)."""
    text = (
        f'{{"action":{_text_json(str(action))},"event_ts":{_event_ts_json(event_ts)},'
        f'"params":{_params_json(params)},"strategy_id":{_text_json(strategy_id)},'
        f'"symbol":{_text_json(symbol)}}}'
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _json(value: object) -> str:
    return json.dumps(_canonical(value), ensure_ascii=True)


@lru_cache(maxsize=4096)
def _text_json(value: str) -> str:
    """A strategy id, symbol or action as JSON text (few distinct values, each hashed often)."""
    return _json(value)


def _event_ts_json(value: datetime) -> str:
    """An event time as JSON text, remembered for UTC times (the decisions of one event time,
    every symbol's, share it). Only UTC: two times of one other zone that differ only in
    ``fold`` compare equal, but are different instants with different texts."""
    return _utc_json(value) if value.tzinfo is UTC else _json(value)


@lru_cache(maxsize=1024)
def _utc_json(value: datetime) -> str:
    return _json(value)


def _params_json(params: Mapping[str, object]) -> str:
    try:
        # the type is part of the key: True == 1 and 1 == 1.0, but their texts differ
        return _params_text(tuple((k, type(v), v) for k, v in params.items()))
    except TypeError:  # an unhashable value: canonicalised every time
        return canonical_json(dict(params))


@lru_cache(maxsize=1024)
def _params_text(items: tuple[tuple[str, type, object], ...]) -> str:
    return canonical_json({k: v for k, _, v in items})


def canonical_json(value: Any) -> str:
    """The one canonical JSON text of ``value`` (see the module docstring for the rules)."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _canonical(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float | Decimal):
        return _decimal_text(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} has no canonical form; use UTC")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"canonical JSON keys must be str, got {k!r}")
            out[k] = _canonical(v)
        return out
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"no canonical JSON form for {type(value).__name__}")


def _decimal_text(value: int | float | Decimal) -> str:
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_finite():
        raise ValueError(f"non-finite number {value!r} has no canonical form")
    if d == 0:
        return "0"
    return format(d.normalize(), "f")
