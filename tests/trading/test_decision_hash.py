"""The decision hash: a pinned golden value, stability across equivalent forms, and
sensitivity to every field of the decision's identity."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trading.conftest import T0, decision
from trading.core.domain import Action, Decision, canonical_json, decision_hash

GOLDEN_JSON = (
    '{"action":"buy","event_ts":"2026-03-02T15:00:00.000000Z","params":{"qty":"10",'
    '"rsi_overbought":"70","window_size":"PT1S"},"strategy_id":"macd_rsi","symbol":"AAPL"}'
)
GOLDEN_HASH = "ddf71e7c90409b0ae2f973695f9659b2e0a5c1028dd37083934081c74b4e7d6d"


def test_golden_canonical_json_and_hash() -> None:
    d = decision()
    identity = {
        "strategy_id": d.strategy_id,
        "symbol": d.symbol,
        "event_ts": d.event_ts,
        "action": d.action,
        "params": d.params,
    }
    assert canonical_json(identity) == GOLDEN_JSON
    assert d.decision_hash == GOLDEN_HASH
    assert d.client_order_id == GOLDEN_HASH
    assert len(GOLDEN_HASH) == 64 <= 128


def test_equivalent_forms_hash_the_same() -> None:
    eastern = timezone(timedelta(hours=-5))
    params = {"window_size": "PT1S", "rsi_overbought": 70.0, "qty": Decimal("10.00")}
    assert decision_hash("macd_rsi", "AAPL", T0.astimezone(eastern), "buy", params) == GOLDEN_HASH
    assert decision(event_ts=T0.astimezone(eastern)).decision_hash == GOLDEN_HASH


def test_a_decision_round_trips_through_msgspec() -> None:
    d = decision(limit_price=Decimal("100.05"))
    again = msgspec.json.decode(msgspec.json.encode(d), type=Decision)
    assert again == d
    assert again.decision_hash == GOLDEN_HASH


def test_qty_rationale_and_version_are_not_identity() -> None:
    """The LLM may shrink qty; the order is still the same decision (same client_order_id)."""
    assert decision(qty=Decimal(3), rationale="other", strategy_version="9").decision_hash == (
        GOLDEN_HASH
    )


@pytest.mark.parametrize(
    "change",
    [
        {"strategy_id": "bollinger_reversion"},
        {"symbol": "MSFT"},
        {"event_ts": T0 + timedelta(microseconds=1)},
        {"action": Action.SELL},
        {"params": {"qty": "10", "rsi_overbought": "71", "window_size": "PT1S"}},
        {"params": {"qty": "11", "rsi_overbought": "70", "window_size": "PT1S"}},
        {"params": {"qty": "10", "rsi_overbought": "70", "window_size": "PT1M"}},
        {"params": {"qty": "10", "rsi_overbought": "70"}},
        {
            "params": {
                "qty": "10",
                "rsi_overbought": "70",
                "window_size": "PT1S",
                "extra": True,
            }
        },
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_identity_change_changes_the_hash(change: dict[str, object]) -> None:
    assert decision(**change).decision_hash != GOLDEN_HASH


def test_bool_param_is_not_a_number() -> None:
    assert decision_hash("s", "X", T0, "buy", {"p": True}) != decision_hash(
        "s", "X", T0, "buy", {"p": 1}
    )


def test_naive_datetime_and_non_finite_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        decision_hash("s", "X", T0.replace(tzinfo=None), "buy", {})
    with pytest.raises(ValueError, match="non-finite"):
        decision_hash("s", "X", T0, "buy", {"p": float("nan")})


_keys = st.text(min_size=1, max_size=8)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=12),
    st.text(max_size=12),
    st.datetimes(timezones=st.timezones()),
    st.sampled_from([*Action, "buy", "sell"]),
    st.lists(st.dictionaries(_keys, _values, max_size=6), min_size=1, max_size=3),
)
def test_the_hash_is_the_sha256_of_the_canonical_identity(
    strategy_id: str, symbol: str, event_ts: datetime, action: str, params: list[dict[str, Any]]
) -> None:
    """The hash writes its text field by field and remembers params' texts: each equals the
    canonical JSON of the identity mapping, including params seen before."""
    for p in (*params, *params):
        expected = _canonical_hash(strategy_id, symbol, event_ts, action, p)
        assert decision_hash(strategy_id, symbol, event_ts, action, p) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["macd_rsi", "bollinger_reversion", 'x\u00e9"\\']),
            st.sampled_from(["AAPL", "MSFT", "", "\u2603"]),
            st.one_of(
                st.datetimes(timezones=st.just(UTC)),
                st.datetimes(timezones=st.timezones()),
            ),
            st.sampled_from([*Action, "buy"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_remembered_field_texts_equal_the_canonical_identity(
    identities: list[tuple[str, str, datetime, str]],
) -> None:
    """Text fields and UTC event times are remembered between hashes; every hash, first or
    repeated, equals the one of the canonical JSON (fails if a remembered text is stale or a
    zone's time is remembered under an equal key with another instant)."""
    params = {"qty": "1"}
    for strategy_id, symbol, event_ts, action in (*identities, *reversed(identities)):
        expected = _canonical_hash(strategy_id, symbol, event_ts, action, params)
        assert decision_hash(strategy_id, symbol, event_ts, action, params) == expected


def test_times_that_differ_only_in_fold_hash_apart() -> None:
    """01:30 on the night New York leaves daylight time happens twice (fold 0 and 1): equal as
    datetimes of one zone, different instants, different hashes."""
    zone = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first == second
    hashes = [decision_hash("macd_rsi", "AAPL", t, "buy", {}) for t in (first, second, first)]
    assert hashes[0] != hashes[1]
    assert hashes[0] == hashes[2]
    assert hashes[1] == decision_hash("macd_rsi", "AAPL", second.astimezone(UTC), "buy", {})


def _canonical_hash(
    strategy_id: str, symbol: str, event_ts: datetime, action: str, params: dict[str, Any]
) -> str:
    """The oracle: sha256 of the canonical JSON of the identity mapping."""
    identity = {
        "strategy_id": strategy_id,
        "symbol": symbol,
        "event_ts": event_ts,
        "action": str(action),
        "params": params,
    }
    return hashlib.sha256(canonical_json(identity).encode("ascii")).hexdigest()
